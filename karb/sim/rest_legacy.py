"""Bithumb's legacy REST API on the sim (spec §1.3, §2.3): ``/public``, ``/info``, ``/trade``.

Private calls are form-encoded POSTs signed with ``Api-Key`` / ``Api-Sign`` / ``Api-Nonce``.
Every answer is the legacy envelope ``{"status":"0000", ...}`` with string numbers; errors are
``{"status":"5xxx","message":...}`` (5100 bad request, 5300 invalid key/signature, 5500 invalid
parameter, 5600 custom notice: funds, minimum, tick, unknown order; 5900 unknown error).
HTTP status 200 for venue errors (the status lives in the body), as the legacy API did **[U]**.

``/trade/market_buy`` buys ``units`` of coin: the sim runs it as an IOC limit at the book's
worst displayed ask, so it fills ``units`` at book prices or as much as the book holds.
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Callable

from karb.model import Side, base_currency
from karb.rules import to_legacy_symbol, to_upbit_symbol
from karb.sim.auth import AuthFailure, NonceBook, verify_legacy
from karb.sim.config import SimConfig
from karb.sim.exchange import OrderParams, SimExchange
from karb.sim.frames import legacy_orderbook_body
from karb.sim.grid import to_decimal
from karb.sim.orders import Account, Reject, RejectKind, SimOrder, dec_str, parse_decimal
from karb.sim.rest import Request, Response

_STATUS = {"done": "Completed", "cancel": "Cancel", "wait": "Pending"}


class LegacyRoutes:
    def __init__(self, exchange: SimExchange, sim: SimConfig):
        self.exchange = exchange
        self.sim = sim
        self.nonces = NonceBook()
        private: dict[str, Callable[[Request, Account], Response]] = {
            "/info/balance": self.balance, "/info/account": self.account_info, "/trade/place": self.place, "/trade/market_buy": self.market_buy,
            "/trade/market_sell": self.market_sell, "/trade/cancel": self.cancel,
            "/info/order_detail": self.order_detail, "/info/orders": self.orders,
        }
        self.routes = {("POST", path): self._private(handler) for path, handler in private.items()}

    @staticmethod
    def is_legacy(path: str) -> bool:
        return path.startswith(("/public/", "/info/", "/trade/"))

    def fault_response(self, status: int) -> Response:
        return Response(status, {"status": "5900", "message": f"Unknown Error (simulated HTTP {status})"})

    @staticmethod
    def fail(code: str, message: str) -> Response:
        return Response(200, {"status": code, "message": message})

    # --- public ---------------------------------------------------------------------------------
    def public(self, request: Request) -> Response:
        if request.method != "GET":
            return self.fail("5302", "Method Not Allowed")
        kind, _, symbol = request.path[len("/public/"):].partition("/")
        if kind == "ticker" and symbol.upper() == "ALL_KRW":
            data: dict = {base_currency(m): self._ticker(m) for m in self.exchange.rules}
            data["date"] = str(int(time.time() * 1000))
            return Response(200, {"status": "0000", "data": data})
        market = to_upbit_symbol(symbol) if "_" in symbol else ""
        if market not in self.exchange.rules:
            return self.fail("5500", "Invalid Parameter")
        if kind == "orderbook":
            try:
                count = int(request.get("count") or 30)
            except ValueError:
                return self.fail("5500", "Invalid Parameter")
            bids, asks, ts_ms = self.exchange.snapshot(market)
            return Response(200, legacy_orderbook_body(market, bids, asks, ts_ms, max(1, min(count, 30))))
        data = self._ticker(market)
        data["date"] = str(int(time.time() * 1000))
        return Response(200, {"status": "0000", "data": data})

    def _ticker(self, market: str) -> dict:
        bids, _, _ = self.exchange.snapshot(market)
        start = self.sim.markets[market].price
        price = to_decimal(bids[0][0]) if bids else start
        return {
            "opening_price": dec_str(start), "closing_price": dec_str(price), "min_price": dec_str(min(start, price)),
            "max_price": dec_str(max(start, price)), "units_traded": "0", "acc_trade_value": "0",
            "prev_closing_price": dec_str(start), "units_traded_24H": "0", "acc_trade_value_24H": "0",
            "fluctate_24H": dec_str(price - start) if price != start else "0",
            "fluctate_rate_24H": f"{(price / start - 1) * 100:.2f}",
        }

    # --- private --------------------------------------------------------------------------------
    def _private(self, handler: Callable[[Request, Account], Response]) -> Callable:
        def wrapped(request: Request, _account) -> Response:
            try:
                account = verify_legacy(request.headers, request.path, request.body, self.exchange.account,
                                        self.nonces)
            except AuthFailure as failure:
                code = "5300" if failure.kind in ("bad_key", "bad_signature") else "5100"
                return self.fail(code, failure.message)
            try:
                return handler(request, account)
            except Reject as reject:
                if reject.kind is RejectKind.BAD_PARAMS:
                    return self.fail("5500", f"Invalid Parameter: {reject.message}")
                return self.fail("5600", reject.message)
        return wrapped

    def _market(self, request: Request) -> str:
        coin = (request.get("order_currency") or "").upper()
        payment = (request.get("payment_currency") or "KRW").upper()
        market = f"{payment}-{coin}"
        if market not in self.exchange.rules:
            raise Reject(RejectKind.BAD_PARAMS, f"unknown currency pair {coin}_{payment}")
        return market

    def balance(self, request: Request, account: Account) -> Response:
        wanted = (request.get("currency") or "BTC").upper()
        currencies = [c for c in account.currencies() if c != "KRW"] if wanted == "ALL" else [wanted]
        data = {"total_krw": dec_str(account.free("KRW") + account.locked("KRW")),
                "in_use_krw": dec_str(account.locked("KRW")), "available_krw": dec_str(account.free("KRW"))}
        for currency in currencies:
            low = currency.lower()
            data[f"total_{low}"] = dec_str(account.free(currency) + account.locked(currency))
            data[f"in_use_{low}"] = dec_str(account.locked(currency))
            data[f"available_{low}"] = dec_str(account.free(currency))
            market = f"KRW-{currency}"
            if market in self.exchange.rules:
                bids, _, _ = self.exchange.snapshot(market)
                data[f"xcoin_last_{low}"] = dec_str(to_decimal(bids[0][0])) if bids else "0"
        return Response(200, {"status": "0000", "data": data})

    def account_info(self, request: Request, account: Account) -> Response:
        market = self._market(request)
        rules = self.exchange.rules[market]
        return Response(200, {"status": "0000", "data": {
            "created": "1546268400000", "account_id": account.access_key[:12], "order_currency": base_currency(market),
            "payment_currency": "KRW", "trade_fee": dec_str(rules.taker_fee),
            "balance": dec_str(account.free(base_currency(market))),
        }})

    def _side(self, request: Request) -> Side:
        kind = request.get("type")
        if kind not in ("bid", "ask"):
            raise Reject(RejectKind.BAD_PARAMS, "type must be bid or ask")
        return Side(kind)

    def place(self, request: Request, account: Account) -> Response:
        side = self._side(request)
        params = OrderParams(self._market(request), side, "limit", parse_decimal(request.get("price"), "price"),
                             parse_decimal(request.get("units"), "units"))
        order = self.exchange.place(account.access_key, params, partial_is_done=True)
        return Response(200, {"status": "0000", "order_id": order.uuid})

    def market_buy(self, request: Request, account: Account) -> Response:
        market = self._market(request)
        units = parse_decimal(request.get("units"), "units")
        _, asks, _ = self.exchange.snapshot(market)
        if not asks:
            raise Reject(RejectKind.BAD_PARAMS, "no market price yet")
        worst = to_decimal(asks[-1][0])
        params = OrderParams(market, Side.BUY, "limit", worst, units, "ioc")
        order = self.exchange.place(account.access_key, params, partial_is_done=True)
        return Response(200, {"status": "0000", "order_id": order.uuid})

    def market_sell(self, request: Request, account: Account) -> Response:
        params = OrderParams(self._market(request), Side.SELL, "market", None,
                             parse_decimal(request.get("units"), "units"))
        order = self.exchange.place(account.access_key, params, partial_is_done=True)
        return Response(200, {"status": "0000", "order_id": order.uuid})

    def cancel(self, request: Request, account: Account) -> Response:
        order_id = request.get("order_id")
        if not order_id:
            raise Reject(RejectKind.BAD_PARAMS, "order_id is required")
        self.exchange.cancel(account.access_key, uuid=order_id)
        return Response(200, {"status": "0000"})

    def order_detail(self, request: Request, account: Account) -> Response:
        order_id = request.get("order_id")
        if not order_id:
            raise Reject(RejectKind.BAD_PARAMS, "order_id is required")
        order = self.exchange.get(account.access_key, uuid=order_id)
        return Response(200, {"status": "0000", "data": self._detail(order)})

    def orders(self, request: Request, account: Account) -> Response:
        market = self._market(request)
        open_orders = self.exchange.list_orders(account.access_key, market, {"wait"})
        if request.get("order_id"):
            open_orders = [o for o in open_orders if o.uuid == request.get("order_id")]
        if not open_orders:
            return self.fail("5600", "거래 진행중인 내역이 존재하지 않습니다.")
        return Response(200, {"status": "0000", "data": [{
            "order_currency": base_currency(o.market), "payment_currency": "KRW", "order_id": o.uuid,
            "order_date": _micros(o), "type": o.side.value, "watch_price": "0",
            "units": dec_str(o.volume), "units_remaining": dec_str(o.remaining_volume), "price": dec_str(o.price),
        } for o in open_orders]})

    def _detail(self, order: SimOrder) -> dict:
        return {
            "order_date": _micros(order), "type": order.side.value, "order_status": _STATUS[order.state],
            "order_currency": base_currency(order.market), "payment_currency": "KRW", "watch_price": "0",
            "order_price": dec_str(order.price), "order_qty": dec_str(order.volume),
            "cancel_date": "", "cancel_type": "", "symbol": to_legacy_symbol(order.market),
            "contract": [{"transaction_date": _micros(order), "price": dec_str(t.price), "units": dec_str(t.volume),
                          "fee_currency": "KRW", "fee": dec_str(t.fee), "total": dec_str(t.funds)}
                         for t in order.trades],
        }


def _micros(order: SimOrder) -> str:
    return str(int(datetime.fromisoformat(order.created_at).timestamp() * 1_000_000))
