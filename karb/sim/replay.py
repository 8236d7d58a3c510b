"""Replay recorded venue frames in place of the generator.

Recording format (written by ``feeds.recorder.FrameRecorder``; this is the agreed contract):
a gzip file of JSON lines, one object per received frame::

    {"t": recv_time_ns, "venue": "upbit", "frame": "<text>"}

``t`` is the receiver's ``time.monotonic_ns()`` (only differences matter), ``venue`` is
``upbit`` or ``bithumb``, ``frame`` the frame's UTF-8 text exactly as received. ``path`` is one
file or a directory of them (read in name order, as ``karb record`` names them by hour); a
bad record raises ``feeds.RecordingError`` (file, line, why), a truncated last file is read up
to its cut with a warning. Understood
frames: Upbit / Bithumb 2.0 ``orderbook`` snapshots (DEFAULT or SIMPLE names, also inside a
``*_LIST`` array) and Bithumb legacy ``orderbookdepth`` deltas (applied to a book per market,
so the sim republishes full books). Everything else (trades, acks, status, frames that are not JSON) is skipped and counted;
markets not configured are skipped. Times are played back relative to the first frame, scaled
by ``sim.replay_speed`` in the market thread.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Iterator

import orjson
from loguru import logger

from feeds.recorder import read_recordings
from karb.model import Venue
from karb.rules import to_upbit_symbol
from karb.sim.grid import from_decimal
from karb.sim.market import BookEvent


class ReplaySource:
    def __init__(self, path: str, markets: list[str], depth: int = 30):
        self.path = path
        self.markets = set(markets)
        self.depth = depth
        self.skipped = 0
        self._legacy: dict[str, tuple[dict[int, int], dict[int, int]]] = {}

    def events(self) -> Iterator[BookEvent]:
        """Yield one ``BookEvent`` per usable frame, ``t_ns`` relative to the first line."""
        origin = None
        for t_ns, venue, text in read_recordings(self.path, truncated_ok=True):
            try:
                message = orjson.loads(text)
            except orjson.JSONDecodeError:
                self.skipped += 1
                logger.debug("replay {}: a {} frame is not JSON", self.path, venue)
                continue
            origin = t_ns if origin is None else origin
            yield from self._decode(t_ns - origin, Venue(venue), message)

    def _decode(self, t_ns: int, venue: Venue, message: object) -> list[BookEvent]:
        items = message if isinstance(message, list) else [message]
        events = []
        for item in items:
            if not isinstance(item, dict):
                continue
            try:
                if item.get("type", item.get("ty")) == "orderbook":
                    event = self._snapshot(t_ns, venue, item)
                elif item.get("type") == "orderbookdepth":
                    event = self._delta(t_ns, item)
                else:
                    event = None
            except (KeyError, TypeError, ValueError, InvalidOperation):
                self.skipped += 1
                continue
            if event is not None:
                events.append(event)
        return events

    def _snapshot(self, t_ns: int, venue: Venue, item: dict) -> BookEvent | None:
        market = item.get("code", item.get("cd"))
        if market not in self.markets:
            return None
        units = item.get("orderbook_units", item.get("obu")) or []
        bids, asks = [], []
        for unit in units:
            ap, asz = unit.get("ask_price", unit.get("ap")), unit.get("ask_size", unit.get("as"))
            bp, bsz = unit.get("bid_price", unit.get("bp")), unit.get("bid_size", unit.get("bs"))
            if ap and asz:
                asks.append((_sats(ap), _sats(asz)))
            if bp and bsz:
                bids.append((_sats(bp), _sats(bsz)))
        return BookEvent(t_ns, venue, market, tuple(bids[: self.depth]), tuple(asks[: self.depth]))

    def _delta(self, t_ns: int, item: dict) -> BookEvent | None:
        content = item["content"]
        touched = None
        for change in content["list"]:
            market = to_upbit_symbol(change.get("symbol") or content["symbol"])
            if market not in self.markets:
                continue
            bids, asks = self._legacy.setdefault(market, ({}, {}))
            side = bids if change["orderType"] == "bid" else asks
            price, quantity = _sats(change["price"]), _sats(change["quantity"])
            if quantity:
                side[price] = quantity
            else:
                side.pop(price, None)
            touched = market
        if touched is None:
            return None
        bids, asks = self._legacy[touched]
        return BookEvent(t_ns, Venue.BITHUMB, touched,
                         tuple(sorted(bids.items(), reverse=True)[: self.depth]),
                         tuple(sorted(asks.items())[: self.depth]))


def _sats(value: object) -> int:
    number = Decimal(str(value)).quantize(Decimal("0.00000001"))
    return from_decimal(number)
