"""Token buckets that keep each venue's REST traffic under its per-second limits.

One ``RateLimiter`` per venue holds three buckets, one per endpoint group:

* ``PUBLIC``  quotation calls (markets, ticker, orderbook);
* ``PRIVATE`` account calls (balances, order queries, chance);
* ``ORDER``   placements and cancels. ``reserve_fraction`` of this bucket is kept for
  ``priority`` traffic (cancels, unwind orders), so a recovery is never stuck behind
  ordinary orders.

Each bucket refills continuously at ``rate`` tokens per second up to a burst of one second's
worth. ``acquire`` blocks the calling thread on a ``Condition`` timed wait until a token is
free; the clock and the wait are injectable so tests run on a fake clock without sleeping.

The venue's own count wins over ours: Upbit answers every call with
``Remaining-Req: group=default; min=1800; sec=29``; when ``sec`` is below what the bucket
believes, the bucket drops to it (``observe_remaining``). A 429 empties the bucket and, with a
``Retry-After``, holds it closed for that long (``penalise``).
"""
from __future__ import annotations

import enum
import re
import threading
import time
from typing import Callable

from karb.config import RateLimitConfig

Clock = Callable[[], float]
Waiter = Callable[[threading.Condition, float], None]

_EPSILON = 1e-9  # float refill arithmetic must not leave a waiter one rounding error short
_MIN_WAIT_S = 1e-6
_REMAINING_REQ = re.compile(r"group=([a-z\-]+);\s*min=(\d+);\s*sec=(\d+)")
PENALTY_S = 1.0  # pause after a 429 that carried no Retry-After


class Group(str, enum.Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    ORDER = "order"


def _condition_wait(cond: threading.Condition, timeout: float) -> None:
    cond.wait(timeout)


class TokenBucket:
    """A thread-safe token bucket.

    Parameters
    ----------
    rate_per_s
        Refill rate; the burst (capacity) is one second's worth, at least one token.
    reserve_fraction
        Share of the capacity that only ``priority`` acquisitions may use.
    clock, wait
        ``clock()`` returns monotonic seconds; ``wait(condition, seconds)`` blocks with the
        condition's lock held-and-released (``Condition.wait``). Injected by tests.
    """

    def __init__(self, rate_per_s: float, reserve_fraction: float = 0.0,
                 clock: Clock = time.monotonic, wait: Waiter = _condition_wait):
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, was {rate_per_s}")
        self.rate = float(rate_per_s)
        self.capacity = max(1.0, self.rate)
        # Never reserve so much that ordinary traffic could not take a single token.
        self.reserve = min(max(0.0, reserve_fraction) * self.capacity, self.capacity - 1.0)
        self._clock = clock
        self._wait = wait
        self._cond = threading.Condition()
        self._tokens = self.capacity
        self._stamp = clock()
        self._blocked_until = 0.0

    @property
    def tokens(self) -> float:
        with self._cond:
            self._refill(self._clock())
            return self._tokens

    def acquire(self, priority: bool = False) -> float:
        """Take one token, blocking until one is free; return the seconds waited.

        Called from any thread (leg threads, feed resync, CLI). Takes the bucket's lock only
        for the bookkeeping; the wait releases it.
        """
        floor = 1.0 if priority else 1.0 + self.reserve
        with self._cond:
            start = now = self._clock()
            while True:
                self._refill(now)
                if now >= self._blocked_until and self._tokens + _EPSILON >= floor:
                    self._tokens = max(0.0, self._tokens - 1.0)
                    return now - start
                delay = max(self._blocked_until - now, (floor - self._tokens) / self.rate, _MIN_WAIT_S)
                self._wait(self._cond, delay)
                now = self._clock()

    def observe_remaining(self, remaining: int) -> None:
        """The venue says ``remaining`` calls are left this second: never believe in more."""
        with self._cond:
            self._refill(self._clock())
            if remaining < self._tokens:
                self._tokens = float(max(0, remaining))

    def penalise(self, retry_after_s: float | None = None) -> None:
        """After a 429: empty the bucket and keep it closed ``retry_after_s``, or one whole
        second when the venue did not say (its limits count per second, and Upbit answers
        requests that keep coming after a 429 with a 418 ban)."""
        with self._cond:
            now = self._clock()
            self._refill(now)
            self._tokens = 0.0
            pause = retry_after_s if retry_after_s else PENALTY_S
            self._blocked_until = max(self._blocked_until, now + pause)

    def _refill(self, now: float) -> None:
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._stamp = now


class RateLimiter:
    """The three buckets of one venue, built from its ``rate_limits`` config."""

    def __init__(self, config: RateLimitConfig, clock: Clock = time.monotonic,
                 wait: Waiter = _condition_wait):
        self.buckets: dict[Group, TokenBucket] = {
            Group.PUBLIC: TokenBucket(config.public_per_s, 0.0, clock, wait),
            Group.PRIVATE: TokenBucket(config.private_per_s, 0.0, clock, wait),
            Group.ORDER: TokenBucket(config.order_per_s, config.reserve_fraction, clock, wait),
        }

    def acquire(self, group: Group, priority: bool = False) -> float:
        return self.buckets[group].acquire(priority)

    def penalise(self, group: Group, retry_after_s: float | None = None) -> None:
        self.buckets[group].penalise(retry_after_s)

    def observe_headers(self, group: Group, headers) -> None:
        """Feed a response's ``Remaining-Req`` header (if any) back into the right bucket.

        Upbit's ``default`` group is our PRIVATE bucket and ``order`` our ORDER bucket; every
        other (quotation) group name counts against PUBLIC. Without a header, nothing changes.
        """
        parsed = parse_remaining_req(headers.get("Remaining-Req"))
        if parsed is None:
            return
        name, remaining = parsed
        target = {"default": Group.PRIVATE, "order": Group.ORDER}.get(name, Group.PUBLIC)
        if name not in ("default", "order") and group is not Group.PUBLIC:
            target = group  # an unfamiliar group name on a private call: trust the call's bucket
        self.buckets[target].observe_remaining(remaining)


def parse_remaining_req(value: str | None) -> tuple[str, int] | None:
    """``"group=default; min=1800; sec=29"`` -> ``("default", 29)``; None if absent/garbled."""
    if not value:
        return None
    match = _REMAINING_REQ.search(value)
    if not match:
        return None
    return match.group(1), int(match.group(3))
