"""Upbit WebSocket orderbook (``/websocket/v1``), DEFAULT or SIMPLE format. Bithumb 2.0's
public WebSocket speaks the same format, so it uses this protocol too.

Every orderbook message is a full snapshot of the top N levels (N = 1, 5, 15 or 30, asked for
with a ``KRW-BTC.15`` code suffix; Upbit only). A real SIMPLE frame, trimmed to two rows
(tests/data/spec/captures/cryptofeed_UPBIT.ws.62.0)::

    {"ty":"orderbook","cd":"KRW-LAMB","tms":1618678262640,"tas":25752275.55,"tbs":14407925.2,
     "obu":[{"ap":127.0,"bp":126.0,"as":280460.37885666,"bs":688682.44561413},
            {"ap":128.0,"bp":125.0,"as":502824.98156754,"bs":1924299.53689703}],"st":"REALTIME"}

DEFAULT spells the same fields ``type, code, timestamp, total_ask_size, total_bid_size,
orderbook_units[ask_price, bid_price, ask_size, bid_size], stream_type``. Rows pair the i-th
ask with the i-th bid, best first; a thin side is padded with price 0, size 0. Bithumb 2.0
may send ``timestamp`` as a string of microseconds (ccxt); both are accepted. Frames may be
binary or text. ``{"status":"UP"}`` answers a text PING; ``{"error":{...}}`` reports a bad
request (docs.upbit.com, "WebSocket 사용 및 에러 안내").

Decoding: a frame is first decoded by ``msgspec`` into a typed struct of the fields used
(the others skipped unread, no dict per row): ~2 us less than ``orjson.loads`` plus reading
four columns out of 15 row dicts. A frame that does not fit exactly (a status or error message,
an unknown code, a string or null where a number belongs) is decoded again by the general
``orjson`` path, which reports what is wrong as before; the fast path changes only the cost.
"""
from __future__ import annotations

import uuid
from operator import attrgetter

import msgspec
import orjson

from feeds.protocol import FrameError, check_not_ahead

_FIELDS = {
    "DEFAULT": ("type", "code", "timestamp", "orderbook_units",
                "bid_price", "bid_size", "ask_price", "ask_size"),
    "SIMPLE": ("ty", "cd", "tms", "obu", "bp", "bs", "ap", "as"),
}
UPBIT_LEVEL_COUNTS = (1, 5, 15, 30)
_COLUMNS = ("bid_price", "bid_size", "ask_price", "ask_size")
_bid_prices, _bid_sizes, _ask_prices, _ask_sizes = map(attrgetter, _COLUMNS)
_US_THRESHOLD = 100_000_000_000_000  # a timestamp above this is in microseconds


def _snapshot_decoder(fmt: str):
    """``decode(bytes)`` -> a typed orderbook frame in ``fmt``'s field names (module docstring);
    raises ``msgspec.DecodeError`` for anything else. Strict: a number must be a number."""
    k_type, k_code, k_ts, k_units, *k_columns = _FIELDS[fmt]
    unit = msgspec.defstruct("Unit", [(name, float) for name in _COLUMNS],
                             rename=dict(zip(_COLUMNS, k_columns)))
    frame = msgspec.defstruct("Orderbook", [("type", str), ("code", str), ("ts", int | str),
                                            ("units", list[unit])],
                              rename={"type": k_type, "code": k_code, "ts": k_ts, "units": k_units})
    return msgspec.json.Decoder(frame).decode


_DECODERS = {fmt: _snapshot_decoder(fmt) for fmt in _FIELDS}


def exchange_ms(value: object) -> int:
    """A venue timestamp (ms or us; int, float or numeric string) in milliseconds."""
    ts = value if value.__class__ is int else int(value)  # ValueError / TypeError if not numeric
    return ts // 1000 if ts > _US_THRESHOLD else ts


