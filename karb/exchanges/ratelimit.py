"""Per-group request windows that keep each venue's REST traffic under its per-second limits.

One ``RateLimiter`` per venue holds one ``RequestWindow`` per endpoint group:

* ``PUBLIC``  quotation calls (markets, ticker, orderbook);
* ``PRIVATE`` account calls (balances, order queries, chance; Upbit counts cancels here too);
* ``ORDER``   placements (and Bithumb's cancels).

Why windows, not a token bucket: the venues count requests per second (Upbit's
``Remaining-Req: ...; sec=<n>`` is "left in the current second"; Bithumb documents "per second"
categories). A bucket with a one-second burst lets up to twice the limit into one second across
a window edge. A ``RequestWindow`` is a sliding-window log instead: at most ``limit`` requests
in any ``window_s`` interval, which also keeps every fixed (calendar) second of the venue's
under the limit, whichever of the two it counts [U: Upbit and Bithumb do not say whether their
second is fixed or sliding; the sim counts fixed seconds].

When a request counts: the venue counts a request when it arrives, some time between our send
and its answer. So a slot is held from ``acquire`` ("in flight", never expiring) until
``release``, and stamped with the release time, which is never earlier than the venue's count.
It frees ``window_s + WINDOW_MARGIN_S`` after that stamp. The margin (10 ms) covers the
difference between our clock's and the venue's second (rate skew, a venue-side stamp taken at
its load balancer rather than its counter); it costs about 1% of throughput at full rate.

Headroom: ``reserve`` slots of a window only ``priority`` requests (cancels, unwind orders) may
use, so a burst of ordinary requests never starves a recovery.

The venue's count wins over ours: when ``Remaining-Req`` says fewer calls are left than we
believe (another process on the same key, say), the difference is added as "phantom" requests
stamped now, so the group waits for the next window (``observe_remaining``). A 429 closes the
group for ``Retry-After`` (at most ``MAX_PAUSE_S``) or, without one, a whole window
(``penalise``); never a 0 s retry. A 418 (Upbit: the IP/account is blocked after requests kept
coming past a 429) closes every window of the venue (``RateLimiter.ban``) for the time the venue
gave or, without one, ``BAN_DEFAULT_S`` doubled on each repeat (the venue's block grows too).

Bounded waits: ``acquire(max_wait_s=...)`` raises ``WindowClosed`` (nothing sent) instead of
waiting longer than the caller can afford, at once when the group is closed for longer, and when
``abort`` is set (the transport closing; ``wake`` rouses the waiters to see it).

Threads: any thread may call any method; one ``Condition`` per group; waiting threads sleep on
it until the earliest slot frees (a timed wait to that instant) or a slot is released. The clock
and the wait are injectable so tests run on a fake clock without sleeping.
"""
from __future__ import annotations

import enum
import math
import re
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from karb.config import RateLimitConfig

Clock = Callable[[], float]
Waiter = Callable[[threading.Condition, "float | None"], None]

WINDOW_S = 1.0  # the venues count per second
WINDOW_MARGIN_S = 0.010  # our window is this much longer than the venue's (see the docstring)
MAX_PAUSE_S = 60.0  # the longest Retry-After a 429 closes a group for (a CDN may say hours)
BAN_DEFAULT_S = 60.0  # a 418 block whose length the venue did not give, doubled on each repeat
BAN_MAX_S = 3600.0
BAN_STREAK_RESET_S = 3600.0  # a 418 this long after the last block ended starts over at the default
_REMAINING_REQ = re.compile(r"group=([a-z\-]+);\s*min=(\d+);\s*sec=(\d+)")


