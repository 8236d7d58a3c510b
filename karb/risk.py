"""Risk: the gate every signal passes before money moves, and the books kept after.

``approve(signal)`` (called by the executor on the strategy thread) checks, in order: kill
switch, halt, circuit breaker, trade value, position limits, then reserves both legs' worst-case
spend in the ``Ledger`` all-or-nothing. It returns the ``Reservation`` or the reason it refused
(risk checks return reasons, never bare booleans). ``finish(...)`` (called by a leg thread when
a trade is over) books realised PnL and fees exactly, tracks residual exposure, feeds the
circuit breaker and applies the automatic halts: daily realised loss, drawdown from the day's
peak, consecutive failures, and too long on stale market data. A trade is a success (both legs
full), a shortfall (less filled than signalled but harmless: see ``TradeOutcome.harmless``) or
a failure; only failures feed the breaker and the failure streak. Every active halt is kept (by
key: the same halt raised again is one halt) and each is sticky until resumed; the kill switch
stops trading until it is cleared. State changes take ``self._lock``.

Across restarts (``attach_journal``): every new halt is committed to the journal's
``risk_events``, also while already halted, and only an operator's ``karb resume`` clears it: its
``resume`` row clears the halts it showed the operator (ids up to its ``upto``), never one raised
after it was written; ``poll_resume`` acts on it within a second while the engine runs. Breaker
trips and closes are journalled too. ``rebuild`` restores, at start, the KST day's realised PnL,
its peak (drawdown), trade counts and the trailing run of failures, every asset's residual
exposure (all days), every active halt, and the breaker: OPEN until ``reset_s`` after the
journalled trip (wall time), else the failures in the sliding window at their real times. A
``hold`` (an order start-up recovery could not resolve yet) blocks trading like a halt but is not
persisted: the open order is found again by the next start.
"""
from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from loguru import logger

from karb.circuit import CircuitBreaker, CircuitState
from karb.clock import NS_PER_S, Clock
from karb.config import Config
from karb.killswitch import KillSwitch
from karb.ledger import Key, Ledger, Reservation, order_side_amounts
from karb.model import Side, Signal, Venue, base_currency, quote_currency
from karb.rules import RulesBook, round_down
from karb.sizing import steps_within

ZERO = Decimal(0)
KST = timezone(timedelta(hours=9))  # both venues' trading day


@dataclass(frozen=True)
class Halt:
    """An active halt: ``event_id`` is its ``risk_events`` row (None: not journalled, or
    ``pending`` while being written), ``wall_ns`` when it was raised here."""

    reason: str
    event_id: int | None
    wall_ns: int
    pending: bool = False


class TradingState(str, enum.Enum):
    ACTIVE = "active"
    HALTED = "halted"
    KILLED = "killed"


@dataclass(frozen=True)
class TradeOutcome:
    """Everything a finished trade did, summed over its legs and unwind orders (exact KRW).

    ``bought``/``sold`` are coin volumes; ``buy_funds``/``sell_funds`` the venues' reported
    ``executed_funds``; ``fees`` every ``paid_fee``. ``ref_price`` values any residual.
    ``clean``: every order of the trade (legs and unwinds) ended in a normal venue state, filled
    or an IOC remainder cancelled; none refused, errored or unknown (default False: an outcome
    nobody vouched for counts as a failure).
    """

    market: str
    success: bool
    bought: Decimal = ZERO
    buy_funds: Decimal = ZERO
    sold: Decimal = ZERO
    sell_funds: Decimal = ZERO
    fees: Decimal = ZERO
    ref_price: Decimal = ZERO
    clean: bool = False

    @property
    def harmless(self) -> bool:
        """A shortfall, not a failure: not a success, yet every order ended normally, something
        filled, the trade ended flat and realised no loss. Competitors taking part of a level
        before our IOC legs arrive does this every day; it says nothing is wrong. A venue that
        refuses orders, a loss, a residual or a trade where nothing filled at all (the book we
        traded on was not there) still count as failures."""
        return (not self.success and self.clean and self.bought == self.sold
                and self.bought > 0 and self.realised_krw >= 0)

    @property
    def status(self) -> str:
        """The journal's status of the booked trade: filled, shortfall, flat or residual."""
        if self.success:
            return "filled"
        if self.harmless:
            return "shortfall"
        return "flat" if self.residual == 0 else "residual"

    @property
    def residual(self) -> Decimal:
        """Coin left unhedged: positive = long (bought more than sold)."""
        return self.bought - self.sold

    @property
    def realised_krw(self) -> Decimal:
        """Sell funds - buy funds - all fees on the matched volume; exact when flat.

        When a residual remains, the matched part is valued at each side's average price and
        the residual keeps its own cost (it is exposure, not realised).
        """
        if self.bought == self.sold:
            return self.sell_funds - self.buy_funds - self.fees
        matched = min(self.bought, self.sold)
        if matched == 0:
            return -self.fees
        return (matched * self.sell_funds / self.sold
                - matched * self.buy_funds / self.bought - self.fees)


