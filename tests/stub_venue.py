"""A hand-written in-process venue for executor tests: scripted outcomes, exact bookkeeping.

By default a limit IOC fills completely at its limit price, a market buy spends its funds at
``market_price``; the fee is ``fee_rate`` of the funds. ``script`` holds what the next
placements do instead (one entry per placement, in order):

``"reject"`` InsufficientFunds, nothing placed; ``"invalid"`` InvalidOrder;
``("partial", f)`` fills fraction ``f`` then cancels the rest;
``"timeout"`` places (fills) but raises OrderStateUnknown; ``"5xx"`` / ``"boom"`` place
(fill) but raise UnknownVenueError(500) / RuntimeError; ``"4xx"`` raises
UnknownVenueError(418) without placing; ``"lost"`` raises
OrderStateUnknown without placing; ``"ack"`` answers OPEN with nothing filled and fills when
first looked at; ``"rest"`` leaves the order open until cancelled; ``"none"`` fills nothing.

While ``down`` is set, ``get_order`` and ``cancel_order`` raise ``VenueUnavailable`` (a venue
whose look-ups fail for a while).
"""
from __future__ import annotations

import itertools
import threading
from decimal import ROUND_DOWN, Decimal

from karb.exchanges.errors import (InsufficientFunds, InvalidOrder, OrderNotFound,
                                   OrderStateUnknown, UnknownVenueError, VenueUnavailable)
from karb.model import (Balance, Fill, OrderRequest, OrderResult, OrderStatus, OrderType,
                        Venue)


class StubVenue:
    def __init__(self, venue: Venue, fee_rate: str = "0.0005", market_price: str = "140000000",
                 barrier: threading.Barrier | None = None):
        self.venue = venue
        self.fee_rate = Decimal(fee_rate)
        self.market_price = Decimal(market_price)
        self.script: list = []
        self.barrier = barrier  # both legs must be inside place_order at the same time
        self.placements: list[OrderRequest] = []  # every place_order call, placed or not
        self.threads: list[str] = []
        self.priorities: list[bool] = []
        self.orders: dict[str, OrderResult] = {}  # by client id
        self._pending: dict[str, OrderResult] = {}  # "ack" orders: final answer on first look
        self.cancelled: list[str] = []
        self.down = threading.Event()  # set: look-ups and cancels fail
        self.balances = {"KRW": Balance("KRW", Decimal(0))}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # --- orders --------------------------------------------------------------------------
    def place_order(self, request: OrderRequest, priority: bool = False) -> OrderResult:
        with self._lock:
            self.placements.append(request)
            self.threads.append(threading.current_thread().name)
            self.priorities.append(priority)
            action = self.script.pop(0) if self.script else "fill"
        if self.barrier is not None:
            self.barrier.wait(5.0)
        if action == "reject":
            raise InsufficientFunds(self.venue, "insufficient funds", "insufficient_funds_bid", 400)
        if action == "invalid":
            raise InvalidOrder(self.venue, "bad price", "invalid_price", 400)
        if action == "lost":
            raise OrderStateUnknown(self.venue, "read timeout", request.client_id)
        if action == "4xx":
            raise UnknownVenueError(self.venue, "teapot", "teapot", 418)
        if request.client_id in self.orders:
            raise InvalidOrder(self.venue, "identifier already used", "duplicate_identifier", 400)
        fraction = Decimal(1)
        if isinstance(action, tuple) and action[0] == "partial":
            fraction = Decimal(str(action[1]))
        elif action in ("none", "rest", "ack"):
            fraction = Decimal(0)
        final = self._result(request, fraction, OrderStatus.OPEN if action in ("rest", "ack") else
                             (OrderStatus.DONE if fraction == 1 else OrderStatus.CANCELLED))
        with self._lock:
            self.orders[request.client_id] = final
        if action == "ack":
            with self._lock:
                self._pending[request.client_id] = self._result(request, Decimal(1), OrderStatus.DONE)
            return final
        if action == "timeout":
            raise OrderStateUnknown(self.venue, "read timeout", request.client_id)
        if action == "5xx":
            raise UnknownVenueError(self.venue, "internal error", "server_error", 500)
        if action == "boom":
            raise RuntimeError("connection reset after the body was sent")
        return final

    def get_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        if self.down.is_set():
            raise VenueUnavailable(self.venue, "service unavailable", "unavailable", 503)
        with self._lock:
            found = self._find(order_id, client_id)
            if found is None:
                raise OrderNotFound(self.venue, "order not found", "order_not_found", 404)
            pending = self._pending.pop(found.client_id, None)
            if pending is not None:
                self.orders[found.client_id] = pending
                return pending
            return found

    def cancel_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        if self.down.is_set():
            raise VenueUnavailable(self.venue, "service unavailable", "unavailable", 503)
        with self._lock:
            found = self._find(order_id, client_id)
            if found is None:
                raise OrderNotFound(self.venue, "order not found", "order_not_found", 404)
            self.cancelled.append(found.client_id)
            if found.status is OrderStatus.OPEN:
                found = OrderResult(**{**_fields(found), "status": OrderStatus.CANCELLED})
                self.orders[found.client_id] = found
            return found

    def get_open_orders(self, market: str | None = None) -> list[OrderResult]:
        with self._lock:
            return [o for o in self.orders.values()
                    if o.status is OrderStatus.OPEN and (market is None or o.market == market)]

    def placed_count(self, client_id: str) -> int:
        """How many orders the venue holds under ``client_id`` (never more than one)."""
        return sum(1 for r in self.placements if r.client_id == client_id
                   and r.client_id in self.orders)

    # --- the rest of VenueClient ---------------------------------------------------------
    def get_balances(self) -> dict[str, Balance]:
        return dict(self.balances)

    def get_markets(self):
        return ["KRW-BTC"]

    def get_ticker(self, markets):
        return {m: self.market_price for m in markets}

    def get_orderbook(self, market):
        raise NotImplementedError("not used by the executor")

    def get_market_info(self, markets):
        return []

    def close(self) -> None:
        pass

    # --- internals -----------------------------------------------------------------------
    def _find(self, order_id, client_id):
        if client_id is not None:
            return self.orders.get(client_id)
        return next((o for o in self.orders.values() if o.order_id == order_id), None)

    def _result(self, request: OrderRequest, fraction: Decimal, status: OrderStatus) -> OrderResult:
        if request.order_type is OrderType.MARKET_BUY:
            funds = request.funds * fraction
            volume = (funds / self.market_price).quantize(Decimal("1e-8"), rounding=ROUND_DOWN)
            price = self.market_price
        else:
            price = request.price if request.order_type is OrderType.LIMIT else self.market_price
            volume = (request.volume * fraction).quantize(Decimal("1e-8"), rounding=ROUND_DOWN)
            funds = price * volume
        fee = (funds * self.fee_rate).quantize(Decimal("0.00000001"))
        fills = (Fill(price, volume, funds),) if volume else ()
        return OrderResult(self.venue, request.market, f"{self.venue.value[:1].upper()}-{next(self._ids)}",
                           request.client_id, request.side, request.order_type, status,
                           price=request.price, volume=request.volume, executed_volume=volume,
                           executed_funds=funds, paid_fee=fee,
                           remaining_volume=(request.volume or volume) - volume, fills=fills)


def _fields(result: OrderResult) -> dict:
    return {name: getattr(result, name) for name in result.__slots__}
