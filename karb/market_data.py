"""Market data glue: one feed thread per venue, built from a ``Config``, feeding a ``BookBoard``.

``MarketData(config, board).start()`` connects ``feed-upbit`` and ``feed-bithumb``
(``venues.<v>.ws_url``, ``ws_levels``, ``ws_format``; Bithumb's legacy pubwss delta feed with
REST snapshots from ``venues.bithumb.rest_url`` when ``ws_api`` is ``legacy``), with the
watchdog, ping, backoff and snapshot-check settings of ``config.feed``, and records raw frames
when ``feed.record_path`` is set. With a ``BookChanges`` (the engine's), every update a feed
hands to a book is first noted there, for the strategy (``karb.book_changes``).
"""
from __future__ import annotations

import time

from feeds import (BithumbLegacyBookProtocol, FeedConnection, FrameRecorder,
                   LegacySnapshotFetcher, UpbitBookProtocol)
from karb.book import BookBoard
from karb.book_changes import BookChanges
from karb.config import Config, VenueConfig
from karb.model import Venue


class MarketData:
    """The engine's feed threads. ``start``/``stop`` from the owning thread; ``stats`` from any."""

    def __init__(self, config: Config, board: BookBoard, recorder: FrameRecorder | None = None,
                 changes: BookChanges | None = None) -> None:
        """``recorder`` (e.g. ``karb record``'s hourly one) replaces ``feed.record_path``'s."""
        self.config = config
        self.board = board
        self._changes = changes
        feed = config.feed
        if recorder is None and feed.record_path:
            recorder = FrameRecorder(feed.record_path)
        self._recorder = recorder
        self.connections: dict[Venue, FeedConnection] = {}
        for venue in Venue:
            venue_config = config.venues[venue]
            protocol = self._protocol(venue, venue_config)
            self.connections[venue] = FeedConnection(
                venue_config.ws_url, protocol,
                watchdog_s=feed.watchdog_s, ping_interval_s=feed.ping_interval_s,
                backoff_initial_s=feed.backoff_initial_s, backoff_max_s=feed.backoff_max_s,
                connect_timeout_s=venue_config.connect_timeout_s, recorder=self._recorder)

    def _protocol(self, venue: Venue, venue_config: VenueConfig):
        sink = self.board.sink(venue)
        if self._changes is not None:
            sink = self._changes.sink(sink)
        markets = self.board.markets
        if venue is Venue.BITHUMB and venue_config.ws_api == "legacy":
            fetch = LegacySnapshotFetcher(
                venue_config.rest_url,
                timeout=(venue_config.connect_timeout_s, venue_config.read_timeout_s))
            return BithumbLegacyBookProtocol(sink, markets, fetch,
                                             snapshot_check_s=self.config.feed.snapshot_check_s)
        return UpbitBookProtocol(sink, markets, venue_config.ws_levels, venue_config.ws_format,
                                 venue=venue.value, level_suffix=venue is Venue.UPBIT)

    def start(self) -> None:
        for connection in self.connections.values():
            connection.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop every feed thread (and the recorder) within about ``timeout_s`` in total.
        Return True if all of them ended."""
        deadline = time.monotonic() + timeout_s
        for connection in self.connections.values():
            connection.request_stop()
        ok = all([c.stop(max(0.1, deadline - time.monotonic())) for c in self.connections.values()])
        if self._recorder is not None:
            ok = self._recorder.stop(max(0.1, deadline - time.monotonic())) and ok
        return ok

    def stats(self) -> dict[str, dict]:
        """Per venue: state, messages, bytes, reconnects, decode_errors, last_message_age_s,
        msgs_per_s, down_for_s, the books' future_frames and repairs (and snapshots /
        fetch_errors for the legacy Bithumb feed)."""
        now = time.monotonic_ns()
        result = {}
        for venue, connection in self.connections.items():
            stats = connection.stats(now)
            protocol = connection.protocol
            if isinstance(protocol, BithumbLegacyBookProtocol):
                stats["snapshots"] = protocol.snapshots
                stats["fetch_errors"] = protocol.fetch_errors
            books = self.board.books(venue)
            stats["future_frames"] = sum(book.future_frames for book in books)
            stats["repairs"] = sum(book.repairs for book in books)
            result[venue.value] = stats
        return result

    @property
    def recorder_error(self) -> str | None:
        """Why frame recording stopped early, or None (recording fine, or not configured)."""
        return None if self._recorder is None else self._recorder.error
