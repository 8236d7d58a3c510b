"""The sanity guard: a net edge far beyond a market's usual range is not traded until a second,
independent look at the venues confirms it.

A bad frame, a book stuck on a stale level or a venue's wrong tick can show a gap of hundreds
of basis points that does not exist; trading it buys at a price nobody sells at. Step by step,
for a market whose best top-of-book net edge (or its signal's) is above
``strategy.sanity_max_net_bps`` (the line):

1. ``gate`` (strategy thread): the first time in an episode the market is held ("awaiting a
   REST look") and a look is queued for the ``sanity-check`` thread. The strategy never waits
   for HTTP; the held market is skipped (reason ``sanity``), shown on the panel and in metrics.
2. ``sanity-check`` thread: reads both venues' books by REST (``get_orderbook``) and re-runs
   the strategy's own spread walk on them for the same direction (``look``: the one copy of the
   rule). The gap is confirmed when the REST books' top-of-book edge is above the line too and
   the walk finds a signal; otherwise (or when a REST read fails) it is refuted.
3. Confirmed: for ``CONFIRM_TTL_S`` the market's signals in that direction pass the gate, so
   the next evaluation after the verdict trades it (the strategy's full pass comes at least every
   ``strategy.wait_timeout_ms``). After that, a gap still above the line is looked at again.
   Refuted: the market stays held for ``RECHECK_S``, then a gap still there is looked at again.
4. Each verdict raises an alert with the numbers (``sanity_confirmed`` / ``sanity_refuted``),
   once per verdict and episode; the episode ends, and the market's state is forgotten, when
   its top-of-book edge falls back to the line or below.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable

from loguru import logger

from karb.alerts import Alert
from karb.clock import NS_PER_S, Clock
from karb.model import BookView, Signal, Venue

CONFIRM_TTL_S = 2.0  # a confirmation lets signals through this long
RECHECK_S = 10.0  # a refuted gap is held this long before it is looked at again

ReadBook = Callable[[Venue, str], BookView]
# (market, views, buy venue, sell venue, now) -> (top-of-book net bps, signal or None)
Look = Callable[[str, dict, Venue, Venue, int], "tuple[float | None, Signal | None]"]


@dataclass
class _State:
    verdict: str  # checking | confirmed | refuted
    direction: str
    until_ns: int = 0
    reason: str = ""


class SanityGuard:
    def __init__(self, line_bps: float, read_book: ReadBook, look: Look, clock: Clock,
                 on_alert: Callable[[Alert], None] | None = None) -> None:
        self.line_bps = line_bps
        self._read_book = read_book
        self._look = look
        self._clock = clock
        self._on_alert = on_alert
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self._alerted: set[tuple[str, str]] = set()  # (market, verdict) alerted this episode
        self._queue: queue.Queue[tuple | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.confirmed = 0
        self.refuted = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sanity-check", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)

    def held(self) -> dict[str, str]:
        """Markets the guard holds now, with why (for the panel and metrics)."""
        with self._lock:
            return {m: s.reason for m, s in self._states.items() if s.verdict != "confirmed"}

    def gate(self, market: str, signal: Signal | None, top_bps: float | None,
             now_ns: int) -> str | None:
        """Why ``signal`` may not go out now, or None. ``top_bps``: the market's best top-of-book
        net edge this pass (both directions). Strategy thread; never blocks on I/O."""
        if top_bps is None or top_bps <= self.line_bps:
            self._end_episode(market)
            return None
        if signal is None:
            return None
        direction = signal.direction
        with self._lock:
            state = self._states.get(market)
            if state is not None and state.verdict == "checking":
                return state.reason
            if state is not None and now_ns < state.until_ns:
                if state.verdict == "refuted":
                    return state.reason
                if state.direction == direction:
                    return None  # confirmed
            reason = (f"net {max(top_bps, signal.net_bps):+.0f} bps is beyond {self.line_bps:.0f}: "
                      "awaiting a REST look at both books")
            self._states[market] = _State("checking", direction, reason=reason)
        self._queue.put((market, signal.buy_venue, signal.sell_venue, top_bps))
        return reason

    def _end_episode(self, market: str) -> None:
        # only gate (this thread) adds states, and check alerts only a market with one: with
        # none and nothing alerted there is nothing to forget (the common case, no lock)
        if market not in self._states and not self._alerted:
            return
        with self._lock:
            if market in self._states:
                del self._states[market]
            self._alerted = {a for a in self._alerted if a[0] != market}

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                self.check(*job)
            except Exception:  # a bug must not end the thread: the market stays held
                logger.exception("sanity check of {} failed", job[0])

    def check(self, market: str, buy_venue: Venue, sell_venue: Venue, ws_bps: float) -> bool:
        """The second look (``sanity-check`` thread): REST books, the same walk. True if the
        gap is confirmed."""
        direction = f"{sell_venue.value}_sell"
        seen = f"{market} {direction}: net {ws_bps:+.1f} bps on the feeds (line {self.line_bps:.0f})"
        try:
            views = {venue: self._read_book(venue, market) for venue in Venue}
        except Exception as exc:  # VenueError, timeouts: no second look is no confirmation
            confirmed, rest = False, f"REST book read failed ({type(exc).__name__}: {exc})"
        else:
            top, signal = self._look(market, views, buy_venue, sell_venue,
                                     self._clock.monotonic_ns())
            confirmed = top is not None and top > self.line_bps and signal is not None
            shown = "no book" if top is None else f"{top:+.1f} bps"
            rest = f"REST books show {shown}" + (
                f", a signal of {signal.volume} at {signal.net_bps:+.1f} bps" if signal else
                ", no signal")
        now_ns = self._clock.monotonic_ns()
        verdict = "confirmed" if confirmed else "refuted"
        if confirmed:
            self.confirmed += 1
            until = now_ns + int(CONFIRM_TTL_S * NS_PER_S)
            note = f"confirmed: tradable for {CONFIRM_TTL_S:.0f} s"
        else:
            self.refuted += 1
            until, note = now_ns + int(RECHECK_S * NS_PER_S), f"refuted: held {RECHECK_S:.0f} s"
        with self._lock:
            state = self._states.get(market)
            if state is None or state.verdict != "checking":
                return confirmed  # the gap closed while we looked
            state.verdict, state.until_ns = verdict, until
            state.reason = f"sanity {verdict}: {rest}"
            first = (market, verdict) not in self._alerted
            self._alerted.add((market, verdict))
        message = f"{seen}; {rest}; {note}"
        if first and self._on_alert is not None:
            self._on_alert(Alert(f"sanity_{verdict}", market, message, "warning"))
        else:
            logger.warning("sanity {}: {}", verdict, message)
        return confirmed
