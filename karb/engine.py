"""The engine: wiring and lifecycle of one run.

    frames -> feed threads -> books -> strategy -> risk -> executor (leg threads) -> venues
                                                   \\-> journal, ledger, monitor, alerts

``Engine.start()`` runs the start-up checks, loads balances and market rules from the venues,
reconciles orders left open by a previous run, then starts the threads in data-flow order
(journal, feeds, executor, strategy, balance sync, kill switch, monitor). ``Engine.stop()``
stops them in reverse within about five seconds: no new signals, in-flight legs finished,
open orders cancelled, journal flushed. ``summary()`` is the text printed at exit.

Modes: ``live`` (real venues, real orders), ``sim`` (the loopback sim's paper accounts, real
orders over real HTTP and auth) and ``dry_run`` (fills computed from the live books).
"""
from __future__ import annotations

import sys
import threading
import time
from decimal import Decimal
from typing import TextIO

from loguru import logger

from karb.balance_sync import BalanceSync
from karb.book import BookBoard
from karb.clock import Clock, SystemClock
from karb.config import Config
from karb.dryrun import DryRunVenue
from karb.exchanges.base import VenueClient
from karb.exchanges.errors import VenueError
from karb.execution import Executor
from karb.inventory import Inventory
from karb.journal import Journal
from karb.market_data import MarketData
from karb.model import Balance, Venue, base_currency
from karb.monitor import Monitor
from karb.risk import Risk
from karb.rules import RulesBook
from karb.startup import check_clocks, check_keys, check_markets
from karb.status import EngineSnapshot, FeedStatus, MarketStatus
from karb.strategy import Strategy

RULES_REFRESH_S = 24 * 3600


