"""The ``strategy`` thread: wake on every book change, find executable spreads, emit signals.

It waits on ``BookBoard.wait_for_change`` with a short timeout (no busy spin: an idle strategy
sleeps in ``Event.wait``), then re-evaluates the markets whose books changed (``step``). Which
ones: the engine's feeds note each market in ``BookChanges`` before updating its book
(``karb.book_changes``), so a wake costs O(changed), not O(markets); without one (tests,
tools) the wake compares every book's version number in one C-level pass. At least once per
``wait_timeout_ms`` a full pass compares every book's version (a change that came by another
path than the feeds is seen there) and also looks at
every market whose answer can change with no book change (a cooldown may have ended, balances
or a venue state changed): those that last showed an edge at the top of the books in some
direction or were held by a venue state, and all of them after a rules refresh (new fees). A
market whose last look found no edge at the top, or an invalid, stale or skewed book, can only
be changed by a new book version, so the full pass leaves it alone: ``step`` submits exactly
what ``evaluate`` over every market would, without the O(markets) pass every 50 ms.

Per market it needs both books valid, each received within ``max_book_age_ms``, and their
receive times within ``max_skew_ms`` of each other. For each direction whose top of book clears
the direction's threshold (skewed by inventory; a float test, so a market without an edge costs
no ``Decimal`` work) it walks the books (``karb.spread``) in floats, capped by config
``max_volume``, the sell venue's available coin, the buy venue's available KRW, risk's
``max_trade_krw`` and position room, and the inventory bands. The candidate is then sized
exactly (``karb.sizing``) against the very checks risk, the ledger and inventory apply, so the
engine never refuses a signal on a limit it already knew.

A signal whose edge is far beyond the market's usual range (``strategy.sanity_max_net_bps``)
passes the sanity guard first (``karb.sanity``): it goes out only once a REST read of both books,
walked by this same code (``look``), shows the gap too; until then the market is skipped.

Never twice on the same evidence: after a taken signal, a market trades again only once *both*
of its books have a new version. Our own fills change both venues' books; until each feed shows
that, its book still displays liquidity we took or tried to take (a quiet market's book can sit
unchanged for seconds, and re-trading it just repeats a miss or double-counts a level).

The better direction's signal goes to ``on_signal`` (the executor's ``submit``), which returns
None if it took it, or why not. A taken signal starts the market's cooldown and counts in
``signals``; a refused one counts in ``refused`` by reason, backs the market off for the same
cooldown, and is logged once per market and reason (again when the reason changes; a line when
a signal is taken again). Log lines are written after ``on_signal`` returns, so logging never
delays the legs.
"""
from __future__ import annotations

import dataclasses
import math
import re
import threading
import uuid
from collections import Counter
from decimal import Decimal
from itertools import compress
from operator import add, attrgetter, ne
from typing import Callable

from loguru import logger

from karb.book_changes import BookChanges
from karb.clock import NS_PER_MS, Clock
from karb.config import Config
from karb.inventory import Inventory
from karb.model import BookView, Signal, Venue, base_currency, quote_currency
from karb.risk import Risk, taker_fee
from karb.rules import RulesBook, round_down
from karb.sanity import ReadBook, SanityGuard
from karb.sizing import refusal
from karb.spread import describe, finalize, top_net_bps, walk_spread
from karb.threads import stop_thread

DIRECTIONS = ((Venue.BITHUMB, Venue.UPBIT), (Venue.UPBIT, Venue.BITHUMB))  # (buy, sell)
OnSignal = Callable[[Signal], "str | None"]
_AMOUNT = re.compile(r"-?\d[\d,.]*(?:E[+-]?\d+)?")
_VERSION = attrgetter("view.version")
# book problems (they clear only with a new book version), per venue: no f-string per look
_INVALID = {venue: f"{venue.value} book invalid" for venue in Venue}
_STALE = {venue: f"{venue.value} book stale" for venue in Venue}
_SKEWED = "books skewed"


