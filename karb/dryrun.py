"""Dry-run venue: a ``VenueClient`` that fills orders from the live books, sending nothing.

The default mode runs the exact live path (strategy, risk, journal, executor, unwind) with
each venue replaced by a ``DryRunVenue``. An order is checked like the venue would (tick,
precision, minimum order, balance), then filled against the current top-N view of that venue's
book: an IOC/market order takes levels best-first up to its limit (or funds) and the rest is
cancelled; the taker fee from the market rules is charged in KRW on both sides, exactly.

The venue never sees a dry-run fill, so its next frames still show the liquidity we "took".
What each order took is remembered per price level for ``DRY_RUN_REFILL_S`` (like the sim's
``refill_s``) and subtracted from whatever book version comes next, so the same liquidity is
never filled twice. Its own balances start from ``load()`` and move with every fill. Resting
(GTC) orders are not simulated and are refused. The last ``ORDERS_KEPT`` orders can be looked
up (all are final at once). Thread-safe (one lock).
"""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from decimal import ROUND_DOWN, Decimal

from loguru import logger

from karb.clock import Clock
from karb.exchanges.errors import InsufficientFunds, InvalidOrder, OrderNotFound
from karb.model import (Balance, BookView, Fill, OrderRequest, OrderResult, OrderStatus,
                        OrderType, Side, TimeInForce, Venue, base_currency, quote_currency)
from karb.rules import RulesBook

ZERO = Decimal(0)
FEE_STEP = Decimal("0.00000001")
DRY_RUN_REFILL_S = 1.0  # how long liquidity taken by a dry-run fill stays missing from the book
ORDERS_KEPT = 10_000  # finished orders kept for look-ups by id


