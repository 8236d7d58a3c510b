"""The backtest's execution model: a ``VenueClient`` on simulated time.

``ModelVenue`` is a ``DryRunVenue`` (same checks as the venue: tick, precision, minimum
order, balance; same fills: IOC/market level by level up to the limit, taker fee from the
market rules, exact) with two differences:

* an order reaches the venue after a latency drawn by the ``Wire``; the wire first applies
  every book event up to the arrival time, so the order fills against the book *at arrival*;
* competitors got there first: ``competitor_share`` of each of the top ``competitor_levels``
  levels of the side we take is gone.

Like the live venues, placement answers with an acknowledgement only (Upbit: ``state:
wait``, ``trades_count: 0``): the fill is seen on the next ``get_order``, after the placer's
poll interval (simulated time too); a look-up by order id goes through an index (the dry run's
scan of its last ``ORDERS_KEPT`` orders cost a week-long backtest more than the rest of a
trade). The two legs of a trade leave together: the
``InlineRunner`` asks the wire to schedule both arrivals first and ``prefill``s each at its
arrival, in arrival order, before the placer runs them.
"""
from __future__ import annotations

import dataclasses
import random
from decimal import Decimal

from karb.clock import NS_PER_MS, ManualClock
from karb.dryrun import ORDERS_KEPT, DryRunVenue
from karb.exchanges.errors import VenueError
from karb.model import BookView, OrderRequest, OrderResult, OrderStatus, Venue
from karb.rules import RulesBook

ZERO_FILL = {"executed_volume": Decimal(0), "executed_funds": Decimal(0), "paid_fee": Decimal(0), "fills": ()}


class Wire:
    """Latency draws, and moving the book stream to an order's arrival (``advance_to``)."""

    def __init__(self, latency_ms: dict[Venue, tuple[float, float]], seed: int, advance_to,
                 clock: ManualClock, max_samples: int):
        self._latency = latency_ms
        self._rng = random.Random(f"{seed}:latency")
        self._advance_to = advance_to
        self.clock = clock
        self.samples: list[float] = []
        self._max_samples = max_samples

    def draw_ns(self, venue: Venue) -> int:
        low, high = self._latency[venue]
        ms = low if high <= low else self._rng.uniform(low, high)
        if len(self.samples) < self._max_samples:
            self.samples.append(round(ms, 3))
        return int(ms * NS_PER_MS)

    def arrive(self, venue: Venue, at_ns: int | None = None) -> None:
        """Apply the book stream up to the order's arrival (now plus a draw if not given)."""
        now = self.clock.monotonic_ns()
        self._advance_to(max(now, at_ns if at_ns is not None else now + self.draw_ns(venue)))


class ModelVenue(DryRunVenue):
    def __init__(self, venue: Venue, board, rules: RulesBook, clock: ManualClock, wire: Wire,
                 competitor_share: float, competitor_levels: int):
        super().__init__(venue, board, rules, clock)
        self.wire = wire
        self._keep = 1.0 - competitor_share
        self._levels = competitor_levels
        self._prefilled: dict[str, OrderResult | VenueError] = {}
        self._client_ids: dict[str, str] = {}  # order id -> client id, oldest first

    def prefill(self, request: OrderRequest, at_ns: int) -> None:
        """Fill ``request`` at its arrival ``at_ns`` now; ``place_order`` answers for it later."""
        self.wire.arrive(self.venue, at_ns)
        self._prefilled[request.client_id] = self._fill(request)

    def place_order(self, request: OrderRequest, priority: bool = False) -> OrderResult:
        outcome = self._prefilled.pop(request.client_id, None)
        if outcome is None:
            self.wire.arrive(self.venue)
            outcome = self._fill(request)
        if isinstance(outcome, VenueError):
            raise outcome
        return dataclasses.replace(outcome, status=OrderStatus.OPEN, remaining_volume=request.volume,
                                   **ZERO_FILL)

    def get_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        if client_id is None and order_id is not None:
            client_id = self._client_ids.get(order_id)
        return DryRunVenue.get_order(self, order_id, client_id)

    def _fill(self, request: OrderRequest) -> OrderResult | VenueError:
        try:
            result = DryRunVenue.place_order(self, request)
        except VenueError as exc:
            return exc
        ids = self._client_ids
        ids[result.order_id] = request.client_id
        if len(ids) > ORDERS_KEPT:
            del ids[next(iter(ids))]
        return result

    def _view(self, market: str) -> BookView:
        view = self.board.get(self.venue, market).view
        keep, n = self._keep, self._levels
        if keep >= 1.0 or not view.valid:
            return view
        bids = tuple((p, s * keep) for p, s in view.bids[:n]) + view.bids[n:]
        asks = tuple((p, s * keep) for p, s in view.asks[:n]) + view.asks[n:]
        return view._replace(bids=bids, asks=asks)

    def move_funds(self, currency: str, amount: Decimal) -> bool:
        """A coin transfer's debit or credit (``karb.backtest.wallet``); False, and nothing
        moved, if the balance would go below zero."""
        with self._lock:
            balance = self._balances.get(currency, Decimal(0)) + amount
            if balance < 0:
                return False
            self._balances[currency] = balance
            return True