class UpbitBookProtocol:
    """Orderbook subscription and decoding for one connection. Called from the feed thread.

    Parameters
    ----------
    sink : the feeds sink (see ``feeds``)
    markets : ``KRW-BTC`` style codes, all on this connection
    levels : rows per snapshot; sent as a code suffix when ``level_suffix`` (Upbit)
    fmt : ``"DEFAULT"`` or ``"SIMPLE"``
    venue : name for logs and stats (``"upbit"`` or ``"bithumb"``)
    """

    def __init__(self, sink, markets: list[str], levels: int = 15, fmt: str = "DEFAULT",
                 venue: str = "upbit", level_suffix: bool = True) -> None:
        if fmt not in _FIELDS:
            raise ValueError(f"format must be DEFAULT or SIMPLE, was {fmt!r}")
        self.venue = venue
        self.markets = frozenset(markets)
        self._codes = [f"{m}.{levels}" if level_suffix else m for m in markets]
        self._fmt = fmt
        self._decode = _DECODERS[fmt]
        (self._k_type, self._k_code, self._k_ts, self._k_units,
         self._k_bp, self._k_bs, self._k_ap, self._k_as) = _FIELDS[fmt]
        self._sink = sink
        self._on_snapshot = sink.on_snapshot
        self._on_columns = getattr(sink, "on_snapshot_columns", None)

    def subscribe_messages(self) -> list[str]:
        request = [{"ticket": f"karb-{uuid.uuid4()}"},
                   {"type": "orderbook", "codes": self._codes},
                   {"format": self._fmt}]
        return [orjson.dumps(request).decode()]

    def handle(self, data: bytes, recv_ns: int) -> None:
        # Fast path: a well-formed orderbook frame of one of our markets (module docstring).
        try:
            frame = self._decode(data)
        except msgspec.DecodeError:
            return self._handle_general(data, recv_ns)
        market = frame.code
        if frame.type != "orderbook" or market not in self.markets:
            return self._handle_general(data, recv_ns)
        ts = frame.ts
        if ts.__class__ is not int or ts > _US_THRESHOLD:
            try:
                ts = exchange_ms(ts)
            except ValueError:
                raise FrameError("mistyped field", (market,)) from None
        units = frame.units
        check_not_ahead(ts, (market,))
        if self._on_columns is not None:
            self._on_columns(market, list(map(_bid_prices, units)), list(map(_bid_sizes, units)),
                             list(map(_ask_prices, units)), list(map(_ask_sizes, units)), ts,
                             recv_ns)
        else:
            self._on_snapshot(market, [(u.bid_price, u.bid_size) for u in units],
                              [(u.ask_price, u.ask_size) for u in units], ts, recv_ns)

    def _handle_general(self, data: bytes, recv_ns: int) -> None:
        # Any frame; says what is wrong with a bad one and which markets it concerned.
        try:
            msg = orjson.loads(data)
            kind = msg.get(self._k_type)
        except orjson.JSONDecodeError:
            raise FrameError("malformed JSON") from None
        except AttributeError:
            raise FrameError("not a JSON object", ()) from None
        if kind != "orderbook":
            self._other(msg, kind)
            return
        market = msg.get(self._k_code)
        if market not in self.markets:
            raise FrameError(f"unknown code {market!r}", ())
        try:
            units = msg[self._k_units]
            ts = msg[self._k_ts]
            if ts.__class__ is not int or ts > _US_THRESHOLD:
                ts = exchange_ms(ts)
            k = self._k_bp
            bid_prices = [u[k] for u in units]
            k = self._k_bs
            bid_sizes = [u[k] for u in units]
            k = self._k_ap
            ask_prices = [u[k] for u in units]
            k = self._k_as
            ask_sizes = [u[k] for u in units]
        except KeyError as exc:
            raise FrameError(f"missing field {exc}", (market,)) from None
        except (TypeError, ValueError):
            raise FrameError("mistyped field", (market,)) from None
        check_not_ahead(ts, (market,))
        if self._on_columns is not None:
            self._on_columns(market, bid_prices, bid_sizes, ask_prices, ask_sizes, ts, recv_ns)
        else:
            self._on_snapshot(market, list(zip(bid_prices, bid_sizes)),
                              list(zip(ask_prices, ask_sizes)), ts, recv_ns)

    def _other(self, msg: dict, kind: object) -> None:
        if kind is None and msg.get("status") == "UP":
            return
        error = msg.get("error")
        if kind is None and isinstance(error, dict):
            raise FrameError(f"venue error {error.get('name')}: {error.get('message')}", ())
        raise FrameError(f"unexpected message type {kind!r}", ())

    def on_connected(self, now_ns: int) -> None:
        pass  # the venue sends a SNAPSHOT of every code right after subscribing

    def on_bad_frame(self, markets: tuple[str, ...] | None) -> None:
        # A snapshot feed loses nothing it cannot get back: the next message of that market
        # replaces the whole book. Until then the book it could not read is untrustworthy.
        for market in markets or ():
            self._sink.on_reset(market, "bad frame")

    def poll(self, now_ns: int) -> None:
        pass

    def on_disconnected(self, reason: str) -> None:
        self._sink.on_reset(None, reason)

    def close(self) -> None:
        pass