class DryRunVenue:
    dry_run = True

    def __init__(self, venue: Venue, board, rules: RulesBook, clock: Clock):
        self.venue = venue
        self.board = board
        self.rules = rules
        self.clock = clock
        self._lock = threading.Lock()
        self._balances: dict[str, Decimal] = {}
        self._orders: OrderedDict[str, OrderResult] = OrderedDict()  # by client id, oldest first
        # (market, side) -> (expires_ns, price, size) of what our fills took, oldest first
        self._taken: dict[tuple[str, Side], deque[tuple[int, float, float]]] = {}
        self._ids = itertools.count(1)

    def load(self, balances: dict[str, Balance]) -> None:
        """Start from these balances (``free`` only: nothing rests here)."""
        with self._lock:
            self._balances = {ccy: b.free for ccy, b in balances.items()}

    # --- orders --------------------------------------------------------------------------
    def place_order(self, request: OrderRequest, priority: bool = False) -> OrderResult:
        """Fill ``request`` from the current book, or raise what the venue would raise."""
        if request.order_type is OrderType.LIMIT and request.tif is TimeInForce.GTC:
            raise InvalidOrder(self.venue, "dry run fills IOC/FOK and market orders only", "dry_run_gtc", 400)
        rules = self.rules.get(self.venue, request.market)
        if request.order_type is OrderType.LIMIT:
            problem = rules.check_limit_order(request.price, request.volume)
        elif request.order_type is OrderType.MARKET_BUY:
            problem = None if request.funds and request.funds >= rules.min_total else \
                f"order value {request.funds} is below the minimum {rules.min_total}"
        else:
            problem = None if request.volume and request.volume == rules.floor_volume(request.volume) \
                else f"volume {request.volume} is not a positive multiple of {rules.volume_step}"
        if problem:
            raise InvalidOrder(self.venue, problem, "invalid_order", 400)
        view = self._view(request.market)
        with self._lock:
            if request.client_id in self._orders:
                raise InvalidOrder(self.venue, f"identifier {request.client_id} already used",
                                   "duplicate_identifier", 400)
            self._check_funds(request, rules.taker_fee)
            fills = self._match(request, view)
            result = self._book(request, fills, rules.taker_fee)
            self._orders[request.client_id] = result
            if len(self._orders) > ORDERS_KEPT:
                self._orders.popitem(last=False)
        logger.info("[DryRun] {} {} {} {} {}: filled {} for {} KRW, fee {} ({})", self.venue.value,
                    request.side.name.lower(), request.volume or request.funds, request.market,
                    f"limit {request.price}" if request.price else "market",
                    result.executed_volume, result.executed_funds, result.paid_fee, result.status.value)
        return result

    def get_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        with self._lock:
            if client_id is not None and client_id in self._orders:
                return self._orders[client_id]
            for order in self._orders.values():
                if order_id is not None and order.order_id == order_id:
                    return order
        raise OrderNotFound(self.venue, "order not found", "order_not_found", 404)

    def cancel_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        return self.get_order(order_id, client_id)  # nothing ever rests: already final

    def get_open_orders(self, market: str | None = None) -> list[OrderResult]:
        return []

    def get_balances(self) -> dict[str, Balance]:
        with self._lock:
            return {ccy: Balance(ccy, amount) for ccy, amount in self._balances.items()}

    def _view(self, market: str) -> BookView:
        """The book an order fills against (a backtest's model takes competitors' share off)."""
        return self.board.get(self.venue, market).view

    # --- public data from the books -------------------------------------------------------
    def get_markets(self) -> list[str]:
        return list(self.board.markets)

    def get_orderbook(self, market: str) -> BookView:
        return self.board.get(self.venue, market).view

    def get_ticker(self, markets: list[str]) -> dict[str, Decimal]:
        out = {}
        for market in markets:
            view = self.board.get(self.venue, market).view
            if view.best_bid is not None and view.best_ask is not None:
                out[market] = Decimal(repr((view.best_bid + view.best_ask) / 2))
        return out

    def get_market_info(self, markets: list[str]) -> list:
        return []

    def close(self) -> None:
        pass

    # --- internals (caller holds self._lock) -------------------------------------------------
    def _check_funds(self, request: OrderRequest, fee_rate: Decimal) -> None:
        coin, krw = base_currency(request.market), quote_currency(request.market)
        if request.side is Side.BUY:
            need = request.funds if request.order_type is OrderType.MARKET_BUY \
                else request.price * request.volume
            need, have, ccy = need * (1 + fee_rate), self._balances.get(krw, ZERO), krw
        else:
            need, have, ccy = request.volume, self._balances.get(coin, ZERO), coin
        if need > have:
            raise InsufficientFunds(self.venue, f"{ccy} {have} is less than {need}",
                                    "insufficient_funds", 400)

    def _match(self, request: OrderRequest, view: BookView) -> list[Fill]:
        buying = request.side is Side.BUY
        levels = view.asks if buying else view.bids
        if not view.valid:
            levels = ()
        now_ns = self.clock.monotonic_ns()
        consumed = self._taken.setdefault((request.market, request.side), deque())
        while consumed and consumed[0][0] <= now_ns:
            consumed.popleft()
        taken: dict[float, float] = {}
        for _, price_f, size_f in consumed:
            taken[price_f] = taken.get(price_f, 0.0) + size_f
        expires_ns = now_ns + int(DRY_RUN_REFILL_S * 1e9)
        limit = request.price
        left_volume = request.volume
        left_funds = request.funds if request.order_type is OrderType.MARKET_BUY else None
        step = self.rules.get(self.venue, request.market).volume_step
        fills: list[Fill] = []
        for price_f, size_f in levels:
            price = Decimal(repr(price_f))
            if limit is not None and (price > limit if buying else price < limit):
                break
            size = Decimal(repr(max(size_f - taken.get(price_f, 0.0), 0.0)))
            if left_funds is not None:
                size = min(size, (left_funds / price).quantize(step, rounding=ROUND_DOWN))
            else:
                size = min(size, left_volume)
            size = size.quantize(step, rounding=ROUND_DOWN)
            if size <= 0:
                if left_funds is not None and left_funds < price * step:
                    break
                continue
            fills.append(Fill(price, size, price * size))
            consumed.append((expires_ns, price_f, float(size)))
            if left_funds is not None:
                left_funds -= price * size
            else:
                left_volume -= size
                if left_volume <= 0:
                    break
        return fills

    def _book(self, request: OrderRequest, fills: list[Fill], fee_rate: Decimal) -> OrderResult:
        volume = sum((f.volume for f in fills), ZERO)
        funds = sum((f.funds for f in fills), ZERO)
        fee = (funds * fee_rate).quantize(FEE_STEP)
        coin, krw = base_currency(request.market), quote_currency(request.market)
        sign = 1 if request.side is Side.BUY else -1
        self._balances[coin] = self._balances.get(coin, ZERO) + sign * volume
        self._balances[krw] = self._balances.get(krw, ZERO) - sign * funds - fee
        complete = volume == request.volume if request.volume is not None else volume > 0
        status = OrderStatus.DONE if complete else OrderStatus.CANCELLED
        return OrderResult(
            self.venue, request.market, f"dry-{self.venue.value}-{next(self._ids)}",
            request.client_id, request.side, request.order_type, status, price=request.price,
            volume=request.volume, executed_volume=volume, executed_funds=funds, paid_fee=fee,
            remaining_volume=(request.volume - volume) if request.volume is not None else ZERO,
            fills=tuple(fills), created_at=str(self.clock.wall_ns()))
