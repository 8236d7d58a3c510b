"""Bithumb legacy REST client (``venues.bithumb.api: legacy``): HMAC ``Api-Sign``, form POSTs.

The legacy API lacks two things the engine relies on, so this client emulates them:

* **No client order id.** The client keeps ``client_id -> order_id`` for every acknowledged
  placement (and ``order_id -> market, side, type`` so it can query and cancel, which need the
  currencies). A placement that timed out (``OrderStateUnknown``) is remembered with its send
  time; ``get_order(client_id=...)`` then searches the market's open orders (``/info/orders``
  from 5 s before the send) for one with the same side, price and units. One match is adopted
  and returned. No match raises ``OrderStateUnknown`` again: the order was either never placed
  or filled completely at once, and open orders cannot tell which — reconcile by balances.
  Several matches are ambiguous and also raise ``OrderStateUnknown``. The maps are bounded
  (``MAX_REMEMBERED`` each, oldest dropped). They live in memory, so the engine persists them:
  ``on_order_id(client_id, order_id)`` is called as soon as the venue answers a placement (the
  engine commits it to the journal), and after a restart ``seed_order`` puts back what the
  journal knows (the venue id, or the request and its send time for a lookup by match).
* **No IOC.** An IOC limit is sent as a plain limit, then the remainder is cancelled at once
  (priority) and the order read back; the result is that final state. Between the two calls
  the order rests on the book for one round trip. If the cancel or the read-back fails, the
  client raises ``OrderStateUnknown(client_id)`` (the order may still rest: look it up and
  cancel). FOK cannot be emulated and is refused before sending.

Legacy market buys take ``units`` (coin), not KRW: a ``MARKET_BUY`` request must carry
``volume``. Thread-safety: the maps are guarded by one lock, never held during I/O.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Callable
from urllib.parse import urlencode

from karb.config import VenueConfig
from karb.exchanges.bithumb import constants as C
from karb.exchanges.bithumb import parse as P
from karb.exchanges.bithumb.auth import BithumbLegacyAuth
from karb.exchanges.errors import (
    AuthError, InvalidOrder, OrderNotFound, OrderStateUnknown, VenueError,
    parse_body,
)
from karb.exchanges.http import RestTransport
from karb.exchanges.ratelimit import Group, RateLimiter
from karb.exchanges.upbit.parse import fmt_decimal
from karb.model import (
    Balance, BookView, OrderRequest, OrderResult, OrderType, Side, TimeInForce, Venue, base_currency,
    quote_currency,
)
from karb.rules import MarketInfo, to_legacy_symbol
from karb.secrets import Credentials

LOOKUP_SLACK_S = 5.0  # search open orders from this long before a timed-out send
MAX_REMEMBERED = 10_000  # entries per map; far more than the orders in flight at once


@dataclass(frozen=True, slots=True)
class _Known:
    market: str
    side: Side
    order_type: OrderType
    client_id: str | None


class BithumbLegacyClient:
    """Bithumb over the legacy REST API. ``markets`` are searched when no market is given."""

    venue = Venue.BITHUMB

    def __init__(self, config: VenueConfig, credentials: Credentials | None = None, *,
                 markets: list[str] = (), limiter: RateLimiter | None = None,
                 sleep: Callable[[float], None] | None = None,
                 nonce_factory: Callable[[], str] | None = None,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self._markets = list(markets)
        self._clock = clock
        self.limiter = limiter or RateLimiter(config.rate_limits)
        self._http = RestTransport(self.venue, config, self.limiter, P.legacy_error, sleep)
        self._auth = (BithumbLegacyAuth(credentials.access_key, credentials.secret_key,
                                        nonce_factory) if credentials else None)
        self._lock = threading.Lock()
        self._known: OrderedDict[str, _Known] = OrderedDict()  # order_id -> to query / cancel it
        self._by_client: OrderedDict[str, str] = OrderedDict()  # client_id -> order_id (acknowledged)
        # client_id -> (request, sent_at)
        self._timed_out: OrderedDict[str, tuple[OrderRequest, float]] = OrderedDict()
        self.on_order_id: Callable[[str, str], None] | None = None

    # --- plumbing -------------------------------------------------------------------------
    def _get(self, path: str, query=()) -> Any:
        return self._data(self._http.request("GET", path, group=Group.PUBLIC, query=query))

    def _data(self, body: dict) -> Any:
        return self._parsed(lambda b: b["data"], body)

    def _post(self, endpoint: str, params: list[tuple[str, str]], *, group: Group = Group.PRIVATE,
              priority: bool = False, idempotent: bool = True, client_id: str | None = None) -> dict:
        if self._auth is None:
            raise AuthError(self.venue, "no API keys loaded: this bithumb client is public-only",
                            "no_credentials")
        form = urlencode([("endpoint", endpoint), *params])
        return self._http.request("POST", endpoint, group=group, form=form, auth=self._auth,
                                  priority=priority, idempotent=idempotent, client_id=client_id)

    def _parsed(self, fn, *args) -> Any:
        return parse_body(self.venue, fn, *args)

    @staticmethod
    def _currencies(market: str) -> list[tuple[str, str]]:
        return [("order_currency", base_currency(market)), ("payment_currency", "KRW")]

    # --- public ---------------------------------------------------------------------------
    def get_markets(self) -> list[str]:
        return sorted(self._parsed(P.parse_legacy_ticker, self._get(C.LEGACY_TICKER_ALL)))

    def get_ticker(self, markets: list[str]):
        prices = self._parsed(P.parse_legacy_ticker, self._get(C.LEGACY_TICKER_ALL))
        return {m: prices[m] for m in markets if m in prices}

    def get_orderbook(self, market: str) -> BookView:
        path = C.LEGACY_ORDERBOOK.format(symbol=to_legacy_symbol(market))
        data = self._get(path, [("count", C.LEGACY_ORDERBOOK_COUNT)])
        return self._parsed(P.parse_legacy_orderbook, market, data, time.monotonic_ns())

    def get_market_info(self, markets: list[str]) -> list[MarketInfo]:
        """The account's ``trade_fee`` (``/info/account``; needs keys), read for one market per
        quote currency and applied to all its markets: it is the account's rate, not the
        coin's [U]. ``get_market_fees`` reads one market's own."""
        if self._auth is None:
            return [MarketInfo(market) for market in markets]
        fees: dict[str, MarketInfo] = {}
        for market in markets:
            if quote_currency(market) not in fees:
                fees[quote_currency(market)] = self.get_market_fees(market)
        return [replace(fees[quote_currency(m)], market=m) for m in markets]

    def get_market_fees(self, market: str) -> MarketInfo:
        data = self._data(self._post(C.LEGACY_ACCOUNT, self._currencies(market)))
        fee = self._parsed(lambda d: P.dec(d["trade_fee"]), data)
        return MarketInfo(market, taker_fee=fee, maker_fee=fee)

    # --- private --------------------------------------------------------------------------
    def get_balances(self) -> dict[str, Balance]:
        data = self._data(self._post(C.LEGACY_BALANCE, [("currency", "ALL")]))
        return self._parsed(P.parse_legacy_balances, data)

    def place_order(self, request: OrderRequest, priority: bool = False) -> OrderResult:
        endpoint, params = self._placement(request)
        with self._lock:
            if request.client_id in self._by_client or request.client_id in self._timed_out:
                raise InvalidOrder(self.venue, f"client_id {request.client_id} was already used",
                                   "client_validation")
        sent_at = self._clock()
        try:
            answer = self._post(endpoint, params, group=Group.ORDER, priority=priority,
                                idempotent=False, client_id=request.client_id)
            order_id = str(answer["order_id"])
        except OrderStateUnknown:
            self._remember_timed_out(request, sent_at)
            raise
        except (KeyError, TypeError) as exc:
            self._remember_timed_out(request, sent_at)
            raise OrderStateUnknown(self.venue, f"placement answer unreadable: {exc}",
                                    request.client_id) from exc
        self._remember(order_id, request.market, request.side, request.order_type, request.client_id)
        if self.on_order_id is not None:
            self.on_order_id(request.client_id, order_id)
        if request.tif is TimeInForce.IOC:
            return self._finish_ioc(order_id, request)
        return P.parse_place_ack(request, {"order_id": order_id})

    def _placement(self, request: OrderRequest) -> tuple[str, list[tuple[str, str]]]:
        def invalid(message: str) -> InvalidOrder:
            return InvalidOrder(self.venue, message, "client_validation")

        if request.venue is not self.venue:
            raise invalid(f"order is for {request.venue.value}")
        if request.tif is TimeInForce.FOK:
            raise invalid("legacy API cannot do FOK")
        if request.volume is None or request.volume <= 0:
            raise invalid(f"legacy {request.order_type.name} needs a positive volume (units)")
        units = [("units", fmt_decimal(request.volume))]
        if request.order_type is OrderType.LIMIT:
            if request.price is None or request.price <= 0:
                raise invalid("LIMIT order needs a positive price")
            params = [*self._currencies(request.market), *units,
                      ("price", fmt_decimal(request.price)), ("type", request.side.value)]
            return C.LEGACY_PLACE, params
        if request.tif is not TimeInForce.GTC:
            raise invalid(f"time_in_force {request.tif.value} needs a limit order")
        endpoint = C.LEGACY_MARKET_BUY if request.order_type is OrderType.MARKET_BUY \
            else C.LEGACY_MARKET_SELL
        return endpoint, [*self._currencies(request.market), *units]

    def _finish_ioc(self, order_id: str, request: OrderRequest) -> OrderResult:
        try:
            self._cancel_remote(order_id, self._known[order_id])
        except OrderNotFound:
            pass  # already fully filled: nothing left to cancel
        except VenueError as exc:
            raise OrderStateUnknown(self.venue, f"IOC emulation: cancel of {order_id} failed "
                                    f"({exc}); the remainder may rest", request.client_id) from exc
        try:
            return self.get_order(order_id=order_id)
        except VenueError as exc:
            raise OrderStateUnknown(self.venue, f"IOC emulation: read-back of {order_id} failed "
                                    f"({exc})", request.client_id) from exc

    def get_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        order_id, known = self._resolve(order_id, client_id)
        candidates = [known] if known else [_Known(m, Side.BUY, OrderType.LIMIT, None)
                                           for m in self._markets]
        for guess in candidates:
            try:
                data = self._data(self._post(C.LEGACY_ORDER_DETAIL,
                                             [("order_id", order_id), *self._currencies(guess.market)]))
            except OrderNotFound:
                continue
            return self._parsed(P.parse_legacy_order_detail, order_id, data, guess.client_id,
                                guess.order_type)
        raise OrderNotFound(self.venue, f"order {order_id} not found in {len(candidates)} market(s)",
                            "order_not_found")

    def _resolve(self, order_id: str | None, client_id: str | None) -> tuple[str, "_Known | None"]:
        """The venue id for exactly one of the two ids, and what this client knows of it."""
        if (order_id is None) == (client_id is None):
            raise ValueError("give exactly one of order_id and client_id")
        if client_id is not None:
            order_id = self._order_id_of(client_id)
        with self._lock:
            return order_id, self._known.get(order_id)

    def _order_id_of(self, client_id: str) -> str:
        with self._lock:
            order_id = self._by_client.get(client_id)
            timed_out = self._timed_out.get(client_id)
        if order_id is not None:
            return order_id
        if timed_out is None:
            raise OrderNotFound(self.venue, f"client_id {client_id} unknown to this client",
                                "order_not_found")
        return self._find_timed_out(*timed_out)

    def _find_timed_out(self, request: OrderRequest, sent_at: float) -> str:
        after_ms = int((sent_at - LOOKUP_SLACK_S) * 1000)
        matches = [o for o in self._open_in(request.market, after_ms)
                   if o.side is request.side and o.volume == request.volume
                   and (request.order_type is not OrderType.LIMIT or o.price == request.price)]
        if len(matches) != 1:
            raise OrderStateUnknown(self.venue, f"timed-out placement {request.client_id}: "
                                    f"{len(matches)} matching open orders", request.client_id)
        order_id = matches[0].order_id
        self._remember(order_id, request.market, request.side, request.order_type, request.client_id)
        return order_id

    def cancel_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        """``/trade/cancel`` (needs side and currencies, from what this client knows), then
        read the order back."""
        order_id, known = self._resolve(order_id, client_id)
        if known is None:
            known = self.get_order(order_id=order_id)  # finds its market and side
            self._remember(order_id, known.market, known.side, known.order_type, None)
            known = self._known[order_id]
        self._cancel_remote(order_id, known)
        return self.get_order(order_id=order_id)

    def _cancel_remote(self, order_id: str, known: _Known) -> None:
        params = [("order_id", order_id), ("type", known.side.value), *self._currencies(known.market)]
        self._post(C.LEGACY_CANCEL, params, group=Group.ORDER, priority=True, idempotent=False,
                   client_id=known.client_id)

    def get_open_orders(self, market: str | None = None) -> list[OrderResult]:
        """Open orders of ``market``, or of every configured market (legacy needs a currency)."""
        orders = []
        for m in [market] if market else self._markets:
            orders += self._open_in(m)
        return orders

    def _open_in(self, market: str, after_ms: int | None = None) -> list[OrderResult]:
        params = [*self._currencies(market), ("count", "100")]
        if after_ms is not None:
            params.append(("after", str(after_ms)))
        try:
            data = self._data(self._post(C.LEGACY_ORDERS, params))
        except OrderNotFound:  # 5600 "no orders in progress"
            return []
        with self._lock:
            by_order = {v: k for k, v in self._by_client.items()}
        orders = self._parsed(lambda d: [P.parse_legacy_open_order(i, by_order.get(str(i["order_id"])))
                                         for i in d], data)
        with self._lock:
            for o in orders:
                if o.order_id not in self._known:
                    _bounded_put(self._known, o.order_id,
                                 _Known(o.market, o.side, o.order_type, o.client_id))
        return orders

    def seed_order(self, request: OrderRequest, order_id: str | None, sent_at: float) -> None:
        """After a restart: what the journal knows of one of our orders, so that
        ``get_order(client_id=...)`` finds it (by id, or by matching its open orders)."""
        if order_id:
            self._remember(order_id, request.market, request.side, request.order_type,
                           request.client_id)
        else:
            self._remember_timed_out(request, sent_at)

    def _remember(self, order_id: str, market: str, side: Side, order_type: OrderType,
                  client_id: str | None) -> None:
        with self._lock:
            _bounded_put(self._known, order_id, _Known(market, side, order_type, client_id))
            if client_id is not None:
                _bounded_put(self._by_client, client_id, order_id)
                self._timed_out.pop(client_id, None)

    def _remember_timed_out(self, request: OrderRequest, sent_at: float) -> None:
        with self._lock:
            _bounded_put(self._timed_out, request.client_id, (request, sent_at))

    def close(self) -> None:
        self._http.close()


def _bounded_put(mapping: OrderedDict, key, value) -> None:
    # caller holds the client's lock; the oldest entries go first
    mapping[key] = value
    mapping.move_to_end(key)
    while len(mapping) > MAX_REMEMBERED:
        mapping.popitem(last=False)
