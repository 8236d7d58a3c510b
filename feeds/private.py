"""Private order and asset streams (``myOrder`` / ``myAsset``) of Upbit and Bithumb 2.0.

Upbit ``wss://api.upbit.com/websocket/v1/private`` and Bithumb ``wss://ws-api.bithumb.com/
websocket/v2/private`` take the JWT in the upgrade request's ``Authorization: Bearer`` header
(spec/exchanges.md §4.1, §4.3). The token comes from the caller (``headers`` of the
``FeedConnection``), so this module needs no key and imports nothing from ``karb``. One
request subscribes both types on one connection (a new request replaces the old one); a text
``PING`` makes the venue answer ``{"status":"UP"}`` every 10 s, which keeps the connection's
watchdog fed on a stream that is otherwise silent while nothing trades.

Bodies, DEFAULT format (numbers are JSON numbers; read exactly, as ``Decimal``):

* Upbit ``myOrder`` (docs.upbit.com/kr/reference/websocket-myorder): ``type, code, uuid,
  ask_bid (ASK|BID), order_type, state (wait|watch|trade|done|cancel|prevented), trade_uuid,
  price`` (the trade's price when ``state`` is ``trade``), ``avg_price, volume`` (the trade's
  volume when ``trade``), ``remaining_volume, executed_volume, trades_count, reserved_fee,
  remaining_fee, paid_fee, locked, executed_funds, trade_fee, is_maker, identifier,
  trade_timestamp, order_timestamp, timestamp, stream_type``. [U] ``executed_funds``,
  ``trade_fee`` and ``identifier`` are in ccxt's parser and the sim, not in every doc copy.
* Bithumb ``myOrder`` v2 (apidocs.bithumb.com "Private v2 마이그레이션 가이드"): v1's names
  with ``uuid→order_id, trade_uuid→trade_id, ask_bid→side`` (``buy|sell``), ``price→
  order_price/trade_price, volume→order_quantity/trade_quantity, remaining_volume→
  remaining_quantity, executed_volume→executed_quantity, executed_funds→executed_amount``;
  ``client_order_id, state, paid_fee, trade_timestamp, timestamp`` unchanged;
  ``trades_count`` removed; ``trade_amount`` added. [U] the name of a trade's fee.
* ``myAsset`` (both; Bithumb v2 unchanged from v1): ``type, asset_uuid, assets[{currency,
  balance, locked}], asset_timestamp, timestamp, stream_type``; ``balance`` is the free amount.
  Upbit warns that an account's very first ``myAsset`` subscription may stay silent for some
  minutes (docs.upbit.com/kr/reference/websocket-myasset): balances must never depend on it
  alone (``karb.balance_sync`` keeps REST as the baseline and the check).
* ``{"error":{"name":"INVALID_AUTH"|...,"message"}}``: the request or the token was refused.
  [U] whether Upbit refuses a bad token at the upgrade (HTTP 401) or with this frame and a
  close; both end the connection and back off.

The sink (all calls from the stream's thread)::

    sink.on_order(event: OrderEvent) -> None
    sink.on_asset(event: AssetEvent) -> None
    sink.on_stream(up: bool, reason: str) -> None
        up: the venue answered on this connection (its first frame that is not an error,
        usually the ``{"status":"UP"}`` to the ``PING`` sent after subscribing); down: the
        connection is gone (events may have been missed while it was).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal

from feeds.protocol import FrameError, StreamRejected

UPBIT_PRIVATE_URL = "wss://api.upbit.com/websocket/v1/private"
BITHUMB_PRIVATE_URL = "wss://ws-api.bithumb.com/websocket/v2/private"
ZERO = Decimal(0)
_AUTH_ERRORS = frozenset({"INVALID_AUTH", "invalid_access_key", "jwt_verification",
                          "expired_access_key", "no_authorization_ip", "out_of_scope"})

# DEFAULT and SIMPLE names of the fields read, per flavour.
_UPBIT = {
    "type": ("type", "ty"), "code": ("code", "cd"), "order_id": ("uuid", "uid"),
    "client_id": ("identifier", "id"), "side": ("ask_bid", "ab"), "order_type": ("order_type", "ot"),
    "state": ("state", "s"), "trade_id": ("trade_uuid", "tuid"), "trade_price": ("price", "p"),
    "trade_volume": ("volume", "v"), "executed_volume": ("executed_volume", "ev"),
    "remaining_volume": ("remaining_volume", "rv"), "executed_funds": ("executed_funds", "ef"),
    "paid_fee": ("paid_fee", "pf"), "trade_fee": ("trade_fee", "tf"),
    "timestamp": ("timestamp", "tms"), "trade_timestamp": ("trade_timestamp", "ttms"),
}
_BITHUMB = {
    "type": ("type", "ty"), "code": ("code", "cd"), "order_id": ("order_id", "oid"),
    "client_id": ("client_order_id", "coid"), "side": ("side", "sd"),
    "order_type": ("order_type", "ot"), "state": ("state", "s"), "trade_id": ("trade_id", "tid"),
    "trade_price": ("trade_price", "tp"), "trade_volume": ("trade_quantity", "tq"),
    "executed_volume": ("executed_quantity", "eq"), "remaining_volume": ("remaining_quantity", "rq"),
    "executed_funds": ("executed_amount", "ea"), "paid_fee": ("paid_fee", "pf"),
    "trade_fee": ("trade_fee", "tf"), "timestamp": ("timestamp", "tms"),
    "trade_timestamp": ("trade_timestamp", "ttms"),
}
_SIDES = {"BID": "bid", "ASK": "ask", "buy": "bid", "sell": "ask", "bid": "bid", "ask": "ask"}
STATES = frozenset({"wait", "watch", "trade", "done", "cancel", "prevented"})


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One ``myOrder`` message. Amounts are cumulative for the order except ``trade_*``,
    which describe the one execution a ``trade`` event reports."""

    venue: str
    market: str
    order_id: str
    client_id: str | None
    side: str  # bid | ask
    order_type: str
    state: str  # wait | watch | trade | done | cancel | prevented
    executed_volume: Decimal
    remaining_volume: Decimal | None
    executed_funds: Decimal | None
    paid_fee: Decimal | None
    trade_id: str | None = None
    trade_price: Decimal | None = None
    trade_volume: Decimal | None = None
    trade_fee: Decimal | None = None
    timestamp_ms: int = 0
    recv_ns: int = 0