def _done_wall_ns(row: dict, now: int) -> int:
    """When a booked trade finished, in wall time: its intent's wall time plus its monotonic
    submit-to-done span (one run's clock), or the intent's time when the span is not known."""
    if row["submit_ns"] is None or row["done_ns"] is None or row["done_ns"] < row["submit_ns"]:
        return row["wall_ns"]
    return min(row["wall_ns"] + row["done_ns"] - row["submit_ns"], now)


def taker_fee(config: Config, rules: RulesBook, venue: Venue, market: str) -> Decimal:
    """The fee to plan with: the larger of the configured and the venue-reported taker fee."""
    return max(config.venues[venue].taker_fee, rules.get(venue, market).taker_fee)


class Risk:
    def __init__(self, config: Config, rules: RulesBook, clock: Clock,
                 ledger: Ledger | None = None, kill: KillSwitch | None = None):
        self.config = config
        self.limits = config.risk
        self.rules = rules
        self.clock = clock
        self.ledger = ledger or Ledger()
        self.kill = kill or KillSwitch(config.risk.kill_switch_file)
        self.circuit = CircuitBreaker(clock, config.risk.circuit_failures, config.risk.circuit_reset_s,
                                      config.risk.circuit_window_s, on_change=self._journal_circuit)
        self.max_trade_krw = config.risk.max_trade_krw
        self._lock = threading.Lock()
        self._halts: dict[str, Halt] = {}  # key -> active halt, in the order raised
        self._in_flight: dict[str, Decimal] = {}  # signal id -> coin volume (worst-case exposure)
        self._in_flight_asset: dict[str, str] = {}
        self._residual: dict[str, Decimal] = {}  # asset -> coin
        self._residual_krw: dict[str, Decimal] = {}  # asset -> KRW at last reference price
        self._day = self._today()
        self.realised_day = self.realised_total = self.fees_total = ZERO
        self.peak_day = ZERO
        self.trades = self.successes = self.shortfalls = self.failures = 0
        self._stale_since_ns: int | None = None
        self._journal: Any = None  # karb.journal.Journal once attach_journal() is called
        self._resume_seen = 0  # id of the last ``resume`` row acted on
        self._cleared_upto = 0  # the last halt id a ``resume`` row cleared
        self._holds: dict[str, str] = {}  # key -> reason; trading blocked while any is set

    # --- fast reads (strategy thread) ------------------------------------------------------
    @property
    def state(self) -> TradingState:
        if self.kill.engaged:
            return TradingState.KILLED
        return TradingState.HALTED if self._halts or self._holds else TradingState.ACTIVE

    def blocked(self) -> str | None:
        """Why no trade may start now (kill switch, halt, hold, open circuit), or None."""
        if self.kill.engaged:
            return f"kill switch: {self.kill.reason}"
        halts = self._halts
        if halts:
            return f"halted: {'; '.join(h.reason for h in list(halts.values()))}"
        holds = self._holds
        if holds:
            return f"held: {next(iter(holds.values()), '')}"
        return self.circuit.blocked()

    def available(self, venue: Venue, currency: str) -> Decimal:
        return self.ledger.available(venue, currency)

    def position_room(self, asset: str, price: Decimal) -> Decimal:
        """Coin a new trade bought at ``price`` may add to worst-case exposure (residual +
        trades in flight), within ``max_position_krw`` at that price and ``max_position``."""
        with self._lock:
            used = abs(self._residual.get(asset, ZERO)) + sum(
                v for sid, v in self._in_flight.items() if self._in_flight_asset[sid] == asset)
        room = self.limits.max_position_krw / price if price > 0 else ZERO
        coin_limit = self.limits.max_position.get(asset)
        if coin_limit is not None:
            room = min(room, coin_limit)
        return max(room - used, ZERO)

    # --- exact limits (``karb.sizing``: the strategy sizes against these, approve checks them)
    def fees(self, signal: Signal) -> tuple[Decimal, Decimal]:
        """The (buy, sell) taker fees every check plans with."""
        return (taker_fee(self.config, self.rules, signal.buy_venue, signal.market),
                taker_fee(self.config, self.rules, signal.sell_venue, signal.market))

    def limits_problem(self, signal: Signal) -> str | None:
        """Trade value and position room at the buy limit, or None."""
        value = signal.volume * signal.buy_price
        if value > self.max_trade_krw:
            return f"trade value {value:.0f} KRW exceeds risk.max_trade_krw {self.max_trade_krw}"
        asset = base_currency(signal.market)
        if signal.volume > self.position_room(asset, signal.buy_price):
            return f"{asset} position limit: {signal.volume} would exceed the exposure room"
        return None

    def reserve_amounts(self, signal: Signal) -> dict[Key, Decimal]:
        """What ``approve`` holds: the buy limit's KRW with fee, and the coin to sell."""
        amounts = order_side_amounts(Side.BUY, signal.market, signal.buy_venue, signal.volume,
                                     signal.buy_price, self.fees(signal)[0])
        amounts.update(order_side_amounts(Side.SELL, signal.market, signal.sell_venue,
                                          signal.volume, signal.sell_price, ZERO))
        return amounts

    def check(self, signal: Signal) -> str | None:
        """Why ``approve`` would refuse ``signal`` on a limit or the ledger right now, or None
        (the ledger compares exactly as ``Ledger.reserve`` does)."""
        reason = self.limits_problem(signal)
        if reason:
            return reason
        for (venue, currency), amount in self.reserve_amounts(signal).items():
            left = self.ledger.available(venue, currency)
            if amount > left:
                return f"{venue.value} {currency} available {left} is less than the {amount} needed"
        return None

    def exact_cap(self, market: str, buy_venue: Venue, sell_venue: Venue, buy_price: Decimal,
                  step: Decimal) -> Decimal:
        """Largest multiple of ``step`` that ``check`` accepts at the buy limit ``buy_price``."""
        coin, krw = base_currency(market), quote_currency(market)
        fee = taker_fee(self.config, self.rules, buy_venue, market)
        return min(steps_within(self.max_trade_krw, buy_price, step),
                   round_down(self.position_room(coin, buy_price), step),
                   steps_within(self.ledger.available(buy_venue, krw), buy_price * (1 + fee), step),
                   round_down(max(self.ledger.available(sell_venue, coin), ZERO), step))

    # --- the gate (executor, on the submitting thread) --------------------------------------
    def approve(self, signal: Signal) -> Reservation | str:
        """Check every limit and reserve both legs, or return why not."""
        reason = self.blocked()
        if reason:
            return reason
        reason = self.limits_problem(signal)
        if reason:
            return reason
        reason = self.circuit.acquire(signal.id)
        if reason:
            return reason
        reservation = self.ledger.reserve(signal.id, self.reserve_amounts(signal))
        if isinstance(reservation, str):
            self.circuit.cancel(signal.id)
            return reservation
        with self._lock:
            self._in_flight[signal.id] = signal.volume
            self._in_flight_asset[signal.id] = base_currency(signal.market)
        return reservation

    def abandon(self, signal: Signal, reservation: Reservation) -> None:
        """An approved trade never sent anything (e.g. the journal refused the intent)."""
        self.ledger.release(reservation)
        self.circuit.cancel(signal.id)
        with self._lock:
            self._in_flight.pop(signal.id, None)
            self._in_flight_asset.pop(signal.id, None)

    # --- after the trade (leg thread) -------------------------------------------------------
    def finish(self, signal: Signal, reservation: Reservation, outcome: TradeOutcome) -> Decimal:
        """Release the reservation and book the outcome; return the realised KRW."""
        self.ledger.release(reservation)
        realised = outcome.realised_krw
        asset = base_currency(outcome.market)
        with self._lock:
            self._in_flight.pop(signal.id, None)
            self._in_flight_asset.pop(signal.id, None)
            self._roll_day()
            self.trades += 1
            self.realised_day += realised
            self.realised_total += realised
            self.fees_total += outcome.fees
            self.peak_day = max(self.peak_day, self.realised_day)
            if outcome.residual:
                self._residual[asset] = self._residual.get(asset, ZERO) + outcome.residual
            if asset in self._residual:
                self._residual_krw[asset] = self._residual[asset] * outcome.ref_price
            if outcome.success:
                self.successes += 1
            elif outcome.harmless:
                self.shortfalls += 1
            else:
                self.failures += 1
        if outcome.success:
            self.circuit.record_success(signal.id)
        elif outcome.harmless:
            self.circuit.cancel(signal.id)  # neither a failure nor the probe's success
        else:
            self.circuit.record_failure(signal.id)
        self._check_auto_halts()
        return realised

    def residual(self, asset: str) -> Decimal:
        with self._lock:
            return self._residual.get(asset, ZERO)

    def note_market_data(self, fresh: bool, now_ns: int) -> None:
        """Strategy thread: whether any market had two fresh books on this pass."""
        if fresh:
            self._stale_since_ns = None
            return
        if self._stale_since_ns is None:
            self._stale_since_ns = now_ns
        elif now_ns - self._stale_since_ns >= self.limits.max_stale_s * NS_PER_S:
            self.halt(f"market data stale for {(now_ns - self._stale_since_ns) / NS_PER_S:.0f} s",
                      key="stale market data")

    def halt(self, reason: str, key: str | None = None) -> None:
        """Stop new trades until an operator resumes; committed to the journal if attached,
        also while already halted. ``key`` (default: the reason) names the halt: raising an
        active one again (e.g. stale data on every pass) changes nothing."""
        key = key or reason
        with self._lock:
            if key in self._halts:
                return
            halt = self._halts[key] = Halt(reason, None, self.clock.wall_ns(), self._journal is not None)
        logger.critical("trading HALTED: {} (clear with `karb resume`)", reason)
        if not halt.pending:
            return
        event_id = None
        try:
            event_id = self._journal.record_risk_event("halt", reason)
        except Exception as exc:  # JournalError: still halted here; a restart would forget
            logger.critical("halt not journalled ({}): a restart would not remember it", exc)
        with self._lock:
            if self._halts.get(key) is not halt:
                return
            if event_id is not None and event_id <= self._cleared_upto:
                del self._halts[key]  # `karb resume` showed it and was acted on meanwhile
            else:
                self._halts[key] = Halt(reason, event_id, halt.wall_ns)

    def resume(self, upto: int | None = None, requested_wall_ns: int | None = None) -> list[str]:
        """Operator action: clear halts (the kill switch is cleared separately) and return their
        reasons. With ``upto`` (a ``resume`` row's), only the journalled halts up to that id and
        unjournalled ones raised before ``requested_wall_ns``; without, every halt."""
        def cleared(halt: Halt) -> bool:
            if upto is None:
                return True
            if halt.event_id is not None:
                return halt.event_id <= upto
            return not halt.pending and requested_wall_ns is not None and \
                halt.wall_ns <= requested_wall_ns

        with self._lock:
            if upto is not None:
                self._cleared_upto = max(self._cleared_upto, upto)
            gone = [key for key, halt in self._halts.items() if cleared(halt)]
            reasons = [self._halts.pop(key).reason for key in gone]
            still = [halt.reason for halt in self._halts.values()]
        self._stale_since_ns = None
        if reasons:
            logger.warning("trading resumed by operator: cleared {}", "; ".join(reasons))
        if still:
            logger.critical("still HALTED (raised after the resume request): {}", "; ".join(still))
        return reasons

    # --- across restarts (journal) ----------------------------------------------------------
    def attach_journal(self, journal) -> None:
        """Persist halts in ``journal`` from now on (it must be started)."""
        self._journal = journal

    def rebuild(self, journal) -> dict:
        """Restore today's PnL, peak, counts, failure streak, residuals, the active halts and the
        breaker from ``journal`` (call once at start, before trading); attach it; return what
        was restored."""
        self.attach_journal(journal)
        now = self.clock.wall_ns()
        start_ns = int(datetime.combine(self._today(), datetime.min.time(), KST).timestamp()) * NS_PER_S
        window_start = now - int(self.limits.circuit_window_s * NS_PER_S)
        booked = journal.query(
            "SELECT status, realised_krw, fees_krw, wall_ns, submit_ns, done_ns FROM signals "
            "WHERE realised_krw IS NOT NULL AND wall_ns >= ? ORDER BY wall_ns, rowid",
            (min(start_ns, window_start),))
        today = [row for row in booked if row["wall_ns"] >= start_ns]
        residual: dict[str, Decimal] = {}
        ref: dict[str, Decimal] = {}
        for row in journal.query("SELECT market, buy_price, residual FROM signals WHERE residual "
                                 "IS NOT NULL ORDER BY wall_ns, rowid"):
            asset = base_currency(row["market"])
            residual[asset] = residual.get(asset, ZERO) + Decimal(row["residual"])
            ref[asset] = Decimal(row["buy_price"])
        streak = 0
        for row in today:
            if row["status"] != "shortfall":
                streak = 0 if row["status"] == "filled" else streak + 1
        halts = journal.active_halts()
        resume_seen, cleared_upto = journal.resume_mark()
        with self._lock:
            self._day = self._today()
            realised = peak = fees = ZERO
            for row in today:
                realised += Decimal(row["realised_krw"])
                fees += Decimal(row["fees_krw"] or 0)
                peak = max(peak, realised)
            self.realised_day = self.realised_total = realised
            self.peak_day, self.fees_total = peak, fees
            self.trades = len(today)
            self.successes = sum(1 for row in today if row["status"] == "filled")
            self.shortfalls = sum(1 for row in today if row["status"] == "shortfall")
            self.failures = self.trades - self.successes - self.shortfalls
            self._residual = {a: v for a, v in residual.items() if v}
            self._residual_krw = {a: v * ref[a] for a, v in self._residual.items()}
            self._halts = {h["reason"]: Halt(h["reason"], h["id"], h["wall_ns"]) for h in halts}
            self._resume_seen, self._cleared_upto = resume_seen, cleared_upto
        self._rebuild_circuit(journal.last_breaker_event(), booked, streak, now)
        reasons = [h["reason"] for h in halts]
        restored = {"realised_today_krw": realised, "peak_today_krw": peak, "trades": len(today),
                    "failure_streak": streak, "residual": dict(self._residual),
                    "halt": "; ".join(reasons) or None, "halts": reasons,
                    "circuit": self.circuit.state.value}
        for reason in reasons:
            logger.critical("trading HALTED since the previous run: {} (clear with `karb resume`)",
                            reason)
        logger.info("risk state rebuilt from the journal: {}", restored)
        return restored

    def _rebuild_circuit(self, event: dict | None, booked: list[dict], streak: int, now: int) -> None:
        # A journalled trip: OPEN until reset_s after it (wall time). Otherwise the failures
        # finished since the last close, at their real times (wall ages; the breaker places
        # them on this run's monotonic clock).
        if event is not None and event["kind"] == "breaker_open":
            self.circuit.restore(streak, (), now - event["wall_ns"])
            return
        since = event["wall_ns"] if event is not None else None
        ages = []
        for row in booked:
            done = _done_wall_ns(row, now)
            if row["status"] not in ("filled", "shortfall") and (since is None or done > since):
                ages.append(now - done)
        self.circuit.restore(streak, ages)

    def _journal_circuit(self, state: CircuitState) -> None:
        # the breaker tripped or closed (outside its lock): a restart must know when
        journal = self._journal
        if journal is None:
            return
        kind = "breaker_open" if state is CircuitState.OPEN else "breaker_closed"
        try:
            journal.record_risk_event(kind, f"circuit breaker {state.value}")
        except Exception as exc:  # JournalError: a restart would rebuild it from the failures
            logger.error("circuit breaker {} not journalled ({})", state.value, exc)

    def poll_resume(self) -> bool:
        """Resume if ``karb resume`` wrote a ``resume`` row since the last look (any thread)."""
        if self._journal is None:
            return False
        rows = self._journal.query("SELECT id, wall_ns, reason, upto FROM risk_events WHERE "
                                   "kind = 'resume' AND id > ? ORDER BY id", (self._resume_seen,))
        for row in rows:
            self._resume_seen = row["id"]
            logger.warning("resume requested ({})", row["reason"])
            self.resume(row["id"] if row["upto"] is None else row["upto"], row["wall_ns"])
        return bool(rows)

    def hold(self, key: str, reason: str) -> None:
        """Block new trades until ``release_hold(key)`` (not persisted, no operator needed)."""
        with self._lock:
            self._holds[key] = reason
        logger.critical("trading held: {}", reason)

    def release_hold(self, key: str) -> None:
        with self._lock:
            if self._holds.pop(key, None) is None:
                return
        logger.warning("trading hold '{}' lifted", key)

    def adopt(self, signal_id: str, market: str, volume: Decimal) -> None:
        """Count a trade found unfinished at start as in flight (exposure) until ``finish``."""
        with self._lock:
            self._in_flight[signal_id] = volume
            self._in_flight_asset[signal_id] = base_currency(market)

    def rebook(self, market: str, residual: Decimal, realised: Decimal, ref_price: Decimal) -> None:
        """Correct a trade booked earlier by the difference recovery found (exact)."""
        asset = base_currency(market)
        with self._lock:
            self.realised_day += realised
            self.realised_total += realised
            self.peak_day = max(self.peak_day, self.realised_day)
            self._residual[asset] = self._residual.get(asset, ZERO) + residual
            self._residual_krw[asset] = self._residual[asset] * ref_price
            if not self._residual[asset]:
                del self._residual[asset], self._residual_krw[asset]

    def summary(self) -> dict:
        """Balances, reservations, PnL, fees, drawdown, residuals and states (for status)."""
        balances: dict[str, dict[str, Decimal]] = {}
        reserved: dict[str, dict[str, Decimal]] = {}
        for (venue, currency), (free, held) in sorted(self.ledger.snapshot().items()):
            balances.setdefault(venue.value, {})[currency] = free
            if held:
                reserved.setdefault(venue.value, {})[currency] = held
        with self._lock:
            self._roll_day()
            return {
                "state": self.state.value,
                "halt_reason": "; ".join([h.reason for h in self._halts.values()]
                                         + list(self._holds.values())) or None,
                "halts": {key: h.reason for key, h in self._halts.items()},
                "kill_reason": self.kill.reason if self.kill.engaged else None,
                "circuit": self.circuit.state.value,
                "consecutive_failures": self.circuit.consecutive_failures,
                "balances": balances,
                "reserved": reserved,
                "realised_pnl_krw": self.realised_total,
                "realised_today_krw": self.realised_day,
                "fees_krw": self.fees_total,
                "drawdown_krw": self.peak_day - self.realised_day,
                "residual": dict(self._residual),
                "residual_krw": dict(self._residual_krw),
                "trades": self.trades,
                "successes": self.successes,
                "shortfalls": self.shortfalls,
                "failures": self.failures,
                "in_flight": len(self._in_flight),
            }

    def _check_auto_halts(self) -> None:
        limits = self.limits
        if self.realised_day <= -limits.daily_loss_limit_krw:
            self.halt(f"daily realised loss {-self.realised_day} KRW reached the limit "
                      f"{limits.daily_loss_limit_krw}", key="daily loss")
        if self.peak_day - self.realised_day >= limits.max_drawdown_krw:
            self.halt(f"drawdown {self.peak_day - self.realised_day} KRW reached the limit "
                      f"{limits.max_drawdown_krw}", key="drawdown")
        if self.circuit.consecutive_failures >= limits.halt_after_failures:
            self.halt(f"{self.circuit.consecutive_failures} consecutive failed trades",
                      key="consecutive failures")

    def _today(self):
        return datetime.fromtimestamp(self.clock.wall_ns() / NS_PER_S, KST).date()

    def _roll_day(self) -> None:
        # caller holds self._lock
        today = self._today()
        if today != self._day:
            self._day, self.realised_day, self.peak_day = today, ZERO, ZERO
