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

Across restarts: ``on_change`` (if set) is told of every trip to OPEN and every close, outside
the lock, so risk can journal them; ``restore`` rebuilds the state at start from those and the
failures' ages (wall time), placed on this run's monotonic clock.
"""
from __future__ import annotations

import enum
import threading
from collections import deque
from typing import Callable, Hashable, Iterable

from karb.clock import NS_PER_S, Clock


class CircuitState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_NO_PROBE = object()


class CircuitBreaker:
    def __init__(self, clock: Clock, failures: int = 5, reset_s: float = 30.0,
                 window_s: float = 300.0,
                 on_change: Callable[[CircuitState], None] | None = None):
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
        self.on_change = on_change

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._current()

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    def blocked(self) -> str | None:
        """Why a new trade may not start now (without claiming the probe), or None. Advisory
        (the strategy asks on every pass; ``acquire`` is the gate), so CLOSED is read without
        the lock: a trip racing this read is seen on the next pass, and by ``acquire`` now."""
        if self._state is CircuitState.CLOSED:
            return None
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
            closed = self._current() is CircuitState.HALF_OPEN and self._is_probe(key)
            if closed:
                self._state = CircuitState.CLOSED
                self._failures.clear()
                self._probe = _NO_PROBE
        if closed:
            self._tell(CircuitState.CLOSED)

    def record_failure(self, key: Hashable = None) -> None:
        with self._lock:
            self._consecutive += 1
            trips, now = self.trips, self._clock.monotonic_ns()
            state = self._current(now)
            if self._is_probe(key):
                self._probe = _NO_PROBE
            self._fail(state, now)
            opened = self.trips != trips
        if opened:
            self._tell(CircuitState.OPEN)

    def restore(self, consecutive: int, failure_ages_ns: Iterable[int],
                opened_age_ns: int | None = None) -> None:
        """Start from the journal: ``consecutive`` failures in a row, failures that happened
        ``failure_ages_ns`` ago (wall time), and a trip ``opened_age_ns`` ago (None: CLOSED
        since, or never, opened). Failures replay in order with their real times, so five in
        the window open it at the fifth's time even if that trip was never journalled."""
        with self._lock:
            now = self._clock.monotonic_ns()
            self._consecutive = consecutive
            self._probe = _NO_PROBE
            self._failures.clear()
            self._state = CircuitState.CLOSED
            if opened_age_ns is not None:
                self._state, self._opened_ns = CircuitState.OPEN, now - max(opened_age_ns, 0)
                return
            for age in sorted(failure_ages_ns, reverse=True):  # oldest first
                if age <= self._window_ns:
                    at = now - max(age, 0)
                    self._fail(self._current(at), at)

    def _fail(self, state: CircuitState, at: int) -> None:
        # caller holds self._lock; a failure at monotonic ``at`` in ``state``
        if state is CircuitState.HALF_OPEN:
            self._open(at)
        elif state is CircuitState.CLOSED:
            self._failures.append(at)
            while self._failures and at - self._failures[0] > self._window_ns:
                self._failures.popleft()
            if len(self._failures) >= self._threshold:
                self._open(at)

    def _tell(self, state: CircuitState) -> None:
        if self.on_change is not None:
            self.on_change(state)

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

    def _current(self, now: int | None = None) -> CircuitState:
        # caller holds self._lock; OPEN turns HALF_OPEN once the timeout has passed (by ``now``)
        if now is None:
            now = self._clock.monotonic_ns()
        if self._state is CircuitState.OPEN and now - self._opened_ns >= self._reset_ns:
            self._state = CircuitState.HALF_OPEN
        return self._state