class Engine:
    """One run of the engine. Build, ``start()``, wait, ``stop()``; ``snapshot()`` any time."""

    def __init__(self, config: Config, clients: dict[Venue, VenueClient], mode: str,
                 clock: Clock | None = None, out: TextIO | None = None, panel: bool | None = None,
                 paper_balances: dict[Venue, dict[str, Balance]] | None = None):
        self.config = config
        self.mode = mode
        self.clock = clock or SystemClock()
        self.venue_clients = clients
        self._paper_balances = paper_balances
        self._started_ns = self.clock.monotonic_ns()
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._stops: list = []  # stop callables of the parts started, in start order

        fees = {v: (config.venues[v].taker_fee, config.venues[v].maker_fee) for v in Venue}
        self.rules = RulesBook.fallback(config.markets, fees)
        self.board = BookBoard(config.markets, depth=max(config.venues.upbit.ws_levels,
                                                         config.venues.bithumb.ws_levels))
        self.market_data = MarketData(config, self.board)
        self.journal = Journal(config.journal.path, self.clock)
        self.risk = Risk(config, self.rules, self.clock)
        self.inventory = Inventory(config.inventory, self.risk.ledger)
        if mode == "dry_run":
            self.order_clients: dict[Venue, VenueClient] = {
                v: DryRunVenue(v, self.board, self.rules, self.clock) for v in Venue}
        else:
            self.order_clients = clients
        self.executor = Executor(self.order_clients, self.rules, self.risk, self.journal, config, self.clock)
        self.strategy = Strategy(self.board, self.rules, self.risk, self.inventory, config, self.clock,
                                 on_signal=self.executor.submit)
        self.balance_sync = BalanceSync(self.order_clients, self.risk, self.journal, config, self.clock)
        self.executor.add_listener(self.balance_sync.request_refresh)
        self.monitor = Monitor(config.monitor, self.snapshot, out=out, panel=panel)
        self._rules_stop = threading.Event()
        self._rules_thread = threading.Thread(target=self._refresh_rules_daily, name="rules-refresh",
                                              daemon=True)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Check, load, reconcile, then start every thread. Raises ``StartupError``."""
        config = self.config
        check_markets(self.venue_clients, config.markets)
        if self.mode == "dry_run":
            balances = self._paper_balances or {}
        else:
            check_clocks({v: config.venues[v].rest_url for v in Venue})
            balances = check_keys(self.venue_clients)
        for venue, venue_balances in balances.items():
            self.risk.ledger.load(venue, venue_balances)
            if isinstance(self.order_clients[venue], DryRunVenue):
                self.order_clients[venue].load(venue_balances)
        self._refresh_rules()
        sys.setswitchinterval(config.execution.gil_switch_interval_ms / 1000)
        # Data-flow order; each part's stop goes on a stack, so a failed start stops only
        # what did start, in reverse.
        self._run_part(self.journal.start, self.journal.stop)
        self._run_part(self.market_data.start, self.market_data.stop)
        self._run_part(self.executor.start, self._stop_executor)  # reconciles leftovers first
        self._run_part(self.strategy.start, self.strategy.stop)
        self._run_part(self.balance_sync.start, self.balance_sync.stop)
        self.risk.kill.add_listener(self._on_kill)
        self._run_part(self.risk.kill.start, self.risk.kill.stop)
        self._run_part(self._rules_thread.start, self._stop_rules_thread)
        self._run_part(self.monitor.start, self.monitor.stop)
        if self.mode == "live":
            self._announce_live()
        logger.info("engine started: mode={} markets={}", self.mode, ",".join(config.markets))

    def _run_part(self, start, stop) -> None:
        start()
        self._stops.append(stop)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop within about ``timeout_s``, in reverse start order: monitor, strategy (no new
        signals), executor (legs in flight finish, open orders cancelled), feeds, journal."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        deadline = time.monotonic() + timeout_s
        while self._stops:
            stop = self._stops.pop()
            try:
                stop(max(0.1, deadline - time.monotonic()))
            except Exception:  # keep stopping the rest: the journal must still be flushed
                logger.exception("stopping {} failed", getattr(stop, "__qualname__", stop))
        for client in self.venue_clients.values():
            client.close()

    def _stop_executor(self, timeout_s: float) -> None:
        self.executor.stop(timeout_s)
        if self.mode != "dry_run":  # dry-run venues hold no resting orders
            self.executor.cancel_open_orders("shutdown")

    def _stop_rules_thread(self, timeout_s: float) -> None:
        self._rules_stop.set()
        self._rules_thread.join(timeout_s)

    def _on_kill(self, engaged: bool, reason: str) -> None:
        # the executor's own listener cancels the open orders
        if engaged:
            logger.critical("KILL SWITCH engaged ({}): no new signals, cancelling open orders", reason)
        else:
            logger.warning("kill switch cleared: trading may resume")

    # --- market rules ------------------------------------------------------------------------
    def _refresh_rules(self) -> None:
        for venue, client in self.venue_clients.items():
            try:
                self.rules.update(venue, client.get_market_info(self.config.markets))
            except VenueError as exc:
                logger.warning("{} market rules unavailable ({}); using the tick table and config fees",
                               venue.value, exc)

    def _refresh_rules_daily(self) -> None:
        while not self._rules_stop.wait(RULES_REFRESH_S):
            self._refresh_rules()

    def _announce_live(self) -> None:
        r = self.config.risk
        logger.warning("LIVE TRADING {} | max per trade {} KRW | daily loss limit {} KRW | "
                       "drawdown limit {} KRW | threshold {} bps | kill switch: {}",
                       ",".join(self.config.markets), r.max_trade_krw, r.daily_loss_limit_krw,
                       r.max_drawdown_krw, self.config.strategy.threshold_bps, r.kill_switch_file)

    # --- reporting ----------------------------------------------------------------------------
    def snapshot(self) -> EngineSnapshot:
        now_ns = time.monotonic_ns()
        feeds = {}
        for venue, s in self.market_data.stats().items():
            feeds[venue] = FeedStatus(
                state=s["state"], messages=s["messages"], msgs_per_s=s.get("msgs_per_s", 0.0),
                reconnects=s["reconnects"], decode_errors=s["decode_errors"],
                last_message_age_s=s.get("last_message_age_s"), down_for_s=s.get("down_for_s", 0.0))
        strategy = self.strategy.stats()
        net = strategy["net_bps"]
        markets = []
        for market in self.config.markets:
            ages, valid = {}, {}
            for venue in Venue:
                view = self.board.get(venue, market).view
                ages[venue.value] = (now_ns - view.recv_ns) / 1e6 if view.recv_ns else None
                valid[venue.value] = view.valid
            markets.append(MarketStatus(market, ages, valid, {
                d: net.get((market, d)) for d in ("upbit_sell", "bithumb_sell")}))
        risk = self.risk.summary()
        execs = self.executor.stats()
        balances = {v: {c: Decimal(a) for c, a in b.items()} for v, b in risk["balances"].items()}
        for venue, reserved in risk["reserved"].items():
            for ccy, amount in reserved.items():
                balances.setdefault(venue, {})[ccy] = balances.get(venue, {}).get(ccy, Decimal(0)) + amount
        assets = sorted({base_currency(m) for m in self.config.markets})
        return EngineSnapshot(
            mode=self.mode, uptime_s=(now_ns - self._started_ns) / 1e9, feeds=feeds, markets=markets,
            signals=strategy["signals"], trades=risk["trades"], successes=risk["successes"],
            failures=risk["failures"], consecutive_failures=risk["consecutive_failures"],
            realised_pnl_krw=risk["realised_pnl_krw"], fees_krw=risk["fees_krw"], balances=balances,
            residual={a: v for a, v in risk["residual"].items() if v},
            latencies_us=execs.get("latency_us", {}), circuit=risk["circuit"],
            trading_state=risk["state"], halt_reason=risk["kill_reason"] or risk["halt_reason"],
            transfers=[str(t) for t in self.inventory.transfers(assets)])

    def summary(self) -> str:
        s = self.snapshot()
        rate = "-" if s.success_rate is None else f"{100 * s.success_rate:.1f}%"
        lines = [
            f"K-Arb summary ({self.mode}, {s.uptime_s:.0f}s)",
            f"  signals {s.signals}, refused {sum(self.strategy.stats()['refused'].values())},"
            f" trades {s.trades}, succeeded {s.successes}, failed {s.failures}, success rate {rate}",
            f"  realised PnL {s.realised_pnl_krw:,.0f} KRW, fees {s.fees_krw:,.2f} KRW",
        ]
        for venue, balances in sorted(s.balances.items()):
            shown = ", ".join(f"{c} {v.normalize():f}" for c, v in sorted(balances.items()))
            lines.append(f"  {venue}: {shown}")
        residual = ", ".join(f"{a} {v}" for a, v in s.residual.items()) or "none"
        lines.append(f"  residual exposure: {residual}")
        if s.halt_reason:
            lines.append(f"  trading stopped: {s.halt_reason}")
        return "\n".join(lines)
