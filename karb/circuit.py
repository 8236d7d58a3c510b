"""Circuit breaker over trade outcomes: CLOSED -> OPEN -> HALF_OPEN -> CLOSED.

CLOSED lets every trade through and counts failures in a sliding window: the ``failures``-th
failure within ``window_s`` opens it (a success in between does not forgive earlier failures).
OPEN refuses trades until ``reset_s`` has passed, then becomes HALF_OPEN, which lets exactly one
probe trade through at a time. Only that probe's success closes the breaker (and starts a fresh
window); a trade approved before the breaker opened may finish well without closing it. Any
failure while HALF_OPEN opens it again for another ``reset_s``. Trades are identified by the
``key`` passed to ``acquire`` and the ``record_*`` calls (the signal id).

``consecutive_failures`` is kept apart for risk's ``halt_after_failures``: failures in a row in
the order trades finish, reset by any success. Time comes from the injected clock. Thread-safe.
"""
from __future__ import annotations

import enum
import threading
from collections import deque
from typing import Hashable

from karb.clock import NS_PER_S, Clock


class CircuitState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_NO_PROBE = object()


class CircuitBreaker:
    def __init__(self, clock: Clock, failures: int = 5, reset_s: float = 30.0,
                 window_s: float = 300.0):
        if failures < 1:
            raise ValueError(f"failures must be at least 1, was {failures}")
        self._clock = clock
        self._threshold = failures
        self._reset_ns = int(reset_s * NS_PER_S)
        self._window_ns = int(window_s * NS_PER_S)
        self._window_s = window_s
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failures: deque[int] = deque()  # monotonic ns of recent failures (CLOSED)
        self._consecutive = 0
        self._opened_ns = 0
        self._probe: object = _NO_PROBE  # key of the half-open probe in flight
        self.trips = 0

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._current()

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    def blocked(self) -> str | None:
        """Why a new trade may not start now (without claiming the probe), or None."""
        with self._lock:
            return self._refusal(self._current())

    def acquire(self, key: Hashable = None) -> str | None:
        """Claim permission for trade ``key``; in HALF_OPEN this claims the single probe."""
        with self._lock:
            state = self._current()
            reason = self._refusal(state)
            if reason is None and state is CircuitState.HALF_OPEN:
                self._probe = key
            return reason

    def cancel(self, key: Hashable = None) -> None:
        """A permitted trade never started (e.g. the ledger refused it): free the probe."""
        with self._lock:
            if self._probe is key or self._probe == key:
                self._probe = _NO_PROBE

    def record_success(self, key: Hashable = None) -> None:
        with self._lock:
            self._consecutive = 0
            if self._current() is CircuitState.HALF_OPEN and self._is_probe(key):
                self._state = CircuitState.CLOSED
                self._failures.clear()
                self._probe = _NO_PROBE

    def record_failure(self, key: Hashable = None) -> None:
        with self._lock:
            self._consecutive += 1
            now = self._clock.monotonic_ns()
            state = self._current()
            if self._is_probe(key):
                self._probe = _NO_PROBE
            if state is CircuitState.HALF_OPEN:
                self._open(now)
            elif state is CircuitState.CLOSED:
                self._failures.append(now)
                while self._failures and now - self._failures[0] > self._window_ns:
                    self._failures.popleft()
                if len(self._failures) >= self._threshold:
                    self._open(now)

    def _is_probe(self, key: Hashable) -> bool:
        return self._probe is not _NO_PROBE and (self._probe is key or self._probe == key)

    def _open(self, now: int) -> None:
        # caller holds self._lock
        self._state = CircuitState.OPEN
        self._opened_ns = now
        self._failures.clear()
        self.trips += 1

    def _refusal(self, state: CircuitState) -> str | None:
        if state is CircuitState.OPEN:
            return (f"circuit open after {self._threshold} failures within "
                    f"{self._window_s:g} s")
        if state is CircuitState.HALF_OPEN and self._probe is not _NO_PROBE:
            return "circuit half-open: a probe trade is in flight"
        return None

    def _current(self) -> CircuitState:
        # caller holds self._lock; OPEN turns HALF_OPEN once the timeout has passed
        if self._state is CircuitState.OPEN and (
            self._clock.monotonic_ns() - self._opened_ns >= self._reset_ns
        ):
            self._state = CircuitState.HALF_OPEN
        return self._state
