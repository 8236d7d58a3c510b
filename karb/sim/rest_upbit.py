"""Upbit's REST API on the sim (``https://api.upbit.com/v1`` paths; spec/exchanges.md §2.1, §3.1).

Public: ``/v1/market/all``, ``/v1/ticker``, ``/v1/orderbook``, ``/v1/orderbook/instruments``.
Private (JWT): ``/v1/accounts``, ``/v1/orders/chance``, ``POST /v1/orders``, ``GET|DELETE
/v1/order``, ``/v1/orders`` (``state``/``states[]``), ``/v1/orders/open``, ``/v1/orders/closed``,
``/v1/orders/uuids``; deposits and withdrawals: ``karb.sim.rest_wallet``. Private numbers are
strings; quotation numbers are JSON numbers. Errors are ``{"error":{"name","message"}}``.
``BithumbApi`` subclasses this for Bithumb 2.0.
"""
from __future__ import annotations

import time
from decimal import Decimal
from typing import Callable

from karb.model import Side, Venue, base_currency
from karb.sim.auth import AuthFailure, NonceBook, hash_input_from_body, hash_input_from_query, verify_jwt
from karb.sim.config import SimConfig
from karb.sim.exchange import OrderParams, SimExchange
from karb.sim.frames import rest_orderbook_entry
from karb.sim.grid import GRIDS, to_decimal
from karb.sim.orders import Account, Reject, RejectKind, SimOrder, dec_str, parse_decimal
from karb.sim.rest import RateWindows, Request, Response, is_bad_json
from karb.sim.rest_wallet import WITHDRAW_PATH, WalletRoutes

Handler = Callable[[Request, "Account | None"], Response]

# Upbit request groups and per-second limits (spec §3.1; quotation limits per IP). The order
# group is 12/s since 2026-08-21 (8/s before; docs.upbit.com changelog order-rate-limit-update).
# market_event.caution keys (docs.upbit.com "마켓 코드 조회")
UPBIT_CAUTIONS = ("PRICE_FLUCTUATIONS", "TRADING_VOLUME_SOARING", "DEPOSIT_AMOUNT_SOARING",
                  "GLOBAL_PRICE_DIFFERENCES", "CONCENTRATION_OF_SMALL_ACCOUNTS")
GROUP_LIMITS = {"market": 10, "ticker": 10, "orderbook": 10, "default": 30, "order": 12}
TOO_MANY = b"Too many API requests."  # Upbit's 429 body: plain text, not JSON
_AUTH_NAMES = {"missing": "jwt_verification", "malformed": "jwt_verification", "bad_signature": "jwt_verification",
               "bad_key": "invalid_access_key", "nonce_used": "nonce_used", "bad_query_hash": "invalid_query_payload",
               "expired": "expired_jwt"}
_NAMES = {"coin": {"BTC": ("비트코인", "Bitcoin"), "ETH": ("이더리움", "Ethereum")}}


