"""Injectable clocks: decisions use a monotonic clock, the journal uses wall time.

Strategy, risk and execution take a ``Clock`` so tests (and backtests) can freeze or step time.
``SystemClock`` reads the OS clocks; ``ManualClock`` only moves when told to. Every method is
safe to call from any thread.
"""
from __future__ import annotations

import threading
import time
from typing import Protocol

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000


class Clock(Protocol):
    def monotonic_ns(self) -> int:
        """Nanoseconds from an arbitrary origin; never goes backwards (``time.monotonic_ns``)."""

    def wall_ns(self) -> int:
        """Nanoseconds since the Unix epoch (``time.time_ns``); for journals and day boundaries."""


class SystemClock:
    """The real clocks. Book views carry ``time.monotonic_ns()`` stamps, so live code uses this."""

    monotonic_ns = staticmethod(time.monotonic_ns)
    wall_ns = staticmethod(time.time_ns)


class ManualClock:
    """A clock that moves only through ``advance`` / ``set``: for deterministic tests."""

    def __init__(self, monotonic_ns: int = NS_PER_S, wall_ns: int = 1_750_000_000 * NS_PER_S):
        self._lock = threading.Lock()
        self._mono = monotonic_ns
        self._wall = wall_ns

    def monotonic_ns(self) -> int:
        with self._lock:
            return self._mono

    def wall_ns(self) -> int:
        with self._lock:
            return self._wall

    def advance(self, seconds: float = 0.0, *, ns: int = 0) -> None:
        """Move both clocks forward by ``seconds`` plus ``ns`` nanoseconds."""
        step = int(round(seconds * NS_PER_S)) + ns
        if step < 0:
            raise ValueError(f"a clock cannot go backwards, step was {step} ns")
        with self._lock:
            self._mono += step
            self._wall += step

    def set_wall(self, wall_ns: int) -> None:
        """Jump the wall clock (e.g. across midnight); the monotonic clock is untouched."""
        with self._lock:
            self._wall = wall_ns
