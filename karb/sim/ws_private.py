"""The simulated venues' private WebSocket: ``myOrder`` and ``myAsset`` (spec §4.1, §4.3).

Upbit at ``/websocket/v1/private`` (v1 field names), Bithumb 2.0 at ``/websocket/v2/private``
(v2 names: ``order_id``, ``side`` buy/sell, ``*_quantity``, ``executed_amount``...). The JWT is
read from the upgrade request's ``Authorization`` header and checked as the REST layer checks
it (``karb.sim.auth.verify_jwt``: key, signature, fresh nonce, Bithumb's ``timestamp``); a
missing or bad token gets ``{"error":{"name":"INVALID_AUTH","message"}}`` and a close (1008).
[U] whether the venues refuse at the upgrade instead; clients must handle both.

Events come from ``SimExchange`` listeners, under the exchange's lock, so they follow the
order's real sequence: ``wait`` when the order is registered, one ``trade`` per execution
(``price``/``volume`` of that execution, cumulative ``executed_*``), then ``done``/``cancel``;
a ``myAsset`` with the currencies an order locked, paid or received. The same ids and amounts
as the REST answers, at the same moment: an order whose fill reads do not show it yet
(``fill_visible_ms``, Upbit's "acknowledged, fill later") has its later events held until its
fills show on REST too, so the stream is never ahead of what a read of the order says (the
matching engine publishes both views of one execution). Numbers are JSON numbers written from
the exact ``Decimal`` digits. Only
the DEFAULT format is produced. Requests replace the connection's subscriptions, as on the
public socket; ``myAsset`` with ``codes`` is ``WRONG_FORMAT`` (Upbit's documented rule).
"""
from __future__ import annotations

import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import orjson
from websockets.sync.server import ServerConnection

from karb.model import Side
from karb.sim.auth import AuthFailure, NonceBook, verify_jwt
from karb.sim.exchange import SimExchange
from karb.sim.orders import SimOrder, SimTrade
from karb.sim.ws import _ERRORS, Client, WsHub

UPBIT_PRIVATE_PATH = "/websocket/v1/private"
BITHUMB_PRIVATE_PATH = "/websocket/v2/private"


