"""Bithumb legacy pubwss ``orderbookdepth``: level deltas kept in sync with REST snapshots.

(Bithumb 2.0's WebSocket speaks Upbit's format: ``feeds.upbit.UpbitBookProtocol``.)

Subscribe with ``{"type":"orderbookdepth","symbols":["BTC_KRW",...]}``. The server answers
``{"status":"0000","resmsg":"Filter Registered Successfully"}``, then sends changed levels with
the new absolute quantity (``"0"`` removes the level) and a microsecond ``datetime``; there are
no sequence numbers (apidocs.bithumb.com v1.2.0; gocryptotrader fixture, 2021-08-13)::

    {"type":"orderbookdepth","content":{"list":[
      {"symbol":"XLM_KRW","orderType":"ask","price":"401.6","quantity":"21277.735","total":"1"},
      {"symbol":"XLM_KRW","orderType":"bid","price":"399.5","quantity":"0","total":"0"}],
     "datetime":"1628835823604483"}}

Sync, per market: deltas are buffered from the moment a snapshot is wanted; a helper thread
(``feed-bithumb-snap``) fetches ``GET /public/orderbook/{BASE}_KRW``; the feed thread then
applies the snapshot plus every buffered delta not older than it (quantities are absolute, so
replaying one the snapshot already holds is harmless) and passes the result on as a snapshot.
Every ``snapshot_check_s`` (5 s) the same is done again for a synced market (deltas keep
flowing to the book meanwhile), which repairs a book a lost delta has silently corrupted; the
book counts and logs each repair. Without sequence numbers (spec 4.2) this period is the bound
on how long a phantom level can live; a crossed result is caught at once.

Decoding: a frame is first decoded by ``msgspec`` straight into typed structs (price and
quantity strings become floats inside the decoder, unknown fields skipped), about 1.3 us for a
3-level frame where ``orjson.loads`` alone takes 1.7 us and the per-level ``float()`` calls as
much again. Any frame that does not fit that shape exactly (a status message, a bad or null
value, an unknown symbol) is decoded again by the general ``orjson`` path, which says what is
wrong and which markets it concerned; so the fast path changes no behaviour, only cost.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Callable

import msgspec
import orjson
import requests
from loguru import logger

from feeds.protocol import MAX_AHEAD_MS, FrameError, ahead_ms, check_not_ahead

Snapshot = tuple[list[tuple[float, float]], list[tuple[float, float]], int]  # bids, asks, ts_ms


def legacy_symbol(market: str) -> str:
    """``KRW-BTC`` -> ``BTC_KRW``."""
    quote, base = market.split("-", 1)
    return f"{base}_{quote}"


class _Level(msgspec.Struct):
    orderType: str
    price: float
    quantity: float
    symbol: str | msgspec.UnsetType = msgspec.UNSET  # null is not "missing": general path


class _Content(msgspec.Struct):
    levels: list[_Level] = msgspec.field(name="list")
    datetime: int = msgspec.field()
    symbol: str | msgspec.UnsetType = msgspec.UNSET


class _Depth(msgspec.Struct):
    type: str
    content: _Content


_decode_depth = msgspec.json.Decoder(_Depth, strict=False).decode  # strict=False: "1.5" -> 1.5
_DecodeError = msgspec.DecodeError  # ValidationError included


class SnapshotFetchError(RuntimeError):
    """A REST orderbook snapshot could not be fetched or read."""


class LegacySnapshotFetcher:
    """``fetch(market) -> (bids, asks, ts_ms)`` from ``GET /public/orderbook/{BASE}_KRW``.

    Called from the snapshot thread only (it owns the ``requests.Session``).
    """

    def __init__(self, rest_url: str, count: int = 30, timeout: tuple[float, float] = (3.05, 5.0)):
        self._base = rest_url.rstrip("/")
        self._count = count
        self._timeout = timeout
        self._session = requests.Session()

    def __call__(self, market: str) -> Snapshot:
        url = f"{self._base}/public/orderbook/{legacy_symbol(market)}"
        try:
            response = self._session.get(url, params={"count": self._count}, timeout=self._timeout)
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise SnapshotFetchError(f"{market}: {type(exc).__name__}: {exc}") from None
        return parse_legacy_orderbook(market, body)

    def close(self) -> None:
        self._session.close()


def parse_legacy_orderbook(market: str, body: object) -> Snapshot:
    """Read a legacy ``/public/orderbook`` body; raise ``SnapshotFetchError`` if unusable."""
    try:
        if body.get("status") != "0000":
            raise SnapshotFetchError(f"{market}: status {body.get('status')}: {body.get('message')}")
        data = body["data"]
        bids = [(float(level["price"]), float(level["quantity"])) for level in data["bids"]]
        asks = [(float(level["price"]), float(level["quantity"])) for level in data["asks"]]
        return bids, asks, int(data["timestamp"])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise SnapshotFetchError(f"{market}: unreadable orderbook body ({exc!r})") from None


class BithumbLegacyBookProtocol:
    """Deltas + snapshots for one legacy connection (see the module docstring).

    ``fetch(market) -> (bids, asks, ts_ms)`` runs on this protocol's snapshot thread; every
    other method runs on the feed thread. ``retry_s`` is the wait before asking again after a
    failed fetch (and for a filter ack after connecting). ``max_buffer`` bounds the deltas held per market
    while a snapshot is on its way; past it the snapshot is thrown away and asked for again.
    """

    venue = "bithumb"

    def __init__(self, sink, markets: list[str], fetch: Callable[[str], Snapshot], *,
                 snapshot_check_s: float = 5.0, retry_s: float = 1.0,
                 max_buffer: int = 20_000) -> None:
        self.markets = list(markets)
        self._sink = sink
        self._fetch = fetch
        self._check_ns = int(snapshot_check_s * 1e9)
        self._retry_ns = int(retry_s * 1e9)  # after a failed fetch, and the grace on connect
        self._max_buffer = max_buffer
        self._by_symbol = {legacy_symbol(m): m for m in markets}
        self._synced = dict.fromkeys(markets, False)
        self._buffers: dict[str, list | None] = dict.fromkeys(markets)  # None: not buffering
        self._gen = dict.fromkeys(markets, 0)  # results of an older generation are ignored
        self._pending: set[str] = set()
        self._due_ns = dict.fromkeys(markets, 0)  # when to (re)fetch if not pending
        self._last_ts_ms = dict.fromkeys(markets, 0)
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._results: deque = deque()
        self._stop = threading.Event()
        self._log = logger.bind(venue=self.venue)
        self.snapshots = 0  # counters, read by anyone
        self.fetch_errors = 0
        self._thread: threading.Thread | None = None  # started on the first connection

    def subscribe_messages(self) -> list[str]:
        request = {"type": "orderbookdepth", "symbols": list(self._by_symbol)}
        return [orjson.dumps(request).decode()]

    def on_connected(self, now_ns: int) -> None:
        # Snapshots are asked for on the filter ack or a market's first delta (the
        # subscription is live then), or after a grace period if neither comes.
        if self._thread is None:
            self._thread = threading.Thread(target=self._fetch_loop, name="feed-bithumb-snap",
                                            daemon=True)
            self._thread.start()
        for market in self.markets:
            self._forget(market, now_ns + self._retry_ns)

    def on_disconnected(self, reason: str) -> None:
        for market in self.markets:
            self._forget(market, 0)
        self._sink.on_reset(None, reason)

    def on_bad_frame(self, markets: tuple[str, ...] | None) -> None:
        now = time.monotonic_ns()
        for market in self.markets if markets is None else markets:
            self._resync(market, now, "bad frame")

    def handle(self, data: bytes, recv_ns: int) -> None:
        # Fast path: a well-formed depth frame whose symbols are all ours (module docstring).
        try:
            depth = _decode_depth(data)
        except _DecodeError:
            return self._handle_general(data, recv_ns)
        content = depth.content
        if depth.type != "orderbookdepth":
            return self._handle_general(data, recv_ns)
        by_symbol = self._by_symbol
        default_symbol = content.symbol
        groups: dict[str, list] = {}
        for level in content.levels:
            symbol = level.symbol
            market = by_symbol.get(default_symbol if symbol is msgspec.UNSET else symbol)
            if market is None:
                return self._handle_general(data, recv_ns)  # no book touched yet
            changes = groups.get(market)
            if changes is None:
                groups[market] = [(level.orderType, level.price, level.quantity)]
            else:
                changes.append((level.orderType, level.price, level.quantity))
        ts_us = content.datetime
        ahead = ahead_ms(ts_us // 1000)
        if ahead > MAX_AHEAD_MS:
            raise FrameError(f"venue timestamp {ahead / 1000:.0f} s ahead of the local clock",
                             tuple(groups))
        for market, changes in groups.items():
            self._delta(market, changes, ts_us, recv_ns)

    def _handle_general(self, data: bytes, recv_ns: int) -> None:
        # Any frame; says what is wrong with a bad one and which markets it concerned.
        try:
            msg = orjson.loads(data)
            kind = msg.get("type")
        except orjson.JSONDecodeError:
            raise FrameError("malformed JSON") from None
        except AttributeError:
            raise FrameError("not a JSON object") from None
        if kind != "orderbookdepth":
            self._status(msg, kind, recv_ns)
            return
        try:
            content = msg["content"]
            ts_us = int(content["datetime"])
            items = content["list"]
            default_symbol = content.get("symbol")
        except (KeyError, TypeError, ValueError, AttributeError):
            raise FrameError("missing or mistyped content") from None
        groups: dict[str, list] = {}
        bad: list[str] = []
        problem = None
        by_symbol = self._by_symbol
        for item in items:
            market = None
            try:
                symbol = item.get("symbol", default_symbol)
                market = by_symbol.get(symbol)
                if market is None:
                    problem = f"unknown symbol {symbol!r}"
                    continue
                change = (item["orderType"], float(item["price"]), float(item["quantity"]))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                problem = f"bad level {exc!r}"
                if market is not None:
                    bad.append(market)
                continue
            changes = groups.get(market)
            if changes is None:
                groups[market] = [change]
            else:
                changes.append(change)
        check_not_ahead(ts_us // 1000, tuple(dict.fromkeys([*groups, *bad])))
        for market, changes in groups.items():
            if market not in bad:
                self._delta(market, changes, ts_us, recv_ns)
        if problem is not None:
            raise FrameError(problem, tuple(bad))

    def poll(self, now_ns: int) -> None:
        while self._results:
            self._apply_result(*self._results.popleft(), now_ns)
        for market in self.markets:
            if market not in self._pending and 0 < self._due_ns[market] <= now_ns:
                self._request(market)

    def close(self) -> None:
        self._stop.set()
        self._requests.put(None)
        if self._thread is not None:
            self._thread.join(5.0)
            if self._thread.is_alive():
                self._log.warning("feed-bithumb-snap did not stop within 5 s")

    # --- feed thread internals ----------------------------------------------------------

    def _status(self, msg: dict, kind: object, now_ns: int) -> None:
        status = msg.get("status")
        if kind is None and status == "0000":
            if "Filter" in str(msg.get("resmsg")):
                for market in self.markets:
                    if not self._synced[market] and market not in self._pending:
                        self._request(market)
            return
        if kind is None and status is not None:
            raise FrameError(f"venue status {status}: {msg.get('resmsg')}", ())
        raise FrameError(f"unexpected message type {kind!r}", ())

    def _delta(self, market: str, changes: list, ts_us: int, recv_ns: int) -> None:
        ts_ms = ts_us // 1000
        if ts_ms > self._last_ts_ms[market]:
            self._last_ts_ms[market] = ts_ms
        synced = self._synced[market]
        if not synced and market not in self._pending:
            self._request(market)  # first delta after subscribing: the filter is live
        buffer = self._buffers[market]
        if buffer is not None:
            if len(buffer) >= self._max_buffer:
                buffer = self._restart_fetch(market, recv_ns)
            if buffer is not None:
                buffer.append((ts_us, changes))
        if synced and not self._sink.on_delta(market, changes, ts_ms, recv_ns):
            self._resync(market, recv_ns, None)

    def _restart_fetch(self, market: str, now_ns: int) -> list | None:
        # Too many deltas while a snapshot is on its way (a slow or stuck fetch).
        self._log.warning("{}: {} deltas buffered waiting for a snapshot; asking again",
                          market, len(self._buffers[market]))
        if self._synced[market]:  # a periodic check: drop it, the live book is unaffected
            self._gen[market] += 1
            self._buffers[market] = None
            self._pending.discard(market)
            self._due_ns[market] = now_ns + self._check_ns
            return None
        self._forget(market, now_ns)
        self._request(market)
        return self._buffers[market]

    def _request(self, market: str) -> None:
        if self._buffers[market] is None:
            self._buffers[market] = []
        self._pending.add(market)
        self._requests.put((market, self._gen[market]))

    def _forget(self, market: str, due_ns: int) -> None:
        self._gen[market] += 1
        self._synced[market] = False
        self._buffers[market] = None
        self._pending.discard(market)
        self._due_ns[market] = due_ns

    def _resync(self, market: str, now_ns: int, reason: str | None) -> None:
        self._forget(market, now_ns)
        if reason is not None:
            self._sink.on_reset(market, reason)
        self._request(market)

    def _apply_result(self, market: str, gen: int, snapshot, error, now_ns: int) -> None:
        if gen != self._gen[market]:
            return  # asked for before a reconnect or a resync: its buffer is gone
        self._pending.discard(market)
        buffer = self._buffers[market] or []
        self._buffers[market] = None
        if error is not None:
            self.fetch_errors += 1
            self._log.warning("bithumb snapshot: {}", error)
            self._due_ns[market] = now_ns + self._retry_ns
            return
        bids, asks, snap_ms = snapshot
        book = {"bid": dict(bids), "ask": dict(asks)}
        floor_us = snap_ms * 1000
        for ts_us, changes in buffer:
            if ts_us < floor_us:
                continue
            for side, price, size in changes:
                levels = book.get(side)
                if levels is None:
                    continue  # a bad side: the book's own check rejects it on the live path
                if size > 0:
                    levels[price] = size
                else:
                    levels.pop(price, None)
        merged_bids = sorted(book["bid"].items(), reverse=True)
        merged_asks = sorted(book["ask"].items())
        ts_ms = max(snap_ms, self._last_ts_ms[market])
        self.snapshots += 1
        valid = self._sink.on_snapshot(market, merged_bids, merged_asks, ts_ms, now_ns)
        self._synced[market] = valid
        self._due_ns[market] = now_ns + (self._check_ns if valid else self._retry_ns)

    # --- snapshot thread ----------------------------------------------------------------

    def _fetch_loop(self) -> None:
        while not self._stop.is_set():
            request = self._requests.get()
            if request is None:
                break
            market, gen = request
            try:
                self._results.append((market, gen, self._fetch(market), None))
            except Exception as exc:  # reported on the feed thread, retried there
                self._results.append((market, gen, None, f"{type(exc).__name__}: {exc}"))
        close = getattr(self._fetch, "close", None)
        if close is not None:
            close()
