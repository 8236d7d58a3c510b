"""Circuit breaker over trade outcomes: CLOSED -> OPEN -> HALF_OPEN -> CLOSED.

CLOSED lets every trade through and counts consecutive failures; the ``failures``-th in a row
opens it. OPEN refuses trades until ``reset_s`` has passed, then becomes HALF_OPEN, which lets
exactly one probe trade through at a time: its success closes the breaker, its failure opens it
again for another ``reset_s``. Time comes from the injected clock. Thread-safe (one lock).
"""
from __future__ import annotations

import enum
import threading

from karb.clock import NS_PER_S, Clock


class CircuitState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, clock: Clock, failures: int = 5, reset_s: float = 30.0):
        if failures < 1:
            raise ValueError(f"failures must be at least 1, was {failures}")
        self._clock = clock
        self._threshold = failures
        self._reset_ns = int(reset_s * NS_PER_S)
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._consecutive = 0
        self._opened_ns = 0
        self._probe_in_flight = False
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
            state = self._current()
            if state is CircuitState.OPEN:
                return f"circuit open after {self._consecutive} consecutive failures"
            if state is CircuitState.HALF_OPEN and self._probe_in_flight:
                return "circuit half-open: a probe trade is in flight"
            return None

    def acquire(self) -> str | None:
        """Claim permission for one trade; in HALF_OPEN this claims the single probe."""
        with self._lock:
            state = self._current()
            if state is CircuitState.OPEN:
                return f"circuit open after {self._consecutive} consecutive failures"
            if state is CircuitState.HALF_OPEN:
                if self._probe_in_flight:
                    return "circuit half-open: a probe trade is in flight"
                self._probe_in_flight = True
            return None

    def cancel(self) -> None:
        """A permitted trade never started (e.g. the ledger refused it): free the probe."""
        with self._lock:
            self._probe_in_flight = False

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._probe_in_flight = False
            self._state = CircuitState.CLOSED

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            state = self._current()
            if state is CircuitState.HALF_OPEN or (
                state is CircuitState.CLOSED and self._consecutive >= self._threshold
            ):
                self._state = CircuitState.OPEN
                self._opened_ns = self._clock.monotonic_ns()
                self.trips += 1
            self._probe_in_flight = False

    def _current(self) -> CircuitState:
        # caller holds self._lock; OPEN turns HALF_OPEN once the timeout has passed
        if self._state is CircuitState.OPEN and (
            self._clock.monotonic_ns() - self._opened_ns >= self._reset_ns
        ):
            self._state = CircuitState.HALF_OPEN
        return self._state
