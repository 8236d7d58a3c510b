"""Bithumb's REST API on the sim: API 2.0 (JWT) and the legacy HMAC API on the same host.

API 2.0 (spec §2.2) is Upbit's shape with these differences: JWT needs a ``timestamp`` claim
(ms, within ``sim.bithumb_ts_window_ms``) and is HS256 only; orders are ``POST /v2/orders``
with ``order_type`` and ``client_order_id``, answered by an acknowledgement
(``order_id, market, side, order_type, created_at``); cancel is ``DELETE /v2/order``
(``{"order_id","created_at"}``); lookups stay on ``GET /v1/order`` (``uuid`` or
``client_order_id``); an IOC/market remainder after a partial fill ends ``done``; multi-market
``/v1/orderbook`` gives 15 levels, single-market 30; no ``Remaining-Req`` header; ``/v1/orders/
chance`` also tells ``price_unit`` (the tick at the current price). The old v1 order paths
(``POST /v1/orders``, ``DELETE /v1/order``) still work.

Venue details: ``GET /v2/orders/pending`` answers ``next_key`` cursor pages of
``sim.bithumb_pending_page`` orders (``{"orders": [...], "has_next", "next_key"}``; the list's
key is [U]) or, with ``bithumb_pending_shape: list``, the older bare list; reads of an order
younger than ``sim.venues.bithumb.not_ready_ms`` answer ``422 order_not_ready``; errors use
Bithumb's own names (apidocs.bithumb.com "API 주요 에러 코드": ``invalid_parameter``,
``invalid_price_*``, ``under_price_limit_*`` (the minimum order [U]), ``currency does not have a
valid value``, 403 ``blocked_member_id``...);
``insufficient_funds_*`` is not in that table and kept [U].

Legacy (spec §2.3) lives in ``karb.sim.rest_legacy``.
"""
from __future__ import annotations

import base64

from karb.model import Side, Venue
from karb.sim.config import SimConfig
from karb.sim.exchange import SimExchange
from karb.sim.orders import Account, Reject, RejectKind, SimOrder
from karb.sim.rest import Request, Response
from karb.sim.rest_legacy import LegacyRoutes
from karb.sim.rest_upbit import GROUP_LIMITS, UpbitApi, _int

GROUP_LIMITS.update({"public": 150, "private": 140, "bithumb-order": 140})


