"""One simulated venue's matching engine: accounts, orders, fills against the published book.

Orders match level by level against the book the venue last published (minus what our own
fills and competitors took since), so an arbitrage leg sees the same prices its feed showed.
A taker fill tells the generator (``take``) so the liquidity is missing from later books too.
Resting limit orders fill as makers when a later book crosses them (``on_book``).

Venue-neutral: the REST layers translate requests into ``place`` calls and ``Reject`` kinds
into the venue's error bodies; ``partial_is_done`` selects Bithumb's final state for an order
whose remainder is cancelled after a partial fill (``done``) versus Upbit's (``cancel``).
Orders match at once, but reads show an order as just accepted (state ``wait``, nothing
executed) until ``fill_visible_ms`` after placement, as the venues' answers do
(``SimOrder.seen_at``); the REST layers render that view.

Threads: REST handler threads call ``place`` / ``cancel`` / lookups; the market thread calls
``on_book``. All state is guarded by ``self._lock``; the simulated order latency is waited out
*before* taking it.

Listeners (``add_listener``; the private WebSocket) are called under the lock, in the order
things happen: ``("order", access_key, (order, trade or None))`` when an order is registered,
on each execution and when it ends; ``("asset", access_key, {currency: (free, locked)})`` after
each change of an account. They must only queue (never block, never call back in).
"""
from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
import uuid as uuidlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal
from typing import Callable

from karb.model import Balance, Side, Venue, base_currency
from karb.rules import MarketRules
from karb.sim.config import SimVenueConfig
from karb.sim.faults import VenueFaults
from karb.sim.grid import SCALE, from_decimal, to_decimal
from karb.sim.orders import (
    MONEY, ZERO, Account, Reject, RejectKind, SimOrder, SimTrade,
)

KST = timezone(timedelta(hours=9))
MAX_TOTAL_KRW = Decimal(1_000_000_000)  # Upbit's documented per-order maximum (over_krw_funds_*)
_SAT = Decimal("0.00000001")
TakeCallback = Callable[[Venue, str, str, int, int], None]


def now_kst() -> str:
    return datetime.now(KST).isoformat(timespec="seconds")


@dataclass(frozen=True)
class OrderParams:
    """A parsed order request. ``price`` is the KRW amount for ``price``/``best`` buys."""

    market: str
    side: Side
    ord_type: str
    price: Decimal | None = None
    volume: Decimal | None = None
    tif: str | None = None
    identifier: str | None = None


