"""Market data in: one thread per venue WebSocket connection. Imports nothing from ``karb``.

A feed is a ``FeedConnection`` (socket loop: connect, subscribe, keepalive, watchdog, reconnect
with backoff) driving one venue *protocol* object that knows the wire format:

* ``UpbitBookProtocol`` (feeds.upbit): Upbit ``/websocket/v1`` orderbook, DEFAULT or SIMPLE;
  also Bithumb 2.0's public WebSocket, which speaks the same format.
* ``BithumbLegacyBookProtocol`` (feeds.bithumb): Bithumb pubwss ``orderbookdepth`` deltas,
  synchronised with REST snapshots (``LegacySnapshotFetcher``).

* ``PrivateStreamProtocol`` (feeds.private): the private ``myOrder`` / ``myAsset`` streams of
  Upbit and Bithumb 2.0; it hands typed ``OrderEvent`` / ``AssetEvent`` to its own sink (see
  that module). The JWT comes from the caller through ``FeedConnection(headers=...)``.

Decoded book updates go to a *sink* the caller supplies. The sink interface (all calls come from the
feed thread; prices and sizes are floats, levels best first)::

    sink.on_snapshot(market, bids, asks, exch_ts_ms, recv_ns) -> bool
        bids / asks: sequences of (price, size); the full book replaces the old one.
    sink.on_delta(market, changes, exch_ts_ms, recv_ns) -> bool
        changes: iterable of (side, price, size), side "bid" | "ask", size 0 removes the level.
    sink.on_reset(market_or_None, reason) -> None
        the book (None: every book of this feed) cannot be trusted until its next snapshot.

    sink.on_snapshot_columns(market, bid_prices, bid_sizes, ask_prices, ask_sizes,
                             exch_ts_ms, recv_ns) -> bool        (optional)
        the same snapshot as four parallel lists, best first; snapshot feeds use it when the
        sink has it: it spares building and re-reading a tuple per level (measured in
        tools/bench_feed.py).

``on_snapshot`` / ``on_snapshot_columns`` / ``on_delta`` return whether the market's book is valid afterwards; a delta
feed fetches a new snapshot when it is not. ``recv_ns`` is ``time.monotonic_ns()`` when the
frame arrived; ``exch_ts_ms`` the venue's timestamp in milliseconds.

``karb.book.BookBoard.sink(venue)`` is the engine's sink; tests use plain stubs.
"""
from feeds.bithumb import BithumbLegacyBookProtocol, LegacySnapshotFetcher
from feeds.connection import FeedConnection
from feeds.private import AssetEvent, OrderEvent, PrivateStreamProtocol
from feeds.protocol import FrameError, StreamRejected
from feeds.recorder import (FrameRecorder, HourlyRecorder, RecordingError, RecordingTruncated,
                            read_recording, read_recordings)
from feeds.upbit import UpbitBookProtocol

__all__ = [
    "AssetEvent", "BithumbLegacyBookProtocol", "FeedConnection", "FrameError", "FrameRecorder",
    "HourlyRecorder", "LegacySnapshotFetcher", "OrderEvent", "PrivateStreamProtocol",
    "RecordingError", "RecordingTruncated", "StreamRejected", "UpbitBookProtocol",
    "read_recording", "read_recordings",
]
