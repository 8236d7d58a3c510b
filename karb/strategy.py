"""The ``strategy`` thread: wake on every book change, find executable spreads, emit signals.

It waits on ``BookBoard.wait_for_change`` with a short timeout (no busy spin: an idle strategy
sleeps in ``Event.wait``), then re-evaluates every market whose books changed, and all markets
on each idle timeout (a cooldown may have ended or balances changed with no book change).

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
from typing import Callable

from loguru import logger

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
                 new_id: Callable[[], str] = new_signal_id):
        """``read_book(venue, market)`` (a REST book read) turns the sanity guard on; without
        it (unit tests, a backtest with no venue to ask) no edge is held for a second look.
        ``new_id`` makes signal ids (a backtest seeds them)."""
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
        self._seen: dict[str, tuple[int, int]] = {}
        self._cooldown_until: dict[str, int] = {}
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
                self.evaluate(now_ns, changed_only=not full)
            except Exception:  # a bug in one pass must not end the thread
                logger.exception("strategy pass failed")

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
        submitted = []
        any_fresh = False
        blocked = self.risk.blocked()
        for market in markets or self.markets:
            up = self.board.get(Venue.UPBIT, market).view
            bt = self.board.get(Venue.BITHUMB, market).view
            versions = (up.version, bt.version)
            changed = self._seen.get(market) != versions
            if changed_only and not changed:
                if not any_fresh:  # risk's stale-data watch needs one fresh market, not all
                    any_fresh = self._book_problem(up, bt, now_ns) is None
                continue
            problem = self._book_problem(up, bt, now_ns)
            any_fresh = any_fresh or problem is None  # a venue state is no stale data
            problem = problem or self._venue_problem(market)
            self._seen[market] = versions
            self.evaluations += 1
            if problem:
                self._skip(market, problem)
                continue
            signal = self._best_signal(market, {Venue.UPBIT: up, Venue.BITHUMB: bt}, now_ns,
                                       blocked)
            if self.sanity is not None:
                held = self.sanity.gate(market, signal, self._top_net(market), now_ns)
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
            submitted.append(signal)
            logger.info("{}", describe(signal))
            episode = self._refusing.pop(market, None)
            if episode:
                logger.info("{} trading again after {} refused signal(s), the last: {}", market,
                            episode[1], episode[2])
        self.risk.note_market_data(any_fresh, now_ns)
        return submitted

    def _book_problem(self, up: BookView, bt: BookView, now_ns: int) -> str | None:
        for view in (up, bt):
            if not view.valid:
                return f"{view.venue.value} book invalid"
            if now_ns - view.as_of_ns > self._max_age_ns:
                return f"{view.venue.value} book stale"
        if abs(up.recv_ns - bt.recv_ns) > self._max_skew_ns:
            return "books skewed"
        return None

    def _venue_problem(self, market: str) -> str | None:
        state = self.venue_state(market) if self.venue_states else None
        return f"venue state: {state}" if state else None

    def _top_net(self, market: str) -> float | None:
        nets = [self.last_net_bps.get((market, f"{sell.value}_sell")) for _, sell in DIRECTIONS]
        return max((n for n in nets if n is not None), default=None)

    def _best_signal(self, market: str, views: dict[Venue, BookView], now_ns: int,
                     blocked: str | None) -> Signal | None:
        best = None
        for buy_venue, sell_venue in DIRECTIONS:
            asks, bids = views[buy_venue].asks, views[sell_venue].bids
            buy_fee, sell_fee = self._fee(buy_venue, market), self._fee(sell_venue, market)
            direction = f"{sell_venue.value}_sell"
            net = top_net_bps(asks, bids, buy_fee, sell_fee)
            self.last_net_bps[(market, direction)] = net
            if net is None or net < self._lowest_threshold:
                continue  # the common case: no edge at the top, nothing deeper can have one
            threshold = self.inventory.threshold_bps(market, sell_venue, self.settings.threshold_bps)
            if net < threshold:
                continue
            if blocked:
                self._skip(market, "blocked", blocked)
                continue
            if now_ns < self._cooldown_until.get(market, 0):
                self._skip(market, "cooldown")
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
        return best

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