@dataclass(frozen=True, slots=True)
class AssetEvent:
    """One ``myAsset`` message: the currencies that changed, each (free, locked)."""

    venue: str
    balances: dict[str, tuple[Decimal, Decimal]]
    timestamp_ms: int
    recv_ns: int


def _num(value) -> Decimal | None:
    if value is None or value == "":
        return None
    result = value if isinstance(value, Decimal) else Decimal(str(value))
    if not result.is_finite() or result < 0:
        raise ValueError(f"not a usable amount: {value!r}")
    return result


def _get(body: dict, names: tuple[str, str]):
    value = body.get(names[0])
    return body.get(names[1]) if value is None else value


def decode(data: bytes | str, venue: str, flavour: str, recv_ns: int = 0):
    """Decode one frame: an ``OrderEvent``, an ``AssetEvent``, or None (status/heartbeat).

    Raises ``StreamRejected`` for an error frame and ``FrameError`` for anything unusable.
    """
    try:
        body = json.loads(data, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise FrameError("not JSON", ()) from None
    if isinstance(body, list) and len(body) == 1:  # JSON_LIST / SIMPLE_LIST wrap one message
        body = body[0]
    if not isinstance(body, dict):
        raise FrameError("not an object", ())
    if "status" in body and len(body) == 1:
        return None  # {"status":"UP"}
    if "error" in body:
        error = body["error"] if isinstance(body["error"], dict) else {}
        name = str(error.get("name", "?"))
        raise StreamRejected(f"{name}: {error.get('message', '')}", ())
    names = _UPBIT if flavour == "upbit" else _BITHUMB
    kind = _get(body, names["type"])
    try:
        if kind == "myOrder":
            return _order(body, names, venue, recv_ns)
        if kind == "myAsset":
            return _asset(body, venue, recv_ns)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise FrameError(f"bad {kind}: {type(exc).__name__}: {exc}", ()) from None
    raise FrameError(f"unexpected type {kind!r}", ())


def _order(body: dict, names: dict, venue: str, recv_ns: int) -> OrderEvent:
    state = _get(body, names["state"])
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}")
    order_id = _get(body, names["order_id"])
    if not order_id:
        raise KeyError("order id")
    trade = state == "trade"
    client_id = _get(body, names["client_id"])
    return OrderEvent(
        venue=venue, market=str(_get(body, names["code"])), order_id=str(order_id),
        client_id=str(client_id) if client_id else None,
        side=_SIDES[_get(body, names["side"])], order_type=str(_get(body, names["order_type"])),
        state=state, executed_volume=_num(_get(body, names["executed_volume"])) or ZERO,
        remaining_volume=_num(_get(body, names["remaining_volume"])),
        executed_funds=_num(_get(body, names["executed_funds"])),
        paid_fee=_num(_get(body, names["paid_fee"])),
        trade_id=str(_get(body, names["trade_id"])) if trade and _get(body, names["trade_id"]) else None,
        trade_price=_num(_get(body, names["trade_price"])) if trade else None,
        trade_volume=_num(_get(body, names["trade_volume"])) if trade else None,
        trade_fee=_num(_get(body, names["trade_fee"])) if trade else None,
        timestamp_ms=int(_get(body, names["timestamp"]) or 0), recv_ns=recv_ns)