def reason_kind(reason: str) -> str:
    """A refusal without its amounts: the same refusal at other numbers is the same reason."""
    return _AMOUNT.sub("#", reason)


def new_signal_id() -> str:
    """20 hex characters (80 random bits): leg ids add a short suffix and stay short."""
    return uuid.uuid4().hex[:20]


class Strategy:
    def __init__(self, board, rules: RulesBook, risk: Risk, inventory: Inventory,
                 config: Config, clock: Clock, on_signal: OnSignal,
                 read_book: ReadBook | None = None, on_alert=None,
                 new_id: Callable[[], str] = new_signal_id, changes: BookChanges | None = None):
        """``read_book(venue, market)`` (a REST book read) turns the sanity guard on; without
        it (unit tests, a backtest with no venue to ask) no edge is held for a second look.
        ``new_id`` makes signal ids (a backtest seeds them). ``changes``: the markets the feeds
        note before each update (the strategy thread then looks at those only)."""
        self.changes = changes
        self.board = board
        self.rules = rules
        self.risk = risk
        self.inventory = inventory
        self.config = config
        self.settings = config.strategy
        self.clock = clock
        self.on_signal = on_signal
        self.new_id = new_id  # a backtest passes a seeded source: same seed, same ids
        self.markets = list(config.markets)
        self._max_age_ns = self.settings.max_book_age_ms * NS_PER_MS
        self._max_skew_ns = self.settings.max_skew_ms * NS_PER_MS
        self._cooldown_ns = self.settings.cooldown_ms * NS_PER_MS
        # inventory skew lowers a direction's threshold by at most this much
        self._lowest_threshold = max(self.settings.threshold_bps - inventory.max_relief_bps, 0.0)
        self._max_volume = {m: float(v) for m, v in self.settings.max_volume.items()}
        self._fees: dict[tuple[Venue, str], tuple[object, float]] = {}
        self._fee_pairs: dict[str, tuple[float, float]] = {}  # market -> (upbit, bithumb) fee
        self._rules_version = self._full_rules_version = -1
        self._seen: dict[str, tuple[int, int]] = {}
        # per market, fixed for the board's life: index, Upbit book, Bithumb book, and the
        # last_net_bps keys of its two directions (in DIRECTIONS order)
        self._up_books = [board.get(Venue.UPBIT, m) for m in self.markets]
        self._bt_books = [board.get(Venue.BITHUMB, m) for m in self.markets]
        self._slots = {m: (i, self._up_books[i], self._bt_books[i],
                           tuple((m, f"{sell.value}_sell") for _, sell in DIRECTIONS))
                       for i, m in enumerate(self.markets)}
        self._scan = [-1] * len(self.markets)  # step: each market's version sum at its last look
        self._pending: set[str] = set()  # noted markets whose versions had not moved yet
        self._aged: set[str] = set()  # ... of those, the ones pending at the last full pass
        self._loud: set[int] = set()  # markets a full pass must look at again (module docstring)
        self._cooldown_until: dict[str, int] = {}
        self._traded_on: dict[str, tuple[int, int]] = {}  # market -> book versions of its last signal
        # market -> (reason kind logged, refusals this episode, last reason)
        self._refusing: dict[str, tuple[str, int, str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.evaluations = 0
        self.signals = 0  # taken by on_signal
        self.refused: Counter[str] = Counter()  # reason kind -> signals on_signal refused
        self.skipped: Counter[str] = Counter()  # why a market/direction made no signal
        self.last_net_bps: dict[tuple[str, str], float | None] = {}  # (market, direction)
        self.last_reason: dict[str, str] = {}  # market -> last refusal
        self.venue_states: dict[tuple[Venue, str], str] = {}  # (venue, market) -> why not tradable
        self.sanity = None if read_book is None else SanityGuard(
            self.settings.sanity_max_net_bps, read_book, self.look, clock, on_alert)

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self.sanity is not None:
            self.sanity.start()
        self._thread = threading.Thread(target=self._run, name="strategy", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        stop_thread(self._thread, timeout, self._stop)
        if self.sanity is not None:
            self.sanity.stop(timeout)

    def set_venue_state(self, venue: Venue, market: str, state: str | None) -> None:
        """A venue state that keeps ``market`` from trading (a venue's warning or wallet state),
        or None when it clears. Any thread; read on the next pass."""
        if state:
            self.venue_states[(venue, market)] = state
        else:
            self.venue_states.pop((venue, market), None)

    def venue_state(self, market: str) -> str | None:
        """Why ``market`` is held by a venue state, or None."""
        held = [f"{venue.value} {state}" for (venue, m), state in list(self.venue_states.items())
                if m == market]
        return "; ".join(sorted(held)) or None

    def stats(self) -> dict:
        return {
            "evaluations": self.evaluations,
            "signals": self.signals,
            "refused": dict(self.refused),
            "skipped": dict(self.skipped),
            "net_bps": dict(self.last_net_bps),
            "last_reason": dict(self.last_reason),
            "sanity_held": self.sanity.held() if self.sanity is not None else {},
        }

    def _run(self) -> None:
        seq = -1
        timeout_s = self.settings.wait_timeout_ms / 1000
        full_every_ns = self.settings.wait_timeout_ms * NS_PER_MS
        last_full_ns = 0
        while not self._stop.is_set():
            seq = self.board.wait_for_change(seq, timeout_s)
            now_ns = self.clock.monotonic_ns()
            # a full pass at least once per timeout: cooldowns end and balances change
            # without any book changing, even on a board that never goes quiet
            full = now_ns - last_full_ns >= full_every_ns
            if full:
                last_full_ns = now_ns
            try:
                self.step(now_ns, full)
            except Exception:  # a bug in one pass must not end the thread
                logger.exception("strategy pass failed")

    def step(self, now_ns: int, full: bool = False) -> list[Signal]:
        """One wake of the strategy thread: submit what ``evaluate(now_ns, changed_only=not
        full)`` would, looking only at the markets whose books changed since the last step and,
        on a full pass, those whose answer can change without a book change (module docstring).
        Strategy thread only (or a test driving it)."""
        if full or self.changes is None:
            indices = self._scan_all(full)
        else:
            indices = self._noted()
        markets = self.markets
        return self._pass(now_ns, [markets[i] for i in indices], not full, fresh_from_all=True)

    def _scan_all(self, full: bool):
        # every book's version in one C-level pass; versions only grow, so a changed sum is a
        # changed market
        sums = list(map(add, map(_VERSION, self._up_books), map(_VERSION, self._bt_books)))
        before, self._scan = self._scan, sums
        indices = list(compress(range(len(sums)), map(ne, sums, before)))
        if self.changes is not None:
            # marks the scan saw move are in indices; one whose versions still have not moved
            # after a whole full-pass interval was an update that changed nothing
            slots = self._slots
            unmoved = {m for m in self.changes.take() | self._pending
                       if sums[slots[m][0]] == before[slots[m][0]]}
            self._pending = unmoved - self._aged
            self._aged = set(self._pending)
        if full:
            version = self.rules.version
            if version != self._full_rules_version:  # new fees: every market's edge moved
                self._full_rules_version = version
                return range(len(sums))
            if self._loud:
                return sorted(self._loud.union(indices))  # in market order, as evaluate
        return indices

    def _noted(self) -> list[int]:
        # the markets noted since the last wake (and those noted earlier whose update had not
        # landed yet) whose versions moved since their last look
        marks = self.changes.take()
        if self._pending:
            marks |= self._pending
        slots, scan = self._slots, self._scan
        indices = []
        pending = set()
        for market in marks:
            i, up_book, bt_book, _ = slots[market]
            version = up_book.view.version + bt_book.view.version
            if version != scan[i]:
                scan[i] = version
                indices.append(i)
            else:
                pending.add(market)
        self._pending = pending
        indices.sort()  # market order, as evaluate
        return indices

    def cooldown_ended(self, since_ns: int, now_ns: int) -> bool:
        """Whether a market's cooldown ended in ``(since_ns, now_ns]`` (a backtest runs a full
        pass only when one did, or something else a full pass could see changed)."""
        return any(since_ns < end <= now_ns for end in self._cooldown_until.values())

    # --- evaluation ---------------------------------------------------------------------
    def evaluate(self, now_ns: int, changed_only: bool = False,
                 markets: tuple[str, ...] | None = None) -> list[Signal]:
        """One pass over the markets; return the signals submitted. Strategy thread only.

        ``changed_only`` skips markets whose two book versions are those last evaluated;
        ``markets`` (a backtest that knows which book an event changed) looks at those only.
        """
        return self._pass(now_ns, markets or self.markets, changed_only, fresh_from_all=False)

    def _pass(self, now_ns: int, markets, changed_only: bool,
              fresh_from_all: bool) -> list[Signal]:
        # ``fresh_from_all``: if none of ``markets`` has fresh books, look for one among all
        # markets (what a pass over all of them would tell risk's stale-data watch)
        submitted = []
        any_fresh = False
        blocked = self.risk.blocked()
        version = self.rules.version
        if version != self._rules_version:  # a rules refresh: fees are read again
            self._rules_version = version
            self._fee_pairs = {}
        slots, seen, loud = self._slots, self._seen, self._loud
        for market in markets:
            i, up_book, bt_book, net_keys = slots[market]
            up = up_book.view
            bt = bt_book.view
            versions = (up.version, bt.version)
            changed = seen.get(market) != versions
            if changed_only and not changed:
                if not any_fresh:  # risk's stale-data watch needs one fresh market, not all
                    any_fresh = self._book_problem(up, bt, now_ns) is None
                continue
            problem = self._book_problem(up, bt, now_ns)
            seen[market] = versions
            self.evaluations += 1
            if problem is not None:
                loud.discard(i)  # only a new book version can clear it
                self._skip(market, problem)
                continue
            any_fresh = True  # a venue state is no stale data
            problem = self._venue_problem(market)
            if problem:
                loud.add(i)  # the state may clear with no book change
                self._skip(market, problem)
                continue
            signal, top, edge = self._best_signal(market, up, bt, net_keys, now_ns, blocked)
            if edge:
                loud.add(i)
            else:
                loud.discard(i)
            if self.sanity is not None:
                held = self.sanity.gate(market, signal, top, now_ns)
                if held:
                    self._skip(market, "sanity", held)
                    continue
            if signal is None:
                continue
            if not changed:
                signal = dataclasses.replace(signal, on_update=False)
            try:
                refused = self.on_signal(signal)
            except Exception:
                logger.exception("submitting signal {} failed", signal.id)
                refused = "submit raised"
            if refused:
                self._refused(market, signal, refused, now_ns)
                continue
            self.signals += 1
            self._cooldown_until[market] = now_ns + self._cooldown_ns
            self._traded_on[market] = versions
            submitted.append(signal)
            logger.info("{}", describe(signal))
            episode = self._refusing.pop(market, None)
            if episode:
                logger.info("{} trading again after {} refused signal(s), the last: {}", market,
                            episode[1], episode[2])
        if fresh_from_all and not any_fresh:
            problem = self._book_problem
            any_fresh = any(problem(u.view, b.view, now_ns) is None
                            for u, b in zip(self._up_books, self._bt_books))
        self.risk.note_market_data(any_fresh, now_ns)
        return submitted

    def _book_problem(self, up: BookView, bt: BookView, now_ns: int) -> str | None:
        for view in (up, bt):
            if not view.valid:
                return _INVALID[view.venue]
            if now_ns - view.as_of_ns > self._max_age_ns:
                return _STALE[view.venue]
        if abs(up.recv_ns - bt.recv_ns) > self._max_skew_ns:
            return _SKEWED
        return None

    def _venue_problem(self, market: str) -> str | None:
        state = self.venue_state(market) if self.venue_states else None
        return f"venue state: {state}" if state else None

    def _best_signal(self, market: str, up: BookView, bt: BookView, net_keys: tuple,
                     now_ns: int, blocked: str | None) -> tuple[Signal | None, float | None, bool]:
        """(the better direction's signal or None, the best top-of-book net edge of both
        directions, whether either direction's top clears the lowest threshold)."""
        up_fee, bt_fee = self._fee_pairs.get(market) or self._fee_pair(market)
        nets = (top_net_bps(bt.asks, up.bids, bt_fee, up_fee),  # DIRECTIONS[0]: sell on Upbit
                top_net_bps(up.asks, bt.bids, up_fee, bt_fee))  # DIRECTIONS[1]: sell on Bithumb
        last = self.last_net_bps
        last[net_keys[0]], last[net_keys[1]] = nets
        net_up, net_bt = nets
        top = net_up if net_bt is None or (net_up is not None and net_up >= net_bt) else net_bt
        lowest = self._lowest_threshold
        if (net_up is None or net_up < lowest) and (net_bt is None or net_bt < lowest):
            return None, top, False  # the common case: no edge at the top, nothing deeper either
        views = {Venue.UPBIT: up, Venue.BITHUMB: bt}
        best = None
        for (buy_venue, sell_venue), net in zip(DIRECTIONS, nets):
            if net is None or net < lowest:
                continue
            threshold = self.inventory.threshold_bps(market, sell_venue, self.settings.threshold_bps)
            if net < threshold:
                continue
            if blocked:
                self._skip(market, "blocked", blocked)
                continue
            if now_ns < self._cooldown_until.get(market, 0):
                self._skip(market, "cooldown")
                continue
            traded = self._traded_on.get(market)
            if traded is not None and (traded[0] == up.version or traded[1] == bt.version):
                self._skip(market, "same book", "a book unchanged since the last trade here")
                continue
            signal = self._walk(market, views, buy_venue, sell_venue, threshold, now_ns)
            if isinstance(signal, tuple):
                self._skip(market, *signal)
                continue
            # sized to pass; this fails only if a leg thread moved the ledger since the cap
            reason = refusal(self.risk, self.inventory, signal)
            if reason:
                self._skip(market, "limits", reason)
                continue
            if best is None or signal.est_profit_krw > best.est_profit_krw:
                best = signal
        return best, top, True

    def _walk(self, market: str, views: dict[Venue, BookView], buy_venue: Venue,
              sell_venue: Venue, threshold: float, now_ns: int) -> Signal | tuple[str, str]:
        """Walk one direction's books within every cap and size the signal exactly; or the
        skip (kind, detail) saying why there is none."""
        asks, bids = views[buy_venue].asks, views[sell_venue].bids
        buy_fee, sell_fee = self._fee(buy_venue, market), self._fee(sell_venue, market)
        walk = walk_spread(asks, bids, buy_fee, sell_fee, threshold,
                           self._volume_cap(market, buy_venue, sell_venue, asks[0][0]),
                           self._krw_budget(market, buy_venue, buy_fee))
        if walk is None:
            return ("no size within caps", "")
        signal = finalize(walk, market, buy_venue, sell_venue, asks, bids,
                          self.rules.get(buy_venue, market), self.rules.get(sell_venue, market),
                          buy_fee, sell_fee, threshold, now_ns,
                          (views[buy_venue].version, views[sell_venue].version),
                          (views[buy_venue].recv_ns, views[sell_venue].recv_ns),
                          self.new_id(), self._exact_cap(market, buy_venue, sell_venue))
        return ("unfit", signal) if isinstance(signal, str) else signal

    def look(self, market: str, views: dict[Venue, BookView], buy_venue: Venue,
             sell_venue: Venue, now_ns: int) -> tuple[float | None, Signal | None]:
        """The top-of-book net edge and the signal this strategy would find on ``views`` in one
        direction, with no side effects: the sanity guard's second look at REST books."""
        asks, bids = views[buy_venue].asks, views[sell_venue].bids
        net = top_net_bps(asks, bids, self._fee(buy_venue, market), self._fee(sell_venue, market))
        threshold = self.inventory.threshold_bps(market, sell_venue, self.settings.threshold_bps)
        if net is None or net < threshold:
            return net, None
        signal = self._walk(market, views, buy_venue, sell_venue, threshold, now_ns)
        return net, None if isinstance(signal, tuple) else signal

    def _volume_cap(self, market: str, buy_venue: Venue, sell_venue: Venue, ask: float) -> float:
        # float caps for the walk (at the best ask); _exact_cap settles them at the limits
        coin = base_currency(market)
        return min(
            self._max_volume.get(market, math.inf),
            float(self.risk.available(sell_venue, coin)),
            float(self.risk.position_room(coin, Decimal(repr(ask)))),
            self.inventory.volume_cap(market, buy_venue, sell_venue, ask),
        )

    def _exact_cap(self, market: str, buy_venue: Venue, sell_venue: Venue):
        """``finalize``'s cap: the largest volume on a grid that risk, the ledger, inventory
        and ``max_volume`` accept at given limit prices (``Decimal``, candidates only)."""
        buy_fee = taker_fee(self.config, self.rules, buy_venue, market)
        sell_fee = taker_fee(self.config, self.rules, sell_venue, market)
        max_volume = self.settings.max_volume.get(market)

        def cap(buy_price: Decimal, sell_price: Decimal, step: Decimal) -> Decimal:
            caps = [self.risk.exact_cap(market, buy_venue, sell_venue, buy_price, step),
                    self.inventory.exact_cap(market, buy_venue, sell_venue, buy_price, sell_price,
                                             buy_fee, sell_fee, step)]
            if max_volume is not None:
                caps.append(round_down(max_volume, step))
            return min(c for c in caps if c is not None)
        return cap

    def _krw_budget(self, market: str, buy_venue: Venue, buy_fee: float) -> float:
        # budget for buy_limit * volume * (1 + fee): what the ledger will reserve
        return min(float(self.risk.available(buy_venue, quote_currency(market))),
                   float(self.risk.max_trade_krw) * (1.0 + buy_fee))

    def _fee(self, venue: Venue, market: str) -> float:
        # cached per rules object: RulesBook swaps whole objects when the venue refreshes
        rules = self.rules.get(venue, market)
        cached = self._fees.get((venue, market))
        if cached is None or cached[0] is not rules:
            cached = (rules, float(taker_fee(self.config, self.rules, venue, market)))
            self._fees[(venue, market)] = cached
        return cached[1]

    def _fee_pair(self, market: str) -> tuple[float, float]:
        # (upbit, bithumb) taker fees for the hot path; dropped on a rules refresh (_pass)
        pair = self._fee_pairs[market] = (self._fee(Venue.UPBIT, market),
                                          self._fee(Venue.BITHUMB, market))
        return pair

    def _refused(self, market: str, signal: Signal, reason: str, now_ns: int) -> None:
        """Back the market off; log once per reason until it changes or a signal is taken."""
        kind = reason_kind(reason)
        self.refused[kind] += 1
        self._skip(market, "refused", reason)
        self._cooldown_until[market] = now_ns + self._cooldown_ns
        logged, count, _ = self._refusing.get(market, (None, 0, ""))
        self._refusing[market] = (kind, count + 1, reason)
        if kind != logged:
            logger.info("{} refused: {} (logged once until the reason changes)", describe(signal),
                        reason)

    def _skip(self, market: str, kind: str, detail: str = "") -> None:
        self.skipped[kind] += 1
        self.last_reason[market] = f"{kind}: {detail}" if detail else kind