class Group(str, enum.Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    ORDER = "order"


def _condition_wait(cond: threading.Condition, timeout: float | None) -> None:
    cond.wait(timeout)


class WindowClosed(Exception):
    """``acquire`` gave up before taking a slot: nothing was sent. ``retry_after_s`` is how long
    the group stays closed (or the wait it refused)."""

    def __init__(self, reason: str, retry_after_s: float):
        super().__init__(reason)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class BanStats:
    """A venue's 418 blocks, for the snapshot, metrics and the ``rate_limit_ban`` alert."""

    blocked_for_s: float  # seconds the current block still lasts (0: none)
    bans: int  # 418s the venue answered since start
    last_block_s: float  # length of the latest block we applied


@dataclass(frozen=True, slots=True)
class WindowStats:
    """One group's use, for the metrics endpoint."""

    limit: int  # requests per window
    window_s: float
    used: int  # requests in the current window, in flight included
    in_flight: int
    requests: int  # acquisitions since start
    waits: int  # acquisitions that had to wait
    wait_s: float  # total seconds waited
    rate_limited: int  # 429s (and 418s) the venue answered
    venue_corrections: int  # times Remaining-Req said fewer were left than we believed


@dataclass(slots=True)
class Ticket:
    """One acquired slot: hand it back to ``release`` (or use ``RequestWindow.slot``)."""

    waited_s: float
    released: bool = False


class RequestWindow:
    """At most ``limit`` requests in any ``window_s`` (+ margin), shared by every thread.

    Parameters
    ----------
    limit
        Requests per window, at least 1.
    reserve
        Slots of the window only ``priority`` acquisitions may use (at most ``limit - 1``).
    clock, wait
        ``clock()`` returns monotonic seconds; ``wait(condition, seconds_or_None)`` blocks with
        the condition's lock released (``Condition.wait``). Injected by tests.
    """

    def __init__(self, limit: int, window_s: float = WINDOW_S, reserve: int = 0,
                 margin_s: float = WINDOW_MARGIN_S, clock: Clock = time.monotonic,
                 wait: Waiter = _condition_wait):
        if limit < 1 or window_s <= 0:
            raise ValueError(f"a window needs limit >= 1 and window_s > 0, was {limit}/{window_s}")
        self.limit = int(limit)
        self.window_s = float(window_s)
        self.reserve = max(0, min(int(reserve), self.limit - 1))
        self._span = self.window_s + max(0.0, margin_s)
        self._clock = clock
        self._wait = wait
        self._cond = threading.Condition()
        self._stamps: deque[float] = deque()  # release (or phantom) times, ascending
        self._in_flight = 0
        self._blocked_until = 0.0
        self._requests = self._waits = self._rate_limited = self._corrections = 0
        self._wait_s = 0.0

    @classmethod
    def per_second(cls, rate_per_s: float, reserve_fraction: float = 0.0, **kwargs) -> "RequestWindow":
        """A window from a configured rate: ``floor(rate)`` per second, or one request per
        ``1/rate`` seconds below one a second. ``reserve_fraction`` of it (rounded down) is kept
        for priority requests."""
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, was {rate_per_s}")
        if rate_per_s >= 1:
            limit, window = math.floor(rate_per_s), WINDOW_S
        else:
            limit, window = 1, 1.0 / rate_per_s
        return cls(limit, window, math.floor(max(0.0, reserve_fraction) * limit), **kwargs)

    # --- acquiring -------------------------------------------------------------------------
    def acquire(self, priority: bool = False, max_wait_s: float | None = None,
                abort: threading.Event | None = None) -> Ticket:
        """Take a slot, blocking until one is free; the slot is in flight until ``release``.

        With ``max_wait_s``, raise ``WindowClosed`` rather than wait past it (at once when the
        wait is known to be longer, e.g. the group is closed after a 429 or a 418 block). A set
        ``abort`` raises ``WindowClosed`` too. Either way no slot was taken."""
        ceiling = self.limit if priority else self.limit - self.reserve
        with self._cond:
            start = now = self._clock()
            deadline = None if max_wait_s is None else start + max(0.0, max_wait_s)
            while True:
                self._expire(now)
                used = self._in_flight + len(self._stamps)
                if now >= self._blocked_until and used < ceiling:
                    break
                delay = self._delay(now, used - ceiling + 1)
                if abort is not None and abort.is_set():
                    raise WindowClosed("closing", max(0.0, self._blocked_until - now))
                if deadline is not None:
                    if delay is not None and now + delay > deadline:
                        raise WindowClosed(f"no slot within {max_wait_s:.1f}s", delay)
                    if delay is None:  # only a release frees a slot: wait for it, not past the deadline
                        if now >= deadline:
                            raise WindowClosed(f"no slot within {max_wait_s:.1f}s", 0.0)
                        delay = deadline - now
                self._wait(self._cond, delay)
                now = self._clock()
            ticket = Ticket(now - start)
            self._in_flight += 1
            self._requests += 1
            if now > start:
                self._waits += 1
                self._wait_s += now - start
            return ticket

    def release(self, ticket: Ticket) -> None:
        """The answer came (or the call failed): the slot now counts from this instant."""
        with self._cond:
            if ticket.released:
                return
            ticket.released = True
            self._in_flight -= 1
            self._stamps.append(self._clock())
            self._cond.notify_all()  # a waiter waiting on in-flight slots can now time its wait

    def wake(self) -> None:
        """Rouse every waiter to re-check its ``abort`` event (the transport is closing)."""
        with self._cond:
            self._cond.notify_all()

    @contextmanager
    def slot(self, priority: bool = False) -> Iterator[Ticket]:
        ticket = self.acquire(priority)
        try:
            yield ticket
        finally:
            self.release(ticket)

    def _delay(self, now: float, needed: int) -> float | None:
        """Seconds until ``needed`` more slots free (None: only a release can free them)."""
        delay = self._blocked_until - now
        if needed > 0:
            if needed > len(self._stamps):
                return None if delay <= 0 else delay
            delay = max(delay, self._stamps[needed - 1] + self._span - now)
        return max(delay, 0.0)

    def _expire(self, now: float) -> None:
        stamps, cutoff = self._stamps, now - self._span
        while stamps and stamps[0] <= cutoff:
            stamps.popleft()

    # --- the venue's word ------------------------------------------------------------------
    def observe_remaining(self, remaining: int) -> None:
        """The venue says ``remaining`` calls are left in its window: never believe in more.

        Whatever the venue counted beyond our own window (traffic of another process on the
        key or IP) is added as requests made now. Our own requests all count as ours: every
        one the venue counted in its current second is still in our (longer, sliding) window,
        so our own traffic alone never triggers this, whatever order the calls arrived in.
        Requests of ours the venue had not yet seen make the first correction too small; the
        answers that follow correct the rest.
        """
        with self._cond:
            now = self._clock()
            self._expire(now)
            ours = self._in_flight + len(self._stamps)
            unknown = (self.limit - max(0, remaining)) - ours
            if unknown > 0:
                self._corrections += 1
                self._stamps.extend([now] * unknown)

    def penalise(self, retry_after_s: float | None = None) -> float:
        """After a 429: close the group for ``retry_after_s`` (at most ``MAX_PAUSE_S``) or, when
        the venue did not say, a whole window (Upbit answers requests that keep coming after a
        429 with a 418 block). Returns the pause in seconds."""
        with self._cond:
            self._rate_limited += 1
            pause = min(max(retry_after_s or 0.0, self._span), max(MAX_PAUSE_S, self._span))
            return self._close(pause)

    def count_rate_limited(self) -> None:
        with self._cond:
            self._rate_limited += 1

    def close_for(self, seconds: float) -> float:
        """Close the group for ``seconds`` (a venue-wide block); returns how long it is closed."""
        with self._cond:
            return self._close(seconds)

    def _close(self, pause: float) -> float:
        now = self._clock()
        self._blocked_until = max(self._blocked_until, now + pause)
        self._cond.notify_all()  # a bounded waiter re-checks: its wait may now be too long
        return self._blocked_until - now

    # --- reporting -------------------------------------------------------------------------
    def closed_for(self) -> float:
        """Seconds the group stays closed after a 429 (0 when open)."""
        with self._cond:
            return max(0.0, self._blocked_until - self._clock())

    @property
    def remaining(self) -> int:
        """Slots free now (priority ones included)."""
        with self._cond:
            now = self._clock()
            self._expire(now)
            if now < self._blocked_until:
                return 0
            return max(0, self.limit - self._in_flight - len(self._stamps))

    def stats(self) -> WindowStats:
        with self._cond:
            self._expire(self._clock())
            return WindowStats(self.limit, self.window_s, self._in_flight + len(self._stamps),
                               self._in_flight, self._requests, self._waits, self._wait_s,
                               self._rate_limited, self._corrections)


class RateLimiter:
    """The three request windows of one venue, built from its ``rate_limits`` config.

    ``reserve_fraction`` is kept for priority requests in the PRIVATE window (Upbit counts
    cancels and order look-ups there) and the ORDER window (placements, Bithumb's cancels).
    """

    def __init__(self, config: RateLimitConfig, clock: Clock = time.monotonic,
                 wait: Waiter = _condition_wait):
        kw = {"clock": clock, "wait": wait}
        self._clock = clock
        self._ban_lock = threading.Lock()
        self._banned_until = self._last_block_s = 0.0
        self._bans = self._ban_streak = 0
        self.windows: dict[Group, RequestWindow] = {
            Group.PUBLIC: RequestWindow.per_second(config.public_per_s, 0.0, **kw),
            Group.PRIVATE: RequestWindow.per_second(config.private_per_s, config.reserve_fraction, **kw),
            Group.ORDER: RequestWindow.per_second(config.order_per_s, config.reserve_fraction, **kw),
        }

    def slot(self, group: Group, priority: bool = False):
        """``with limiter.slot(group, priority) as ticket:`` send one request and read its
        answer inside the block (the slot counts from the block's end)."""
        return self.windows[group].slot(priority)

    def acquire(self, group: Group, priority: bool = False, max_wait_s: float | None = None,
                abort: threading.Event | None = None) -> Ticket:
        """``RequestWindow.acquire`` of the group's window; hand the ticket to ``release``."""
        return self.windows[group].acquire(priority, max_wait_s, abort)

    def release(self, group: Group, ticket: Ticket) -> None:
        self.windows[group].release(ticket)

    def wake(self) -> None:
        for window in self.windows.values():
            window.wake()

    def penalise(self, group: Group, retry_after_s: float | None = None) -> float:
        return self.windows[group].penalise(retry_after_s)

    def ban(self, group: Group, block_s: float | None = None) -> float:
        """After a 418 answered a call of ``group``: close every window for ``block_s`` (the
        venue's figure, at most ``BAN_MAX_S``) or, when the venue gave none, ``BAN_DEFAULT_S``
        doubled for each block since the last quiet ``BAN_STREAK_RESET_S``. Returns the block
        length in seconds."""
        with self._ban_lock:
            now = self._clock()
            if now - self._banned_until > BAN_STREAK_RESET_S:
                self._ban_streak = 0
            if block_s is not None and block_s > 0:
                pause = min(block_s, BAN_MAX_S)
            else:
                pause = min(BAN_DEFAULT_S * 2 ** min(self._ban_streak, 16), BAN_MAX_S)
            self._ban_streak += 1
            self._bans += 1
            self._last_block_s = pause
            self._banned_until = max(self._banned_until, now + pause)
        self.windows[group].count_rate_limited()
        for window in self.windows.values():
            window.close_for(pause)
        return pause

    def ban_stats(self) -> BanStats:
        with self._ban_lock:
            left = max(0.0, self._banned_until - self._clock())
            return BanStats(left, self._bans, self._last_block_s)

    def closed_for(self, group: Group) -> float:
        return self.windows[group].closed_for()

    def observe_headers(self, group: Group, headers) -> None:
        """Feed a response's ``Remaining-Req`` header (if any) back into the right window.

        Upbit's ``default`` group is our PRIVATE window and ``order`` our ORDER window; every
        other (quotation) group name counts against PUBLIC. Without a header, nothing changes.
        """
        parsed = parse_remaining_req(headers.get("Remaining-Req"))
        if parsed is None:
            return
        name, remaining = parsed
        target = {"default": Group.PRIVATE, "order": Group.ORDER}.get(name, Group.PUBLIC)
        if name not in ("default", "order") and group is not Group.PUBLIC:
            target = group  # an unfamiliar group name on a private call: trust the call's window
        self.windows[target].observe_remaining(remaining)

    def stats(self) -> dict[Group, WindowStats]:
        return {group: window.stats() for group, window in self.windows.items()}


def parse_remaining_req(value: str | None) -> tuple[str, int] | None:
    """``"group=default; min=1800; sec=29"`` -> ``("default", 29)``; None if absent/garbled."""
    if not value:
        return None
    match = _REMAINING_REQ.search(value)
    if not match:
        return None
    return match.group(1), int(match.group(3))