class BithumbApi(UpbitApi):
    venue = Venue.BITHUMB
    jwt_algs = ("HS256",)
    partial_is_done = True
    rate_header = False
    identifier_field = "client_order_id"

    def __init__(self, exchange: SimExchange, sim: SimConfig):
        super().__init__(exchange, sim)
        self.ts_window_ms = sim.bithumb_ts_window_ms
        groups = {"market": "public", "ticker": "public", "orderbook": "public", "default": "private",
                  "order": "bithumb-order"}
        routes = {key: (handler, private, groups[group]) for key, (handler, private, group) in self.routes.items()
                  if key != ("GET", "/v1/orderbook/instruments")}
        routes.update({
            ("POST", "/v2/orders"): (self.place_order_v2, True, "bithumb-order"),
            ("DELETE", "/v2/order"): (self.cancel_order_v2, True, "bithumb-order"),
            ("GET", "/v2/orders/pending"): (self.pending_orders, True, "private"),
            ("GET", "/v2/orders/history"): (self.closed_orders, True, "private"),
            ("GET", "/v1/market/virtual_asset_warning"): (self.asset_warnings, False, "public"),
        })
        self.legacy = LegacyRoutes(exchange, sim)
        for key, handler in self.legacy.routes.items():
            routes[key] = (handler, False, "public")  # legacy auth is checked by the handler
        self.routes = routes

    def handle(self, request: Request) -> Response:
        if request.path.startswith("/public/orderbook/") or request.path.startswith("/public/ticker/"):
            return self.legacy.public(request)
        return super().handle(request)

    def market_details(self, market: str) -> dict:
        """Bithumb's ``market/all`` details carry ``market_warning`` only."""
        flags = self.exchange.market_flags.get(market, frozenset())
        return {"market_warning": "CAUTION" if "WARNING" in flags else "NONE"}

    def asset_warnings(self, request: Request, _account) -> Response:
        """The 경보제 list: a row per market and alert kind (every flag but ``WARNING``)."""
        return Response(200, [{"market": market, "warning_type": kind, "warning_step": "CAUTION",
                               "end_date": "2099-12-31 23:59:59"}
                              for market, flags in sorted(self.exchange.market_flags.items())
                              for kind in sorted(flags - {"WARNING"})])

    def default_levels(self, n_markets: int) -> int:
        return 30 if n_markets == 1 else 15

    def chance_extra(self, market: str) -> dict:
        return {"price_unit": str(self._tick(market).normalize())}

    def fault_response(self, request: Request, status: int) -> Response:
        if self.legacy.is_legacy(request.path):
            return self.legacy.fault_response(status)
        if status == 403:  # Bithumb's documented 403
            return self.error(403, "blocked_member_id", "Service usage has been restricted in accordance "
                              "with our operational policy.")
        return super().fault_response(request, status)

    def too_many(self, headers: dict[str, str]) -> Response:
        # [U] Bithumb's REST 429 body is not documented; the JSON error shape is assumed
        return self.error(429, "too_many_requests", "Too many API requests.")

    def reject(self, reject: Reject) -> Response:
        side = "bid" if reject.side is Side.BUY else "ask"
        kind = reject.kind
        if kind in (RejectKind.NOT_FOUND, RejectKind.NOT_CANCELLABLE):
            return self.error(404, "order_not_found", "주문을 찾지 못했습니다.")
        if kind is RejectKind.INVALID_PRICE:
            return self.error(400, f"invalid_price_{side}", "주문가격 단위를 잘못 입력하셨습니다. 확인 후 시도해주세요.")
        if kind is RejectKind.UNKNOWN_MARKET:
            return self.error(400, "currency does not have a valid value", "빗썸에서 지원하지 않는 코인 입니다.")
        if kind is RejectKind.UNDER_MIN:  # [U] read as Bithumb's minimum-order-amount error
            return self.error(400, f"under_price_limit_{side}", "주문가격은 최소 5000 이상으로 주문 가능합니다.")
        if kind is RejectKind.INSUFFICIENT:
            return self.error(400, f"insufficient_funds_{side}", reject.message)  # [U] not in the table
        return self.error(400, "invalid_parameter", f"잘못된 파라미터 입니다. ({reject.message})")

    def not_ready(self, order: SimOrder, now: float) -> Response | None:
        if now < order.not_ready_until:
            return self.error(422, "order_not_ready", "주문 접수 처리 중입니다. 잠시 후 다시 시도해주세요.")
        return None

    def pending_orders(self, request: Request, account: Account) -> Response:
        """``GET /v2/orders/pending``: wait/watch orders, newest first, in cursor pages."""
        orders = self.exchange.list_orders(account.access_key, request.get("market"), {"wait", "watch"})
        orders.sort(key=_cursor_key, reverse=True)
        if self.sim.bithumb_pending_shape == "list":
            return Response(200, [self.render_order(o, with_trades=False) for o in orders])
        limit = max(1, min(_int(request.get("limit"), 100), self.sim.bithumb_pending_page))
        cursor = request.get("next_key")
        if cursor:
            after = _decode_cursor(cursor)
            orders = [o for o in orders if _cursor_key(o) < after]
        page, more = orders[:limit], len(orders) > limit
        return Response(200, {"orders": [self.render_order(o, with_trades=False) for o in page],
                              "has_next": more, "next_key": _encode_cursor(page[-1]) if more else None})

    def place_order_v2(self, request: Request, account: Account) -> Response:
        params = self.order_params(request, "order_type")
        order = self.exchange.place(account.access_key, params, self.partial_is_done)
        return Response(201, {"order_id": order.uuid, "market": order.market, "side": order.side.value,
                              "order_type": order.ord_type, "created_at": order.created_at})

    def cancel_order_v2(self, request: Request, account: Account) -> Response:
        order_id = request.get("order_id")
        identifier = request.get("client_order_id")
        before = self.exchange.cancel(account.access_key, order_id, identifier)
        return Response(200, {"order_id": before.uuid, "created_at": before.created_at})


def _cursor_key(order: SimOrder) -> tuple[int, str]:
    return order.created_ns, order.uuid


def _encode_cursor(order: SimOrder) -> str:
    return base64.urlsafe_b64encode(f"{order.created_ns}:{order.uuid}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, uuid = text.split(":", 1)
        return int(created), uuid
    except (ValueError, UnicodeDecodeError):
        raise Reject(RejectKind.BAD_PARAMS, f"next_key {cursor!r} is not a cursor this venue gave") from None
