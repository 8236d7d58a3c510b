"""Wire encodings of the sim's books: pure functions from sats ladders to venue frames.

Upbit and Bithumb 2.0 WebSocket ``orderbook`` (full top-N snapshot every message; DEFAULT or
SIMPLE field names; JSON numbers)::

    {"type":"orderbook","code":"KRW-BTC","timestamp":1704067200123,"total_ask_size":4.79,
     "total_bid_size":2.65,"orderbook_units":[{"ask_price":58131000.0,"bid_price":58130000.0,
     "ask_size":0.0173,"bid_size":0.1213}, ...],"stream_type":"REALTIME","level":0}

A row whose side has fewer levels than the other carries price 0 and size 0 for that side.

Bithumb legacy pubwss ``orderbookdepth``: changed levels only, ``quantity`` the new absolute
resting size, ``"0"`` removes the level, ``datetime`` in microseconds, all strings::

    {"type":"orderbookdepth","content":{"list":[{"symbol":"BTC_KRW","orderType":"ask",
     "price":"140150000","quantity":"0.0123","total":"2"}],"datetime":"1628835823604483"}}
"""
from __future__ import annotations

import orjson

from karb.rules import to_legacy_symbol
from karb.sim.grid import to_float, to_str

Ladder = tuple[tuple[int, int], ...]

_DEFAULT = ("type", "code", "timestamp", "total_ask_size", "total_bid_size", "orderbook_units",
            "stream_type", "level", "ask_price", "bid_price", "ask_size", "bid_size")
_SIMPLE = ("ty", "cd", "tms", "tas", "tbs", "obu", "st", "lv", "ap", "bp", "as", "bs")
FORMATS = {"DEFAULT": _DEFAULT, "SIMPLE": _SIMPLE}
LEVEL_COUNTS = (1, 5, 15, 30)


def orderbook_frame(market: str, bids: Ladder, asks: Ladder, ts_ms: int, fmt: str = "DEFAULT",
                    count: int = 30, stream_type: str = "REALTIME") -> bytes:
    """One Upbit/Bithumb 2.0 orderbook message (bytes of UTF-8 JSON) with ``count`` rows."""
    k = FORMATS[fmt]
    bids, asks = bids[:count], asks[:count]
    rows = max(len(bids), len(asks))
    units = []
    for i in range(rows):
        ap, asz = asks[i] if i < len(asks) else (0, 0)
        bp, bsz = bids[i] if i < len(bids) else (0, 0)
        units.append({k[8]: ap / 1e8, k[9]: bp / 1e8, k[10]: asz / 1e8, k[11]: bsz / 1e8})
    return orjson.dumps({
        k[0]: "orderbook", k[1]: market, k[2]: ts_ms,
        k[3]: to_float(sum(s for _, s in asks)), k[4]: to_float(sum(s for _, s in bids)),
        k[5]: units, k[6]: stream_type, k[7]: 0,
    })


def legacy_depth_frame(market: str, old_bids: Ladder, old_asks: Ladder, bids: Ladder, asks: Ladder,
                       ts_us: int) -> bytes | None:
    """The pubwss ``orderbookdepth`` delta from the old book to the new; None if unchanged."""
    symbol = to_legacy_symbol(market)
    items: list[dict] = []
    for order_type, old, new in (("ask", old_asks, asks), ("bid", old_bids, bids)):
        old_map = dict(old)
        new_map = dict(new)
        for price, size in new:
            if old_map.get(price) != size:
                items.append(_depth_item(symbol, order_type, price, size))
        for price, _ in old:
            if price not in new_map:
                items.append(_depth_item(symbol, order_type, price, 0))
    if not items:
        return None
    return orjson.dumps({"type": "orderbookdepth", "content": {"list": items, "datetime": str(ts_us)}})


def _depth_item(symbol: str, order_type: str, price: int, size: int) -> dict:
    return {"symbol": symbol, "orderType": order_type, "price": to_str(price), "quantity": to_str(size),
            "total": str(1 + size % 5) if size else "0"}


def legacy_orderbook_body(market: str, bids: Ladder, asks: Ladder, ts_ms: int, count: int) -> dict:
    """``GET /public/orderbook/{BASE}_KRW`` response body (legacy envelope, string numbers)."""
    quote, base = market.split("-", 1)
    return {"status": "0000", "data": {
        "timestamp": str(ts_ms), "payment_currency": quote, "order_currency": base,
        "bids": [{"quantity": to_str(s), "price": to_str(p)} for p, s in bids[:count]],
        "asks": [{"quantity": to_str(s), "price": to_str(p)} for p, s in asks[:count]],
    }}


def rest_orderbook_entry(market: str, bids: Ladder, asks: Ladder, ts_ms: int, count: int) -> dict:
    """One element of ``GET /v1/orderbook`` (Upbit and Bithumb 2.0: JSON numbers)."""
    frame = orjson.loads(orderbook_frame(market, bids, asks, ts_ms, "DEFAULT", count))
    return {"market": market, "timestamp": ts_ms, "total_ask_size": frame["total_ask_size"],
            "total_bid_size": frame["total_bid_size"], "orderbook_units": frame["orderbook_units"],
            "level": 0}