class SimExchange:
    """Accounts and matching for one venue (see the module docstring for threading)."""

    def __init__(self, venue: Venue, rules: dict[str, MarketRules], config: SimVenueConfig,
                 faults: VenueFaults, take: TakeCallback | None = None, seed: int = 0,
                 stop: threading.Event | None = None):
        self.venue = venue
        self.rules = rules
        self.config = config
        self.faults = faults
        self._take = take or (lambda *args: None)
        self._rng = random.Random(f"{seed}:exchange:{venue.value}")
        self._stop = stop or threading.Event()
        self._lock = threading.RLock()
        self._accounts: dict[str, Account] = {}
        self._orders: dict[str, SimOrder] = {}
        self._by_identifier: dict[tuple[str, str], SimOrder] = {}
        self._burned_ids: set[tuple[str, str]] = set()
        self._open: dict[str, list[SimOrder]] = {}  # market -> resting orders
        self._published: dict[str, tuple[tuple, tuple]] = {}
        self._published_ts: dict[str, int] = {}
        self._live: dict[str, tuple[list[list[int]], list[list[int]]]] = {}
        self._ids = itertools.count(3152350309)
        self._attempts: Counter[tuple[str, str]] = Counter()  # (key, identifier) -> placements tried
        self._listeners: list[Callable[[str, str, object], None]] = []
        self.wallet = None  # the cluster's SimWallet (karb.sim.wallet), shared by both venues
        # market -> the venue's own flags: "WARNING" (투자유의) and caution / alert kinds
        self.market_flags: dict[str, frozenset[str]] = {}

    def set_market_flags(self, market: str, flags: set[str] | frozenset[str]) -> None:
        """Flag ``market`` as the venue would (served by ``/v1/market/all`` with details)."""
        self.market_flags = {**self.market_flags, market: frozenset(flags)}

    def add_listener(self, listener: Callable[[str, str, object], None]) -> None:
        """Be told of every order event and balance change (module docstring)."""
        self._listeners.append(listener)

    def _emit_order(self, order: SimOrder, trade: SimTrade | None = None) -> None:
        for listener in self._listeners:
            listener("order", order.access_key, (order, trade))

    def _emit_assets(self, account: Account, order: SimOrder) -> None:
        if self._listeners:
            changed = {c: (account.free(c), account.locked(c)) for c in ("KRW", base_currency(order.market))}
            for listener in self._listeners:
                listener("asset", account.access_key, changed)

    # --- accounts ------------------------------------------------------------------------
    def add_account(self, access_key: str, secret_key: str, balances: dict[str, Decimal]) -> Account:
        with self._lock:
            account = Account(access_key, secret_key, balances)
            self._accounts[access_key] = account
            return account

    def account(self, access_key: str) -> Account | None:
        return self._accounts.get(access_key)

    def account_keys(self) -> list[str]:
        with self._lock:
            return list(self._accounts)

    def balances(self, access_key: str) -> dict[str, Balance]:
        with self._lock:
            account = self._accounts[access_key]
            return {c: Balance(c, account.free(c), account.locked(c)) for c in account.currencies()}

    def orders(self, access_key: str) -> list[SimOrder]:
        """Every order of the account, slow-to-register ones included (the venue's truth)."""
        with self._lock:
            return [_copy(o) for o in self._orders.values() if o.access_key == access_key]

    def attempts(self, access_key: str) -> dict[str, int]:
        """Placement requests per client identifier, refused duplicates included."""
        with self._lock:
            return {ident: n for (key, ident), n in self._attempts.items() if key == access_key}

    def move_funds(self, access_key: str, currency: str, amount: Decimal) -> None:
        """Credit (``amount`` > 0) or debit (< 0) a free balance: a deposit arriving or a
        withdrawal leaving (``karb.sim.wallet``). A debit beyond the free balance raises
        ``Reject(INSUFFICIENT)`` and changes nothing."""
        with self._lock:
            account = self._accounts[access_key]
            if amount < 0 and -amount > account.free(currency):
                raise Reject(RejectKind.INSUFFICIENT, f"free {currency} {account.free(currency)} is "
                             f"less than {-amount}")
            if amount < 0:
                account.lock(currency, -amount)
                account.pay_locked(currency, -amount)
            else:
                account.receive(currency, amount)
            for listener in self._listeners:
                listener("asset", access_key, {currency: (account.free(currency), account.locked(currency))})

    # --- books -----------------------------------------------------------------------------
    def on_book(self, market: str, bids: tuple, asks: tuple, ts_ms: int = 0) -> None:
        """Market thread: the venue just published this book; fill resting orders it crosses."""
        with self._lock:
            self._published[market] = (bids, asks)
            self._published_ts[market] = ts_ms
            self._live[market] = ([list(lvl) for lvl in bids], [list(lvl) for lvl in asks])
            if self._open.get(market):
                self._match_resting(market)

    def published_ints(self, market: str) -> tuple[tuple, tuple]:
        with self._lock:
            return self._published.get(market, ((), ()))

    def snapshot(self, market: str) -> tuple[tuple, tuple, int]:
        """(bids, asks, timestamp ms) in sats as last published; empty before the first book."""
        with self._lock:
            bids, asks = self._published.get(market, ((), ()))
            return bids, asks, self._published_ts.get(market, 0)

    def book(self, market: str) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """The book as last published: bids best-first, asks best-first, exact Decimals."""
        bids, asks = self.published_ints(market)
        return ([(to_decimal(p), to_decimal(s)) for p, s in bids],
                [(to_decimal(p), to_decimal(s)) for p, s in asks])

    # --- orders ----------------------------------------------------------------------------
    def place(self, access_key: str, params: OrderParams, partial_is_done: bool = False) -> SimOrder:
        """Validate, lock funds, match. Raises ``Reject``. Called from REST handler threads."""
        if params.identifier:
            with self._lock:
                self._attempts[(access_key, params.identifier)] += 1
        self._wait_latency()
        held_s = self.faults.take_order_delay()
        if held_s > 0:
            self._stop.wait(held_s)
        with self._lock:
            account = self._accounts[access_key]
            order = self._new_order(account, params)
            if self.faults.take_reject():
                raise Reject(RejectKind.REJECTED, "order rejected by the venue", params.side)
            self._lock_funds(account, order)
            now = time.monotonic()
            order.accepted_locked = order.locked
            order.fill_visible_at = now + self.config.fill_visible_ms / 1000.0
            order.not_ready_until = now + self.config.not_ready_ms / 1000.0
            hidden_s = self.faults.take_slow_registration()
            if hidden_s > 0:
                order.visible_at = now + hidden_s
            self._orders[order.uuid] = order
            if order.identifier:
                self._by_identifier[(access_key, order.identifier)] = order
            self._emit_order(order)
            self._emit_assets(account, order)
            self._execute(account, order, partial_is_done)
            return order

    def get(self, access_key: str, uuid: str | None = None, identifier: str | None = None) -> SimOrder:
        with self._lock:
            order = self._orders.get(uuid) if uuid else self._by_identifier.get((access_key, identifier or ""))
            if order is None or order.access_key != access_key or not _registered(order):
                raise Reject(RejectKind.NOT_FOUND, "주문을 찾지 못했습니다.")
            return order

    def cancel(self, access_key: str, uuid: str | None = None, identifier: str | None = None) -> SimOrder:
        """Cancel a resting order; returns a copy as it was *before* the cancel (state wait)."""
        with self._lock:
            order = self.get(access_key, uuid, identifier)
            if not order.is_open:
                raise Reject(RejectKind.NOT_CANCELLABLE, "이미 체결되었거나 취소된 주문입니다.")
            before = _copy(order.seen_at(time.monotonic()))
            order.fill_visible_at = 0.0  # a cancel shows what the order did at once
            self._finish(self._accounts[access_key], order, "cancel")
            return before

    def list_orders(self, access_key: str, market: str | None, states: set[str]) -> list[SimOrder]:
        """Orders by their current state: an order lists (or not) as resting at once, even while
        a read of it still shows it as just accepted (so a cancel sweep never hits a done order)."""
        with self._lock:
            return [o for o in self._orders.values()
                    if o.access_key == access_key and o.state in states and (market is None or o.market == market)
                    and _registered(o)]

    # --- internals (under the lock) ----------------------------------------------------------
    def _wait_latency(self) -> None:
        mean, jitter = self.config.latency_ms, self.config.latency_jitter_ms
        if mean <= 0 and jitter <= 0:
            return
        with self._lock:
            delay_ms = max(0.0, mean + self._rng.uniform(-jitter, jitter))
        self._stop.wait(delay_ms / 1000.0)

    def _new_order(self, account: Account, p: OrderParams) -> SimOrder:
        rules = self.rules.get(p.market)
        if rules is None:
            raise Reject(RejectKind.UNKNOWN_MARKET, f"다음 마켓에 없는 종목입니다: {p.market}", p.side)
        if p.identifier:
            key = (account.access_key, p.identifier)
            if key in self._burned_ids:
                raise Reject(RejectKind.DUPLICATE_ID, f"identifier {p.identifier} was already used", p.side)
            self._burned_ids.add(key)  # a failed request still burns it (Upbit)
        _check_shape(p)
        fee = max(rules.taker_fee, rules.maker_fee)
        if p.ord_type == "limit":
            assert p.price is not None and p.volume is not None
            if not rules.is_on_tick(p.price):
                raise Reject(RejectKind.INVALID_PRICE, f"price {p.price} is not on the {rules.tick_for(p.price)} tick", p.side)
            if p.volume != rules.floor_volume(p.volume):
                raise Reject(RejectKind.INVALID_VOLUME, f"volume {p.volume} has too many decimals", p.side)
            if MONEY.multiply(p.price, p.volume) < rules.min_total:
                raise Reject(RejectKind.UNDER_MIN, f"order value below {rules.min_total} KRW", p.side)
            if MONEY.multiply(p.price, p.volume) > MAX_TOTAL_KRW:
                raise Reject(RejectKind.OVER_MAX, f"최대 주문 가능 금액 {MAX_TOTAL_KRW} KRW 보다 작은 주문을 "
                             "입력해 주세요.", p.side)
            reason = rules.check_limit_order(p.price, p.volume)
            if reason:
                raise Reject(RejectKind.BAD_PARAMS, reason, p.side)
        elif p.side is Side.BUY:
            assert p.price is not None
            if p.price < rules.min_total:
                raise Reject(RejectKind.UNDER_MIN, f"order value below {rules.min_total} KRW", p.side)
        else:
            assert p.volume is not None
            if p.volume != rules.floor_volume(p.volume):
                raise Reject(RejectKind.INVALID_VOLUME, f"volume {p.volume} has too many decimals", p.side)
            bids = self._live.get(p.market, ([], []))[0]
            best = to_decimal(bids[0][0]) if bids else ZERO
            if MONEY.multiply(best, p.volume) < rules.min_total:
                raise Reject(RejectKind.UNDER_MIN, f"order value below {rules.min_total} KRW", p.side)
        uid = str(uuidlib.uuid4()) if self.venue is Venue.UPBIT else f"C0101{next(self._ids):015d}"
        return SimOrder(uid, account.access_key, p.market, p.side, p.ord_type, p.price, p.volume, p.tif,
                        p.identifier, now_kst(), fee_rate=fee, created_ns=time.time_ns())

    def _lock_funds(self, account: Account, order: SimOrder) -> None:
        if order.side is Side.BUY:
            base = (MONEY.multiply(order.price, order.volume) if order.ord_type == "limit" else order.price)
            fee = MONEY.multiply(base, order.fee_rate)
            need = MONEY.add(base, fee)
            if need > account.free("KRW"):
                raise Reject(RejectKind.INSUFFICIENT, "주문가능한 금액(KRW)이 부족합니다.", order.side)
            account.lock("KRW", need)
            order.locked, order.reserved_fee = need, fee
        else:
            coin = base_currency(order.market)
            if order.volume > account.free(coin):
                raise Reject(RejectKind.INSUFFICIENT, f"주문가능한 금액({coin})이 부족합니다.", order.side)
            account.lock(coin, order.volume)
            order.locked = order.volume

    def _execute(self, account: Account, order: SimOrder, partial_is_done: bool) -> None:
        bids, asks = self._live.get(order.market, ([], []))
        levels = asks if order.side is Side.BUY else bids
        if levels and self.config.competition > 0 and self._rng.random() < self.config.competition:
            gone = levels.pop(0)  # someone else took the displayed top level first
            self._take(self.venue, order.market, "ask" if order.side is Side.BUY else "bid", gone[0], gone[1])
        limit = from_decimal(order.price) if order.ord_type == "limit" else None
        if order.tif == "post_only":
            crosses = levels and (levels[0][0] <= limit if order.side is Side.BUY else levels[0][0] >= limit)
            if crosses:
                self._finish(account, order, "cancel")
            else:
                self._open.setdefault(order.market, []).append(order)
            return
        max_sats = from_decimal(order.volume) if order.volume is not None else None
        immediate = order.tif in ("ioc", "fok") or order.ord_type != "limit"
        if order.tif == "ioc" and max_sats is not None:
            fraction = self.faults.take_partial_ioc()
            if fraction is not None:
                max_sats = int(max_sats * Decimal(str(fraction)))
        funds = order.price if order.ord_type in ("price", "best") and order.side is Side.BUY else None
        fills = _sweep(levels, order.side, limit, max_sats, funds)
        if order.tif == "fok" and not _complete(order, fills):
            fills = []
        for price, size in fills:
            self._consume(levels, order, price, size)
            self._fill(account, order, to_decimal(price), to_decimal(size), maker=False)
        if not immediate and not _complete(order, fills):
            self._open.setdefault(order.market, []).append(order)
            return
        filled = order.executed_volume > 0
        if _complete(order, fills) and not (order.ord_type in ("price", "best") and order.side is Side.BUY
                                            and order.executed_funds < order.price):
            state = "done"
        elif partial_is_done and filled:
            state = "done"
        else:
            state = "cancel"
        self._finish(account, order, state)

    def _consume(self, levels: list[list[int]], order: SimOrder, price: int, size: int) -> None:
        for lvl in levels:
            if lvl[0] == price:
                lvl[1] -= size
                break
        levels[:] = [lvl for lvl in levels if lvl[1] > 0]
        self._take(self.venue, order.market, "ask" if order.side is Side.BUY else "bid", price, size)

    def _fill(self, account: Account, order: SimOrder, price: Decimal, volume: Decimal, maker: bool) -> None:
        rules = self.rules[order.market]
        funds = MONEY.multiply(price, volume)
        fee = MONEY.multiply(funds, rules.maker_fee if maker else rules.taker_fee)
        coin = base_currency(order.market)
        if order.side is Side.BUY:
            cost = MONEY.add(funds, fee)
            account.pay_locked("KRW", cost)
            account.receive(coin, volume)
            order.locked = MONEY.subtract(order.locked, cost)
        else:
            account.pay_locked(coin, volume)
            account.receive("KRW", MONEY.subtract(funds, fee))
            order.locked = MONEY.subtract(order.locked, volume)
        order.executed_volume = MONEY.add(order.executed_volume, volume)
        order.executed_funds = MONEY.add(order.executed_funds, funds)
        order.paid_fee = MONEY.add(order.paid_fee, fee)
        order.trades.append(SimTrade(price, volume, funds, fee, maker, now_kst(), str(uuidlib.uuid4())))
        self._emit_order(order, order.trades[-1])
        self._emit_assets(account, order)

    def _finish(self, account: Account, order: SimOrder, state: str) -> None:
        if order.locked:
            currency = "KRW" if order.side is Side.BUY else base_currency(order.market)
            account.unlock(currency, order.locked)
            order.locked = ZERO
        order.state = state
        resting = self._open.get(order.market)
        if resting and order in resting:
            resting.remove(order)
        self._emit_order(order)
        self._emit_assets(account, order)

    def _match_resting(self, market: str) -> None:
        bids, asks = self._live[market]
        for order in list(self._open.get(market, ())):
            levels = asks if order.side is Side.BUY else bids
            limit = from_decimal(order.price)
            remaining = from_decimal(order.volume - order.executed_volume)
            account = self._accounts[order.access_key]
            for price, size in _sweep(levels, order.side, limit, remaining, None):
                self._consume(levels, order, price, size)
                self._fill(account, order, order.price, to_decimal(size), maker=True)
            if order.executed_volume == order.volume:
                self._finish(account, order, "done")