class UpbitApi:
    venue = Venue.UPBIT
    jwt_algs: tuple[str, ...] = ("HS256", "HS512")
    ts_window_ms: int | None = None
    partial_is_done = False
    rate_header = True
    identifier_field = "identifier"

    def __init__(self, exchange: SimExchange, sim: SimConfig):
        self.exchange = exchange
        self.sim = sim
        self.nonces = NonceBook()
        self.rates = RateWindows()
        # (method, path) -> (handler, private, rate group)
        self.routes: dict[tuple[str, str], tuple[Handler, bool, str]] = {
            ("GET", "/v1/market/all"): (self.market_all, False, "market"),
            ("GET", "/v1/ticker"): (self.ticker, False, "ticker"),
            ("GET", "/v1/orderbook"): (self.orderbook, False, "orderbook"),
            ("GET", "/v1/orderbook/instruments"): (self.instruments, False, "orderbook"),
            ("GET", "/v1/accounts"): (self.accounts, True, "default"),
            ("GET", "/v1/orders/chance"): (self.chance, True, "default"),
            ("POST", "/v1/orders"): (self.place_order, True, "order"),
            ("GET", "/v1/order"): (self.get_order, True, "default"),
            ("DELETE", "/v1/order"): (self.cancel_order, True, "default"),
            ("GET", "/v1/orders"): (self.list_orders, True, "default"),
            ("GET", "/v1/orders/open"): (self.open_orders, True, "default"),
            ("GET", "/v1/orders/closed"): (self.closed_orders, True, "default"),
            ("GET", "/v1/orders/uuids"): (self.orders_by_ids, True, "default"),
        }
        self.routes.update(WalletRoutes(self).routes)  # deposits and withdrawals (karb.sim.rest_wallet)

    # --- dispatch ------------------------------------------------------------------------
    PLACEMENTS = frozenset({("POST", "/v1/orders"), ("POST", "/v2/orders"), ("POST", "/trade/place"),
                            ("POST", "/trade/market_buy"), ("POST", "/trade/market_sell"),
                            ("POST", WITHDRAW_PATH)})

    def is_placement(self, request: Request) -> bool:
        """Is this request an order placement or a coin withdrawal (the answer faults such as
        ``lose_answer`` apply to it)?"""
        return (request.method, request.path.rstrip("/")) in self.PLACEMENTS and (
            request.method, request.path.rstrip("/")) in self.routes

    def handle(self, request: Request) -> Response:
        route = self.routes.get((request.method, request.path.rstrip("/") or "/"))
        if route is None:
            return self.error(404, "not_found", f"{request.method} {request.path} does not exist")
        handler, private, group = route
        if is_bad_json(request):
            return self.error(400, "invalid_parameter", "request body is not valid JSON")
        account = None
        if private:
            try:
                account = self.authenticate(request)
            except AuthFailure as failure:
                return self.auth_error(failure)
        limited = self.rate_limit(request, group, account)
        if limited is not None and limited.status == 429:
            return limited
        try:
            response = handler(request, account)
        except Reject as reject:
            response = self.reject(reject)
        if limited is not None:
            response.headers.update(limited.headers)
        return response

    def authenticate(self, request: Request) -> Account:
        if isinstance(request.json, dict):
            inputs = [hash_input_from_body(request.json)]
        else:
            inputs = hash_input_from_query(request.raw_query) if request.raw_query else []
        return verify_jwt(request.headers.get("Authorization"), self.exchange.account, inputs, self.nonces,
                          self.jwt_algs, int(time.time() * 1000), self.ts_window_ms)

    def rate_limit(self, request: Request, group: str, account: Account | None) -> Response | None:
        limit = GROUP_LIMITS[group]
        remaining = self.rates.hit(group, account.access_key if account else request.client_ip, limit)
        headers = {"Remaining-Req": f"group={group}; min=1800; sec={max(0, remaining)}"} if self.rate_header else {}
        if remaining < 0 and self.sim.enforce_rate_limits:
            return self.too_many(headers)
        return Response(200, None, headers)

    def too_many(self, headers: dict[str, str]) -> Response:
        return Response(429, TOO_MANY, headers, "text/plain; charset=utf-8")

    # --- errors ----------------------------------------------------------------------------
    def error(self, status: int, name: str, message: str) -> Response:
        return Response(status, {"error": {"name": name, "message": message}})

    def auth_error(self, failure: AuthFailure) -> Response:
        return self.error(401, _AUTH_NAMES[failure.kind], failure.message)

    def fault_response(self, request: Request, status: int) -> Response:
        if status == 429:
            return self.too_many({"Remaining-Req": "group=default; min=1800; sec=0"} if self.rate_header else {})
        if status == 403:  # the documented 403: a market or the system in maintenance
            return self.error(403, "market_offline", "시스템 점검 중입니다. 점검이 완료된 후에 다시 시도해주세요.")
        return self.error(status, "server_error", f"simulated HTTP {status}")

    def reject(self, reject: Reject) -> Response:
        side = "bid" if reject.side is Side.BUY else "ask"
        kind = reject.kind
        if kind is RejectKind.NOT_FOUND or kind is RejectKind.NOT_CANCELLABLE:
            return self.error(404, "order_not_found", reject.message)
        if kind in (RejectKind.BAD_ORDER, RejectKind.REJECTED):
            return self.error(400, f"create_{side}_error", reject.message)
        names = {RejectKind.INVALID_PRICE: f"invalid_price_{side}", RejectKind.UNDER_MIN: f"under_min_total_{side}",
                 RejectKind.INSUFFICIENT: f"insufficient_funds_{side}", RejectKind.OVER_MAX: f"over_krw_funds_{side}",
                 RejectKind.UNKNOWN_MARKET: "notfoundmarket"}
        return self.error(400, names.get(kind, "validation_error"), reject.message)

    # --- public ------------------------------------------------------------------------------
    def market_all(self, request: Request, _account) -> Response:
        details = (request.get("is_details") or request.get("isDetails") or "").lower() == "true"
        out = []
        for market in self.exchange.rules:
            coin = base_currency(market)
            korean, english = _NAMES["coin"].get(coin, (coin, coin))
            entry = {"market": market, "korean_name": korean, "english_name": english}
            if details:
                entry.update(self.market_details(market))
            out.append(entry)
        return Response(200, out)

    def market_details(self, market: str) -> dict:
        """Upbit's ``market_warning`` and ``market_event`` from the market's sim flags."""
        flags = self.exchange.market_flags.get(market, frozenset())
        return {"market_warning": "CAUTION" if "WARNING" in flags else "NONE",
                "market_event": {"warning": "WARNING" in flags,
                                 "caution": {kind: kind in flags for kind in UPBIT_CAUTIONS}}}

    def _markets_param(self, request: Request) -> list[str] | Response:
        text = request.get("markets") or ""
        markets = [m.strip() for m in text.split(",") if m.strip()]
        if not markets:
            return self.error(400, "validation_error", "markets is required")
        if any(m not in self.exchange.rules for m in markets):
            return self.error(404, "404", "Code not found")
        return markets

    def ticker(self, request: Request, _account) -> Response:
        markets = self._markets_param(request)
        if isinstance(markets, Response):
            return markets
        return Response(200, [self._ticker_entry(m) for m in markets])

    def _ticker_entry(self, market: str) -> dict:
        bids, asks, ts_ms = self.exchange.snapshot(market)
        price = float(to_decimal(bids[0][0])) if bids else float(self.sim.markets[market].price)
        start = float(self.sim.markets[market].price)
        stamp = time.gmtime(ts_ms / 1000 if ts_ms else time.time())
        change = price - start
        return {
            "market": market, "trade_date": time.strftime("%Y%m%d", stamp),
            "trade_time": time.strftime("%H%M%S", stamp), "trade_timestamp": ts_ms,
            "opening_price": start, "high_price": max(start, price), "low_price": min(start, price),
            "trade_price": price, "prev_closing_price": start,
            "change": "RISE" if change > 0 else ("FALL" if change < 0 else "EVEN"),
            "change_price": abs(change), "change_rate": abs(change) / start,
            "signed_change_price": change, "signed_change_rate": change / start,
            "trade_volume": 0.0, "acc_trade_price": 0.0, "acc_trade_price_24h": 0.0,
            "acc_trade_volume": 0.0, "acc_trade_volume_24h": 0.0,
            "highest_52_week_price": max(start, price), "highest_52_week_date": time.strftime("%Y-%m-%d", stamp),
            "lowest_52_week_price": min(start, price), "lowest_52_week_date": time.strftime("%Y-%m-%d", stamp),
            "timestamp": ts_ms,
        }

    def orderbook(self, request: Request, _account) -> Response:
        markets = self._markets_param(request)
        if isinstance(markets, Response):
            return markets
        count = _int(request.get("count"), self.default_levels(len(markets)))
        out = []
        for market in markets:
            bids, asks, ts_ms = self.exchange.snapshot(market)
            out.append(rest_orderbook_entry(market, bids, asks, ts_ms, max(1, min(count, 30))))
        return Response(200, out)

    def default_levels(self, n_markets: int) -> int:
        return 30

    def instruments(self, request: Request, _account) -> Response:
        markets = self._markets_param(request)
        if isinstance(markets, Response):
            return markets
        return Response(200, [{"market": m, "quote_currency": "KRW", "tick_size": dec_str(self._tick(m)),
                               "supported_levels": [0]} for m in markets])

    def _tick(self, market: str) -> Decimal:
        bids, _, _ = self.exchange.snapshot(market)
        price = bids[0][0] if bids else int(self.sim.markets[market].price * 10**8)
        return to_decimal(GRIDS[self.venue].tick(price))

    # --- private -------------------------------------------------------------------------------
    def accounts(self, _request: Request, account: Account) -> Response:
        return Response(200, [self._account_entry(account, c) for c in account.currencies()])

    def _account_entry(self, account: Account, currency: str) -> dict:
        return {"currency": currency, "balance": dec_str(account.free(currency)),
                "locked": dec_str(account.locked(currency)), "avg_buy_price": "0",
                "avg_buy_price_modified": False, "unit_currency": "KRW"}

    def chance(self, request: Request, account: Account) -> Response:
        market = request.get("market")
        rules = self.exchange.rules.get(market or "")
        if rules is None:
            return self.error(400 if not market else 404, "validation_error", "market is missing or unknown")
        coin = base_currency(market)
        side_info = {"min_total": dec_str(rules.min_total)}
        return Response(200, {
            "bid_fee": dec_str(rules.taker_fee), "ask_fee": dec_str(rules.taker_fee),
            "maker_bid_fee": dec_str(rules.maker_fee), "maker_ask_fee": dec_str(rules.maker_fee),
            "market": {
                "id": market, "name": f"{coin}/KRW", "order_types": ["limit"],
                "order_sides": ["ask", "bid"], "bid_types": ["limit", "price", "best_fok", "best_ioc"],
                "ask_types": ["limit", "market", "best_fok", "best_ioc"],
                "bid": {"currency": "KRW", **side_info, **self.chance_extra(market)},
                "ask": {"currency": coin, **side_info, **self.chance_extra(market)},
                "max_total": "1000000000", "state": "active",
            },
            "bid_account": self._account_entry(account, "KRW"),
            "ask_account": self._account_entry(account, coin),
        })

    def chance_extra(self, market: str) -> dict:
        return {}

    def order_params(self, request: Request, type_field: str = "ord_type") -> OrderParams:
        if not isinstance(request.json, dict):
            raise Reject(RejectKind.BAD_PARAMS, "order parameters must be a JSON body")
        side_text = request.get("side")
        if side_text not in ("bid", "ask"):
            raise Reject(RejectKind.BAD_PARAMS, f"side must be bid or ask, was {side_text!r}")
        side = Side(side_text)
        market = request.get("market") or ""
        ord_type = request.get(type_field) or ""
        try:
            price = parse_decimal(request.get("price"), "price")
            volume = parse_decimal(request.get("volume"), "volume")
        except Reject as reject:
            reject.side = side
            raise
        if not market or not ord_type:
            raise Reject(RejectKind.BAD_PARAMS, f"market and {type_field} are required", side)
        tif = request.get("time_in_force") or None
        return OrderParams(market, side, ord_type, price, volume, tif, request.get(self.identifier_field) or None)


    def place_order(self, request: Request, account: Account) -> Response:
        """The answer shows the order as accepted (docs' example: ``state: wait``,
        ``trades_count: 0``); its fills show on ``GET /v1/order`` after ``fill_visible_ms``."""
        order = self.exchange.place(account.access_key, self.order_params(request), self.partial_is_done)
        shown = order.accepted() if self.exchange.config.fill_visible_ms > 0 else order
        return Response(201, self.render_order(shown, with_trades=False))

    def _lookup_args(self, request: Request) -> tuple[str | None, str | None]:
        uuid = request.get("uuid") or request.get("order_id")
        identifier = request.get(self.identifier_field)
        if not uuid and not identifier:
            raise Reject(RejectKind.BAD_PARAMS, f"uuid or {self.identifier_field} is required")
        return uuid, identifier

    def get_order(self, request: Request, account: Account) -> Response:
        uuid, identifier = self._lookup_args(request)
        order = self.exchange.get(account.access_key, uuid, identifier)
        now = time.monotonic()
        return self.not_ready(order, now) or Response(200, self.render_order(order.seen_at(now), True))

    def not_ready(self, order: SimOrder, now: float) -> Response | None:
        """Bithumb answers reads of a just-placed order with 422 ``order_not_ready``."""
        return None

    def cancel_order(self, request: Request, account: Account) -> Response:
        uuid, identifier = self._lookup_args(request)
        before = self.exchange.cancel(account.access_key, uuid, identifier)
        return Response(200, self.render_order(before, with_trades=False))

    def _list(self, request: Request, account: Account, default_states: set[str]) -> Response:
        states = set(request.getlist("states")) or ({request.get("state")} if request.get("state") else default_states)
        orders = self.exchange.list_orders(account.access_key, request.get("market"), states)
        orders.sort(key=lambda o: o.created_at, reverse=(request.get("order_by") or "desc") == "desc")
        limit = max(1, min(_int(request.get("limit"), 100), 100))
        page = max(1, _int(request.get("page"), 1))
        chosen = orders[(page - 1) * limit: page * limit]
        return Response(200, [self.render_order(o, with_trades=False) for o in chosen])

    def list_orders(self, request: Request, account: Account) -> Response:
        uuids = request.getlist("uuids")
        if uuids:
            return self.orders_by_ids(request, account)
        return self._list(request, account, {"wait"})

    def open_orders(self, request: Request, account: Account) -> Response:
        return self._list(request, account, {"wait", "watch"})

    def closed_orders(self, request: Request, account: Account) -> Response:
        return self._list(request, account, {"done", "cancel"})

    def orders_by_ids(self, request: Request, account: Account) -> Response:
        now = time.monotonic()
        found = []
        for uuid in request.getlist("uuids"):
            try:
                found.append(self.exchange.get(account.access_key, uuid=uuid))
            except Reject:
                continue
        for identifier in request.getlist("identifiers"):
            try:
                found.append(self.exchange.get(account.access_key, identifier=identifier))
            except Reject:
                continue
        return Response(200, [self.render_order(o.seen_at(now), with_trades=False) for o in found])

    # --- rendering ---------------------------------------------------------------------------
    def render_order(self, order: SimOrder, with_trades: bool) -> dict:
        open_ = order.is_open
        out = {
            "uuid": order.uuid, "side": order.side.value, "ord_type": order.ord_type,
            "price": dec_str(order.price), "state": order.state, "market": order.market,
            "created_at": order.created_at, "volume": dec_str(order.volume),
            "remaining_volume": dec_str(order.remaining_volume) if order.volume is not None else None,
            "reserved_fee": dec_str(order.reserved_fee),
            "remaining_fee": dec_str(max(order.reserved_fee - order.paid_fee, Decimal(0)) if open_ else Decimal(0)),
            "paid_fee": dec_str(order.paid_fee), "locked": dec_str(order.locked),
            "executed_volume": dec_str(order.executed_volume), "executed_funds": dec_str(order.executed_funds),
            "trades_count": len(order.trades),
        }
        if order.tif:
            out["time_in_force"] = order.tif
        if order.identifier:
            out[self.identifier_field] = order.identifier
        if with_trades:
            out["trades"] = [{"market": order.market, "uuid": t.uuid, "price": dec_str(t.price),
                              "volume": dec_str(t.volume), "funds": dec_str(t.funds), "side": order.side.value,
                              "created_at": t.created_at, "trend": "up" if order.side is Side.BUY else "down"}
                             for t in order.trades]
        return out


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text not in (None, "") else default
    except ValueError:
        raise Reject(RejectKind.BAD_PARAMS, f"expected a whole number, was {text!r}") from None