def _asset(body: dict, venue: str, recv_ns: int) -> AssetEvent:
    assets = body.get("assets", body.get("ast"))
    if not isinstance(assets, list):
        raise TypeError("assets is not a list")
    balances = {}
    for item in assets:
        currency = str(item.get("currency", item.get("cu")))
        free = _num(item.get("balance", item.get("b")))
        locked = _num(item.get("locked", item.get("l")))
        if free is None:
            raise KeyError(f"{currency} balance")
        balances[currency] = (free, locked or ZERO)
    ts = body.get("asset_timestamp", body.get("asttms")) or body.get("timestamp", body.get("tms")) or 0
    return AssetEvent(venue, balances, int(ts), recv_ns)


def subscribe_request(markets: list[str] | None = None, fmt: str = "DEFAULT") -> str:
    """``[{"ticket"},{"type":"myOrder","codes"},{"type":"myAsset"},{"format"}]``; ``myAsset``
    takes no ``codes`` (Upbit answers WRONG_FORMAT to one)."""
    order: dict = {"type": "myOrder"}
    if markets:
        order["codes"] = list(markets)
    return json.dumps([{"ticket": f"karb-private-{uuid.uuid4()}"}, order, {"type": "myAsset"},
                       {"format": fmt}], separators=(",", ":"))


class PrivateStreamProtocol:
    """``myOrder`` + ``myAsset`` on one connection, for ``FeedConnection`` (its thread only).

    ``flavour``: ``"upbit"`` (v1 field names) or ``"bithumb"`` (v2 field names).
    """

    ping_text = "PING"  # re-sent every ping interval: {"status":"UP"} keeps the watchdog fed

    def __init__(self, sink, venue: str, flavour: str, markets: list[str] | None = None,
                 fmt: str = "DEFAULT") -> None:
        if flavour not in ("upbit", "bithumb"):
            raise ValueError(f"flavour must be upbit or bithumb, was {flavour!r}")
        self.sink = sink
        self.venue = venue
        self.flavour = flavour
        self.markets = list(markets or [])
        self.fmt = fmt
        self.orders = self.assets = 0
        self._up = False

    def subscribe_messages(self) -> list[str]:
        return [subscribe_request(self.markets, self.fmt), "PING"]

    def on_connected(self, now_ns: int) -> None:
        self._up = False  # up once the venue answers: an accepted token, not just a socket

    def handle(self, data: bytes, recv_ns: int) -> None:
        event = decode(data, self.venue, self.flavour, recv_ns)
        if not self._up:
            self._up = True
            self.sink.on_stream(True, "subscribed")
        if isinstance(event, OrderEvent):
            self.orders += 1
            self.sink.on_order(event)
        elif isinstance(event, AssetEvent):
            self.assets += 1
            self.sink.on_asset(event)

    def on_bad_frame(self, markets) -> None:
        pass  # an order event lost is caught by the REST fallback, which every order keeps

    def poll(self, now_ns: int) -> None:
        pass

    def on_disconnected(self, reason: str) -> None:
        self.sink.on_stream(False, reason)

    def close(self) -> None:
        pass