@dataclass(eq=False)
class PrivateClient(Client):
    access_key: str = ""
    orders: frozenset[str] | None = None  # subscribed markets; empty = all; None = not subscribed
    assets: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class PrivateHub(WsHub):
    """One venue's private endpoint; ``flavour`` ``upbit`` or ``bithumb`` picks names and auth."""

    def __init__(self, name: str, flavour: str, exchange: SimExchange, faults, idle_timeout_s: float,
                 ts_window_ms: int | None = None):
        super().__init__(name, "upbit", [], faults, threading.Lock(), lambda m: ((), (), 0),
                         idle_timeout_s)
        self.private_flavour = flavour
        self.exchange = exchange
        self.nonces = NonceBook()
        self.algs = ("HS256", "HS512") if flavour == "upbit" else ("HS256",)
        self.ts_window_ms = ts_window_ms if flavour == "bithumb" else None
        self._by_key: dict[str, tuple[PrivateClient, ...]] = {}
        self._keys_lock = threading.Lock()  # never held while taking the exchange's lock
        self._held: dict[str, list] = {}  # order uuid -> [(client, frame)] until its fills show
        self._held_lock = threading.Lock()
        self.events = 0
        exchange.add_listener(self._on_exchange)

    # --- connections -------------------------------------------------------------------------
    def _new_client(self, conn: ServerConnection) -> Client | None:
        try:
            account = verify_jwt(conn.request.headers.get("Authorization"), self.exchange.account, [],
                                 self.nonces, self.algs, int(time.time() * 1000), self.ts_window_ms)
        except AuthFailure as failure:
            conn.send(orjson.dumps({"error": {"name": "INVALID_AUTH", "message": failure.message}}))
            conn.close(1008, "invalid auth")
            return None
        client = PrivateClient(conn, access_key=account.access_key)
        with self._keys_lock:
            self._by_key[account.access_key] = self._by_key.get(account.access_key, ()) + (client,)
        return client

    def _unsubscribe(self, client: Client) -> None:
        super()._unsubscribe(client)
        if isinstance(client, PrivateClient):
            with self._keys_lock:
                key = client.access_key
                self._by_key[key] = tuple(c for c in self._by_key.get(key, ()) if c is not client)

    def _on_request(self, client: Client, message: bytes | str) -> None:
        assert isinstance(client, PrivateClient)
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            request = None
        error, orders, assets = _parse_private_request(request)
        if error:
            client.out.put(orjson.dumps({"error": {"name": error, "message": _ERRORS[error]}}))
            return
        with client.lock:
            client.orders, client.assets = orders, assets

    # --- events (exchange lock held) -------------------------------------------------------------
    def _on_exchange(self, kind: str, access_key: str, data) -> None:
        with self._keys_lock:
            clients = self._by_key.get(access_key, ())
        if not clients:
            return
        if kind == "order":
            order, trade = data
            frame = (self._upbit_order if self.private_flavour == "upbit" else self._bithumb_order)(order, trade)
            wanted = [c for c in clients if c.orders is not None and (not c.orders or order.market in c.orders)]
            if self._hold(order, trade, [(c, frame) for c in wanted]):
                return
        else:
            frame = _render({"type": "myAsset", "asset_uuid": str(uuidlib.uuid4()),
                             "assets": [{"currency": c, "balance": free, "locked": locked}
                                        for c, (free, locked) in sorted(data.items())],
                             "asset_timestamp": _now_ms(), "timestamp": _now_ms(), "stream_type": "REALTIME"})
            wanted = [c for c in clients if c.assets]
        for client in wanted:
            self.events += 1
            self._enqueue(client, frame)

    def _hold(self, order: SimOrder, trade: SimTrade | None, frames: list) -> bool:
        """Hold an order's events after its registration while reads still show it as just
        accepted; one timer per order releases them in order when its fills show."""
        delay = order.fill_visible_at - time.monotonic()
        with self._held_lock:
            held = self._held.get(order.uuid)
            if held is not None:
                held.extend(frames)
                return True
            if delay <= 0 or (trade is None and order.state == "wait" and not order.trades):
                return False
            self._held[order.uuid] = list(frames)
        timer = threading.Timer(delay, self._release, args=(order.uuid,))
        timer.name, timer.daemon = f"sim-{self.name}-ws-hold", True
        timer.start()
        return True

    def _release(self, uuid: str) -> None:
        with self._held_lock:
            frames = self._held.pop(uuid, [])
        for client, frame in frames:
            self.events += 1
            self._enqueue(client, frame)

    @staticmethod
    def _upbit_order(order: SimOrder, trade: SimTrade | None) -> bytes:
        state = "trade" if trade is not None else order.state
        return _render({
            "type": "myOrder", "code": order.market, "uuid": order.uuid,
            "ask_bid": "BID" if order.side is Side.BUY else "ASK", "order_type": order.ord_type,
            "state": state, "trade_uuid": trade.uuid if trade else None,
            "price": trade.price if trade else order.price, "avg_price": _avg(order),
            "volume": trade.volume if trade else order.volume,
            "remaining_volume": _remaining(order), "executed_volume": order.executed_volume,
            "trades_count": len(order.trades), "reserved_fee": order.reserved_fee,
            "remaining_fee": _remaining_fee(order), "paid_fee": order.paid_fee, "locked": order.locked,
            "executed_funds": order.executed_funds, "time_in_force": order.tif,
            "trade_fee": trade.fee if trade else None, "is_maker": trade.maker if trade else None,
            "identifier": order.identifier, "smp_type": None,
            "trade_timestamp": _ms(trade.created_at) if trade else None,
            "order_timestamp": order.created_ns // 1_000_000, "timestamp": _now_ms(),
            "stream_type": "REALTIME"})

    @staticmethod
    def _bithumb_order(order: SimOrder, trade: SimTrade | None) -> bytes:
        state = "trade" if trade is not None else order.state
        return _render({
            "type": "myOrder", "code": order.market, "order_id": order.uuid,
            "client_order_id": order.identifier, "side": "buy" if order.side is Side.BUY else "sell",
            "order_type": order.ord_type, "state": state, "trade_id": trade.uuid if trade else None,
            "order_price": order.price, "trade_price": trade.price if trade else None,
            "order_quantity": order.volume, "trade_quantity": trade.volume if trade else None,
            "order_amount": order.price if order.volume is None else Decimal(0),
            "trade_amount": trade.funds if trade else None,
            "remaining_quantity": _remaining(order), "executed_quantity": order.executed_volume,
            "executed_amount": order.executed_funds, "reserved_fee": order.reserved_fee,
            "remaining_fee": _remaining_fee(order), "paid_fee": order.paid_fee,
            "trade_fee": trade.fee if trade else None, "time_in_force": order.tif,
            "cancel_type": order.cancel_type, "trade_timestamp": _ms(trade.created_at) if trade else None,
            "order_timestamp": order.created_ns // 1_000_000, "timestamp": _now_ms(),
            "stream_type": "REALTIME"})


def _parse_private_request(request: object) -> tuple[str | None, frozenset[str] | None, bool]:
    if not isinstance(request, list) or not all(isinstance(x, dict) for x in request):
        return "WRONG_FORMAT", None, False
    if not any("ticket" in x for x in request):
        return "NO_TICKET", None, False
    types = [x for x in request if "type" in x]
    if not types:
        return "NO_TYPE", None, False
    orders: frozenset[str] | None = None
    assets = False
    for item in types:
        codes = item.get("codes")
        if item["type"] == "myOrder":
            if codes is not None and (not isinstance(codes, list) or not all(isinstance(c, str) for c in codes)):
                return "INVALID_PARAM", None, False
            orders = frozenset(codes or ())
        elif item["type"] == "myAsset":
            if codes is not None:
                return "WRONG_FORMAT", None, False
            assets = True
        else:
            return "INVALID_PARAM", None, False
    return None, orders, assets


def _remaining(order: SimOrder) -> Decimal | None:
    if order.volume is None:
        return None
    return order.volume - order.executed_volume  # a cancelled order keeps it, as on the venues


def _remaining_fee(order: SimOrder) -> Decimal:
    return max(Decimal(0), order.reserved_fee - order.paid_fee) if order.state == "wait" else Decimal(0)


def _avg(order: SimOrder) -> Decimal | None:
    return (order.executed_funds / order.executed_volume).normalize() if order.executed_volume else None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _ms(created_at: str) -> int:
    try:
        return int(datetime.fromisoformat(created_at).timestamp() * 1000)
    except ValueError:
        return _now_ms()


def _render(body: dict) -> bytes:
    """JSON with every ``Decimal`` written as a JSON number of its exact digits."""
    return _value(body).encode()


def _value(value) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{orjson.dumps(k).decode()}:{_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return orjson.dumps(value).decode()