def _check_shape(p: OrderParams) -> None:
    """Upbit/Bithumb order-type rules: which of price/volume/time_in_force each type takes."""
    bad = RejectKind.BAD_ORDER
    if p.ord_type == "limit":
        if p.price is None or p.volume is None:
            raise Reject(bad, "limit orders need price and volume", p.side)
        if p.tif not in (None, "ioc", "fok", "post_only"):
            raise Reject(RejectKind.BAD_PARAMS, f"time_in_force {p.tif} is not supported", p.side)
    elif p.ord_type in ("price", "market", "best"):
        if p.ord_type == "price" and (p.side is not Side.BUY or p.price is None or p.volume is not None):
            raise Reject(bad, "market buy (price) takes price (KRW total) and no volume", p.side)
        if p.ord_type == "market" and (p.side is not Side.SELL or p.volume is None or p.price is not None):
            raise Reject(bad, "market sell (market) takes volume and no price", p.side)
        if p.ord_type == "best":
            if p.tif not in ("ioc", "fok"):
                raise Reject(bad, "best orders need time_in_force ioc or fok", p.side)
            if (p.side is Side.BUY) != (p.price is not None) or (p.side is Side.SELL) != (p.volume is not None):
                raise Reject(bad, "best buy takes price (KRW total), best sell takes volume", p.side)
        elif p.tif is not None:
            raise Reject(bad, "time_in_force is only for limit and best orders", p.side)
    else:
        raise Reject(RejectKind.BAD_PARAMS, f"unknown order type {p.ord_type}", p.side)


