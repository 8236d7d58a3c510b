"""Faults on demand for one simulated venue.

A test (or the control endpoint, or a scheduled ``sim.faults`` entry) arms a fault here; the
REST handlers, the exchange and the WebSocket hubs consume it. Every method is thread-safe
(one small lock) and cheap enough to be called on each request.

Order faults (consumed once per order placement, in arming order): ``reject_next_order``,
``partial_next_ioc``, ``delay_orders`` (the venue sits on the order ``seconds`` before matching
it, and answers only then: a client that timed out meanwhile finds "not found" until the order
suddenly exists, filled), ``lose_answer`` (the order is placed and processed, then the
connection is closed with no answer) and
``slow_registration`` (the order is processed, but looking it up, listing or cancelling it
answers "not found" for ``seconds`` after placement: a venue slow to register orders).
Frame faults (``garbage_frames``, ``future_frames``) act on the venue's WS hubs right away.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class RestFault:
    """What the next REST request must suffer: an error status, or a delay, or both."""

    status: int = 0  # 0 = answer normally
    delay_s: float = 0.0


class VenueFaults:
    """Armed faults of one venue. ``drop_ws`` and ``stall_ws`` act on the venue's WS hubs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: list[int] = []  # statuses to answer, in order
        self._delays: list[float] = []
        self._reject_next = False
        self._partial_ioc: float | None = None
        self._stall_until = 0.0
        self._order_delays: list[float] = []
        self._lose_answers = 0
        self._slow_registrations: list[float] = []
        self._drop_callbacks: list[Callable[[], None]] = []
        self._frame_callbacks: list[Callable[[str, int, float], None]] = []

    # --- arming (any thread) -------------------------------------------------------------
    def drop_ws(self) -> None:
        """Close every WebSocket connection of this venue abruptly (no close frame)."""
        for callback in list(self._drop_callbacks):
            callback()

    def stall_ws(self, seconds: float) -> None:
        """Keep the sockets open but send nothing for ``seconds``."""
        with self._lock:
            self._stall_until = time.monotonic() + seconds

    def rest_error(self, status: int, count: int = 1) -> None:
        """Answer the next ``count`` REST requests with ``status`` (429, 500, 503...)."""
        with self._lock:
            self._errors.extend([int(status)] * count)

    def delay_rest(self, seconds: float, count: int = 1) -> None:
        """Delay the next ``count`` REST responses by ``seconds`` (longer than a client's read
        timeout = a timeout; an order is still processed)."""
        with self._lock:
            self._delays.extend([float(seconds)] * count)

    def reject_next_order(self) -> None:
        with self._lock:
            self._reject_next = True

    def partial_next_ioc(self, fraction: float) -> None:
        """The next IOC order fills at most ``fraction`` of its volume; the rest is cancelled."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be within [0, 1], was {fraction}")
        with self._lock:
            self._partial_ioc = fraction

    def delay_orders(self, seconds: float, count: int = 1) -> None:
        """Hold the next ``count`` order placements ``seconds`` before the venue matches them."""
        with self._lock:
            self._order_delays.extend([float(seconds)] * int(count))

    def lose_answer(self, count: int = 1) -> None:
        """Place and process the next ``count`` orders, then close the connection unanswered."""
        with self._lock:
            self._lose_answers += int(count)

    def slow_registration(self, seconds: float, count: int = 1) -> None:
        """The next ``count`` orders are processed but answer "not found" to look-ups, lists and
        cancels for ``seconds`` after placement."""
        with self._lock:
            self._slow_registrations.extend([float(seconds)] * int(count))

    def garbage_frames(self, count: int = 1) -> None:
        """Send ``count`` undecodable or malformed frames to every WS client of this venue."""
        for callback in list(self._frame_callbacks):
            callback("garbage", int(count), 0.0)

    def future_frames(self, count: int = 1, seconds: float = 3600.0) -> None:
        """Stamp the next ``count`` book frames of each of this venue's WS hubs ``seconds`` ahead."""
        for callback in list(self._frame_callbacks):
            callback("future", int(count), float(seconds))

    def clear(self) -> None:
        with self._lock:
            self._errors.clear()
            self._delays.clear()
            self._reject_next = False
            self._partial_ioc = None
            self._stall_until = 0.0
            self._order_delays.clear()
            self._lose_answers = 0
            self._slow_registrations.clear()
        for callback in list(self._frame_callbacks):
            callback("clear", 0, 0.0)

    # --- consuming -----------------------------------------------------------------------
    def on_drop(self, callback: Callable[[], None]) -> None:
        self._drop_callbacks.append(callback)

    def on_frames(self, callback: Callable[[str, int, float], None]) -> None:
        """``callback(kind, count, seconds)``: kind ``garbage``, ``future`` or ``clear``."""
        self._frame_callbacks.append(callback)

    def take_order_delay(self) -> float:
        """Called once per order placement, before matching: seconds to hold it (0 = none)."""
        with self._lock:
            return self._order_delays.pop(0) if self._order_delays else 0.0

    def take_lose_answer(self) -> bool:
        """Called once per order placement request, after it was handled: hang up unanswered?"""
        with self._lock:
            lose = self._lose_answers > 0
            if lose:
                self._lose_answers -= 1
            return lose

    def take_slow_registration(self) -> float:
        """Called once per placed order: seconds it stays invisible to look-ups (0 = none)."""
        with self._lock:
            return self._slow_registrations.pop(0) if self._slow_registrations else 0.0

    def next_rest(self) -> RestFault | None:
        """Called by a REST handler thread once per request."""
        with self._lock:
            if not self._errors and not self._delays:
                return None
            status = self._errors.pop(0) if self._errors else 0
            delay = self._delays.pop(0) if self._delays else 0.0
            return RestFault(status, delay)

    def take_reject(self) -> bool:
        with self._lock:
            reject, self._reject_next = self._reject_next, False
            return reject

    def take_partial_ioc(self) -> float | None:
        with self._lock:
            fraction, self._partial_ioc = self._partial_ioc, None
            return fraction

    def stalled(self, now: float) -> bool:
        return now < self._stall_until
