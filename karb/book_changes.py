"""Which markets' books the feeds are updating, so the strategy looks at those and no others.

``BookChanges`` is a queue of market names. ``BookChanges.sink(board_sink)`` wraps a venue's
``BookSink`` (the feeds' sink interface, see ``feeds``): each call notes its market, then hands
the update on. The note comes *before* the book changes, so by the time the change wakes the
strategy (``BookBoard.wait_for_change``) the market is already in the queue; the strategy
thread ``take``s the names on each wake (``karb.strategy``) and compares the books' versions:
a noted market whose versions have not moved yet (its update is still being applied, or was an
older snapshot that changed nothing) stays with the strategy until they do.

Feed threads append, the strategy thread pops: a ``deque`` does both atomically, with no lock.
The queue is bounded (``MAX_MARKS``): with nobody taking (the strategy stopped before the
feeds), the oldest marks go; the strategy's full pass compares every book's version anyway.
"""
from __future__ import annotations

from collections import deque

MAX_MARKS = 65_536


class BookChanges:
    def __init__(self, markets: list[str]) -> None:
        self.markets = tuple(markets)
        self._marks: deque[str] = deque(maxlen=MAX_MARKS)

    def note(self, market: str) -> None:
        """``market``'s book is about to change (feed thread)."""
        self._marks.append(market)

    def note_all(self) -> None:
        self._marks.extend(self.markets)

    def take(self) -> set[str]:
        """Every market noted since the last ``take`` (strategy thread)."""
        marks = self._marks
        taken = set()
        try:
            while True:
                taken.add(marks.popleft())
        except IndexError:
            return taken

    def sink(self, sink) -> "NotingSink":
        """``sink`` (a venue's ``BookSink``), noting each market here before it is updated."""
        return NotingSink(sink, self)


class NotingSink:
    """The feeds' sink interface (``feeds``): note the market, then the wrapped sink's call."""

    __slots__ = ("_sink", "_changes", "_note")

    def __init__(self, sink, changes: BookChanges) -> None:
        self._sink = sink
        self._changes = changes
        self._note = changes.note

    def on_snapshot(self, market: str, bids, asks, exch_ts_ms: int, recv_ns: int) -> bool:
        self._note(market)
        return self._sink.on_snapshot(market, bids, asks, exch_ts_ms, recv_ns)

    def on_snapshot_columns(self, market: str, bid_prices: list, bid_sizes: list,
                            ask_prices: list, ask_sizes: list, exch_ts_ms: int,
                            recv_ns: int) -> bool:
        self._note(market)
        return self._sink.on_snapshot_columns(market, bid_prices, bid_sizes, ask_prices,
                                              ask_sizes, exch_ts_ms, recv_ns)

    def on_delta(self, market: str, changes, exch_ts_ms: int, recv_ns: int) -> bool:
        self._note(market)
        return self._sink.on_delta(market, changes, exch_ts_ms, recv_ns)

    def on_reset(self, market: str | None, reason: str) -> None:
        if market is None:
            self._changes.note_all()
        else:
            self._note(market)
        self._sink.on_reset(market, reason)
