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

Legacy (spec §2.3) lives in ``karb.sim.rest_legacy``.
"""
from __future__ import annotations

from karb.model import Venue
from karb.sim.config import SimConfig
from karb.sim.exchange import SimExchange
from karb.sim.orders import Account
from karb.sim.rest import Request, Response
from karb.sim.rest_legacy import LegacyRoutes
from karb.sim.rest_upbit import GROUP_LIMITS, UpbitApi

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
            ("GET", "/v2/orders/pending"): (self.open_orders, True, "private"),
            ("GET", "/v2/orders/history"): (self.closed_orders, True, "private"),
        })
        self.legacy = LegacyRoutes(exchange, sim)
        for key, handler in self.legacy.routes.items():
            routes[key] = (handler, False, "public")  # legacy auth is checked by the handler
        self.routes = routes

    def handle(self, request: Request) -> Response:
        if request.path.startswith("/public/orderbook/") or request.path.startswith("/public/ticker/"):
            return self.legacy.public(request)
        return super().handle(request)

    def default_levels(self, n_markets: int) -> int:
        return 30 if n_markets == 1 else 15

    def chance_extra(self, market: str) -> dict:
        return {"price_unit": str(self._tick(market).normalize())}

    def fault_response(self, request: Request, status: int) -> Response:
        if self.legacy.is_legacy(request.path):
            return self.legacy.fault_response(status)
        return super().fault_response(request, status)

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
