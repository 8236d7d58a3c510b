"""What a ``FeedConnection`` needs from a venue protocol, and the error a bad frame raises."""
from __future__ import annotations

import time
from typing import Protocol

MAX_AHEAD_MS = 10_000
"""A venue timestamp further than this ahead of the local wall clock is implausible (NTP keeps
both within milliseconds): such a frame is bad. Adopted, it would become the book's newest
timestamp and every current frame after it would look older and be dropped."""


def ahead_ms(exch_ts_ms: int) -> int:
    """How far ``exch_ts_ms`` is ahead of the local wall clock (negative: behind)."""
    return exch_ts_ms - time.time_ns() // 1_000_000


class FrameError(ValueError):
    """A frame that cannot be used.

    ``markets`` are the books it concerned: a tuple (possibly empty: a status message, an
    unknown code) or ``None`` when the frame could have concerned any of them (unreadable).
    """

    def __init__(self, reason: str, markets: tuple[str, ...] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.markets = markets


class StreamRejected(FrameError):
    """The venue refused the connection itself (bad credentials, a bad subscription): the
    connection is closed and retried with growing backoff, as if it had delivered nothing."""


def check_not_ahead(exch_ts_ms: int, markets: tuple[str, ...]) -> None:
    """Raise ``FrameError`` for ``markets`` if ``exch_ts_ms`` is implausibly far ahead."""
    ahead = ahead_ms(exch_ts_ms)
    if ahead > MAX_AHEAD_MS:
        raise FrameError(f"venue timestamp {ahead / 1000:.0f} s ahead of the local clock", markets)


class BookProtocol(Protocol):
    """One venue's wire format. Every method is called from the feed thread.

    ``handle`` decodes one frame and calls the sink; it raises ``FrameError`` (or any other
    exception, which the connection treats the same way) for a frame it cannot use.
    """

    venue: str

    def subscribe_messages(self) -> list[str]:
        """Frames to send right after connecting."""

    def on_connected(self, now_ns: int) -> None:
        """The connection is up and subscribed."""

    def handle(self, data: bytes, recv_ns: int) -> None:
        """Decode one text or binary frame and hand its updates to the sink."""

    def on_bad_frame(self, markets: tuple[str, ...] | None) -> None:
        """A frame was dropped; ``markets`` as in ``FrameError`` (None: could be any)."""

    def poll(self, now_ns: int) -> None:
        """Periodic work between frames: at least every few hundred ms (the connection's read
        timeout), at most every 5 ms however fast frames come."""

    def on_disconnected(self, reason: str) -> None:
        """The connection is gone: every book of this feed is untrustworthy."""

    def close(self) -> None:
        """Stop helper threads; the feed is shutting down."""