def _sweep(levels: list[list[int]], side: Side, limit: int | None, max_sats: int | None,
           funds: Decimal | None) -> list[tuple[int, int]]:
    """Fills (price, size in sats) walking ``levels`` best first, without changing them."""
    fills: list[tuple[int, int]] = []
    remaining, funds_left = max_sats, funds
    for price, size in levels:
        if limit is not None and (price > limit if side is Side.BUY else price < limit):
            break
        take = size if remaining is None else min(size, remaining)
        if funds_left is not None:
            affordable = int((MONEY.divide(funds_left, to_decimal(price))).quantize(_SAT, ROUND_DOWN) * SCALE)
            take = min(take, affordable)
        if take <= 0:
            break
        fills.append((price, take))
        if remaining is not None:
            remaining -= take
            if remaining <= 0:
                break
        if funds_left is not None:
            funds_left = MONEY.subtract(funds_left, MONEY.multiply(to_decimal(price), to_decimal(take)))
    return fills


def _complete(order: SimOrder, fills: list[tuple[int, int]]) -> bool:
    if order.volume is None:  # funds-based buy: complete when the book did not run out first
        return bool(fills)
    return sum(size for _, size in fills) == from_decimal(order.volume)


def _registered(order: SimOrder) -> bool:
    return not order.visible_at or time.monotonic() >= order.visible_at


def _copy(order: SimOrder) -> SimOrder:
    return replace(order, trades=list(order.trades))
