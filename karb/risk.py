"""Risk: the gate every signal passes before money moves, and the books kept after.

``approve(signal)`` (called by the executor on the strategy thread) checks, in order: kill
switch, halt, circuit breaker, trade value, position limits, then reserves both legs' worst-case
spend in the ``Ledger`` all-or-nothing. It returns the ``Reservation`` or the reason it refused
(risk checks return reasons, never bare booleans). ``finish(...)`` (called by a leg thread when a
trade is over) books realised PnL and fees exactly, tracks residual exposure, feeds the circuit
breaker and applies the automatic halts: daily realised loss, drawdown from the day's peak,
consecutive failures, and too long on stale market data. A halt is sticky until ``resume()``;
the kill switch stops trading until it is cleared. State changes take ``self._lock``.
"""
from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from loguru import logger

from karb.circuit import CircuitBreaker
from karb.clock import NS_PER_S, Clock
from karb.config import Config
from karb.killswitch import KillSwitch
from karb.ledger import Key, Ledger, Reservation, order_side_amounts
from karb.model import Side, Signal, Venue, base_currency, quote_currency
from karb.rules import RulesBook, round_down
from karb.sizing import steps_within

ZERO = Decimal(0)
KST = timezone(timedelta(hours=9))  # both venues' trading day


class TradingState(str, enum.Enum):
    ACTIVE = "active"
    HALTED = "halted"
    KILLED = "killed"


@dataclass(frozen=True)
class TradeOutcome:
    """Everything a finished trade did, summed over its legs and unwind orders (exact KRW).

    ``bought``/``sold`` are coin volumes; ``buy_funds``/``sell_funds`` the venues' reported
    ``executed_funds``; ``fees`` every ``paid_fee``. ``ref_price`` values any residual.
    """

    market: str
    success: bool
    bought: Decimal = ZERO
    buy_funds: Decimal = ZERO
    sold: Decimal = ZERO
    sell_funds: Decimal = ZERO
    fees: Decimal = ZERO
    ref_price: Decimal = ZERO

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
        self.circuit = CircuitBreaker(clock, config.risk.circuit_failures, config.risk.circuit_reset_s)
        self.max_trade_krw = config.risk.max_trade_krw
        self._lock = threading.Lock()
        self._halt_reason: str | None = None
        self._in_flight: dict[str, Decimal] = {}  # signal id -> coin volume (worst-case exposure)
        self._in_flight_asset: dict[str, str] = {}
        self._residual: dict[str, Decimal] = {}  # asset -> coin
        self._residual_krw: dict[str, Decimal] = {}  # asset -> KRW at last reference price
        self._day = self._today()
        self.realised_day = self.realised_total = self.fees_total = ZERO
        self.peak_day = ZERO
        self.trades = self.successes = self.failures = 0
        self._stale_since_ns: int | None = None

    # --- fast reads (strategy thread) ------------------------------------------------------
    @property
    def state(self) -> TradingState:
        if self.kill.engaged:
            return TradingState.KILLED
        return TradingState.HALTED if self._halt_reason else TradingState.ACTIVE

    def blocked(self) -> str | None:
        """Why no trade may start now (kill switch, halt, open circuit), or None."""
        if self.kill.engaged:
            return f"kill switch: {self.kill.reason}"
        if self._halt_reason:
            return f"halted: {self._halt_reason}"
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
        reason = self.circuit.acquire()
        if reason:
            return reason
        reservation = self.ledger.reserve(signal.id, self.reserve_amounts(signal))
        if isinstance(reservation, str):
            self.circuit.cancel()
            return reservation
        with self._lock:
            self._in_flight[signal.id] = signal.volume
            self._in_flight_asset[signal.id] = base_currency(signal.market)
        return reservation

    def abandon(self, signal: Signal, reservation: Reservation) -> None:
        """An approved trade never sent anything (e.g. the journal refused the intent)."""
        self.ledger.release(reservation)
        self.circuit.cancel()
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
            else:
                self.failures += 1
        if outcome.success:
            self.circuit.record_success()
        else:
            self.circuit.record_failure()
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
            self.halt(f"market data stale for {(now_ns - self._stale_since_ns) / NS_PER_S:.0f} s")

    def halt(self, reason: str) -> None:
        with self._lock:
            if self._halt_reason:
                return
            self._halt_reason = reason
        logger.critical("trading HALTED: {}", reason)

    def resume(self) -> None:
        """Operator action: clear a halt (the kill switch is cleared separately)."""
        with self._lock:
            self._halt_reason = None
        self._stale_since_ns = None
        logger.warning("trading resumed by operator")

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
                "halt_reason": self._halt_reason,
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
                "failures": self.failures,
                "in_flight": len(self._in_flight),
            }

    def _check_auto_halts(self) -> None:
        limits = self.limits
        if self.realised_day <= -limits.daily_loss_limit_krw:
            self.halt(f"daily realised loss {-self.realised_day} KRW reached the limit "
                      f"{limits.daily_loss_limit_krw}")
        elif self.peak_day - self.realised_day >= limits.max_drawdown_krw:
            self.halt(f"drawdown {self.peak_day - self.realised_day} KRW reached the limit "
                      f"{limits.max_drawdown_krw}")
        elif self.circuit.consecutive_failures >= limits.halt_after_failures:
            self.halt(f"{self.circuit.consecutive_failures} consecutive failed trades")

    def _today(self):
        return datetime.fromtimestamp(self.clock.wall_ns() / NS_PER_S, KST).date()

    def _roll_day(self) -> None:
        # caller holds self._lock
        today = self._today()
        if today != self._day:
            self._day, self.realised_day, self.peak_day = today, ZERO, ZERO
