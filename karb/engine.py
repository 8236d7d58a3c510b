"""The engine: wiring and lifecycle of one run.

    frames -> feed threads -> books -> strategy -> risk -> executor (leg threads) -> venues
                                                   \\-> journal, ledger, monitor, alerts

``Engine.start()`` first takes the instance locks (``karb.instance_lock``: one engine per
journal and per kill-file directory), runs the start-up checks, loads balances and market
rules from the venues, starts the journal and rebuilds the risk state from it (today's PnL and
peak, residuals, an active halt), sets inventory targets (where the journal first saw the
balances), reads the kill switch and starts its thread, then starts the
feeds, the private order/asset streams (``karb.order_stream``; not in dry-run) and the
executor, which recovers what a previous run left open (``karb.recovery``), the
``venue-state`` thread (markets a venue flags are held before the first pass;
``karb.venue_state``), and only then the strategy, balance sync, the ``rebalance`` thread
(``karb.rebalance.rebalancer``: plans shown in the panel; withdrawals only in ``rebalance.mode:
auto`` on a live or sim run), the ``resume-watch`` thread (``karb resume`` clears a halt within
a second), rules refresh (daily; after start-up it also checks each market's own fee, one
look-up every 2 s) and monitor. So neither a kill file nor a halt present at start lets a
first strategy pass trade. The ``alerts`` thread starts right after the locks and stops last,
so the start-up notice and the shutdown notice (each with the summary) reach the notifiers
(``karb.notifiers``: secrets from the environment or the key file). ``Engine.stop()`` stops
them in reverse within about
five seconds: no new signals, in-flight legs finished, open orders cancelled, journal flushed,
locks released. ``summary()`` is the text printed at exit.

Modes: ``live`` (real venues, real orders), ``sim`` (the loopback sim's paper accounts, real
orders over real HTTP and auth) and ``dry_run`` (fills computed from the live books).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from decimal import Decimal
from typing import TextIO

from loguru import logger

from karb.alerts import Alert, Alerter
from karb.balance_sync import BalanceSync
from karb.book import BookBoard
from karb.book_changes import BookChanges
from karb.clock import Clock, SystemClock
from karb.config import Config
from karb.dryrun import DryRunVenue
from karb.exchanges.base import VenueClient
from karb.exchanges.errors import AuthError, VenueError
from karb.execution import Executor
from karb.instance_lock import InstanceLock, lock_paths
from karb.inventory import Inventory
from karb.journal import Journal, JournalError
from karb.market_data import MarketData
from karb.model import VENUES, Balance, Venue, base_currency
from karb.monitor import Monitor
from karb.notifiers import from_environment
from karb.order_stream import OrderStreams
from karb.rebalance.plan import Planner
from karb.rebalance.rebalancer import Rebalancer
from karb.rebalance.transfer import TransferExecutor, auto_transfer_refusal
from karb.recovery import recovery_of
from karb.risk import Risk, taker_fee
from karb.rules import MarketInfo, RulesBook, describe_fees
from karb.secrets import SecretsError, load_alert_secrets
from karb.startup import check_clocks, check_keys, check_markets
from karb.status import EngineSnapshot, FeedStatus, MarketStatus
from karb.strategy import Strategy
from karb.venue_state import VenueStateWatch

RULES_REFRESH_S = 24 * 3600
FEE_CHECK_INTERVAL_S = 2.0  # one market's own fee look-up this often after start-up
RESUME_POLL_S = 1.0  # how often a running engine looks for a `karb resume`
JOURNAL_CLEAR_S = 60.0  # a journal episode ends after this long without a failed write
ALERTS_DRAIN_S = 3.0  # at stop, queued notices get this long to reach the notifiers


class _ErrorWatch:
    """Turns an error counter into "failing": it grew within the last ``clear_s``.

    So one failure episode raises one alert, and a failure after a quiet ``clear_s`` another.
    Called from ``snapshot`` (monitor thread, and the main thread for the summary).
    """

    def __init__(self, clear_s: float) -> None:
        self._clear_ns = int(clear_s * 1e9)
        self._lock = threading.Lock()
        self._count = 0
        self._grew_ns: int | None = None

    def failing(self, count: int, now_ns: int) -> bool:
        with self._lock:
            if count > self._count:
                self._grew_ns = now_ns
            self._count = count
            return self._grew_ns is not None and now_ns - self._grew_ns <= self._clear_ns


def _alert_secrets(keys_file: str | None, mode: str) -> dict[str, str]:
    """The key file's alert secrets. A live run refuses a missing or open key file (it holds
    the trading keys too); a dry run or sim run needs no keys, so it warns and alerts go to
    what the environment names."""
    try:
        return load_alert_secrets(keys_file)
    except SecretsError as exc:
        if mode == "live":
            raise
        logger.warning("alert secrets from keys_file not loaded ({}); alerts use the environment "
                       "only", exc)
        return {}


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
        self._started_fully = False  # start() ran to the end: a shutdown notice is due at stop
        self._stops: list = []  # stop callables of the parts started, in start order
        alert_secrets = _alert_secrets(config.keys_file, mode)  # before anything is built
        self.lock = InstanceLock(lock_paths(config))

        fees = {v: (config.venues[v].taker_fee, config.venues[v].maker_fee) for v in Venue}
        self.rules = RulesBook.fallback(config.markets, fees)
        self.board = BookBoard(config.markets, depth=max(config.venues.upbit.ws_levels,
                                                         config.venues.bithumb.ws_levels))
        self.book_changes = BookChanges(config.markets)  # feeds note, the strategy takes
        self.market_data = MarketData(config, self.board, changes=self.book_changes)
        self.journal = Journal(config.journal.path, self.clock)
        self.risk = Risk(config, self.rules, self.clock)
        self.inventory = Inventory(config.inventory, self.risk.ledger)
        if mode == "dry_run":
            self.order_clients: dict[Venue, VenueClient] = {
                v: DryRunVenue(v, self.board, self.rules, self.clock) for v in Venue}
        else:
            self.order_clients = clients
        self.streams: OrderStreams | None = None
        if mode != "dry_run":  # private streams: first source of fills and balances
            signers = {v: c.stream_token for v, c in clients.items() if hasattr(c, "stream_token")}
            self.streams = OrderStreams.from_config(config, signers) if signers else None
            if self.streams is not None and not self.streams.venues:
                self.streams = None
        self.executor = Executor(self.order_clients, self.rules, self.risk, self.journal, config, self.clock,
                                 streams=self.streams)
        for client in self.order_clients.values():
            if hasattr(client, "on_order_id"):  # legacy Bithumb: persist its id map at once
                client.on_order_id = self._journal_order_id
        m = config.monitor
        self.alerter = Alerter(m.webhook_url, m.low_balance_krw, m.feed_down_alert_s,
                               residual_tolerance_krw=config.execution.residual_tolerance_krw,
                               low_balance=m.low_balance,
                               notifiers=from_environment(os.environ, m.telegram_api_url, alert_secrets))
        # the sanity guard's second look reads REST books from the venues, also in dry-run
        self.strategy = Strategy(self.board, self.rules, self.risk, self.inventory, config, self.clock,
                                 on_signal=self.executor.submit,
                                 read_book=lambda venue, market: clients[venue].get_orderbook(market),
                                 on_alert=self.alerter.notify, changes=self.book_changes)
        self.venue_state = VenueStateWatch(clients, self.strategy, config)
        self.balance_sync = BalanceSync(self.order_clients, self.risk, self.journal, config, self.clock,
                                        streams=self.streams)
        self.executor.add_listener(self.balance_sync.request_refresh)
        self.transfers = TransferExecutor(config.rebalance, clients, self.journal, clock=self.clock,
                                          disabled_reason=auto_transfer_refusal(config.rebalance.mode, mode),
                                          notify=self.alerter.notify)
        planner = Planner(config.rebalance, self.inventory, config.markets,
                          lambda venue, market: taker_fee(config, self.rules, venue, market))
        self.rebalancer = Rebalancer(config.rebalance, planner, self.transfers, self.board, self.journal,
                                     self.clock, fee_clients=clients, notify=self.alerter.notify,
                                     on_moved=self.balance_sync.request_refresh)
        self.monitor = Monitor(config.monitor, self.snapshot, out=out, panel=panel,
                               alerter=self.alerter)
        self._journal_watch = _ErrorWatch(JOURNAL_CLEAR_S)
        self._rules_stop = threading.Event()
        self._own_fees: dict[tuple[Venue, str], MarketInfo] = {}  # markets whose fee differs
        self._rules_thread = threading.Thread(target=self._refresh_rules_daily, name="rules-refresh",
                                              daemon=True)
        self._resume_stop = threading.Event()
        self._resume_thread = threading.Thread(target=self._watch_resume, name="resume-watch",
                                               daemon=True)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Lock, check, load, rebuild, recover, then start every thread (order in the module
        docstring). Raises ``StartupError``."""
        config = self.config
        self._run_part(self.lock.acquire, self.lock.release)
        self._run_part(self.alerter.start, self._stop_alerter)
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
        self.risk.rebuild(self.journal)
        self._set_inventory_targets(balances)
        self._run_part(self.risk.kill.start, self.risk.kill.stop)  # engaged before any pass
        self._run_part(self.market_data.start, self.market_data.stop)
        if self.streams is not None:  # up before the first leg, so legs can follow it
            self._run_part(self.streams.start, self.streams.stop)
        self._run_part(self.executor.start, self._stop_executor)  # recovers leftovers first
        self._run_part(self._resume_thread.start, self._stop_resume_thread)
        self._run_part(self.venue_state.start, self.venue_state.stop)  # flags held before trading
        self._run_part(self.strategy.start, self.strategy.stop)
        self._run_part(self.balance_sync.start, self.balance_sync.stop)
        self._run_part(self.rebalancer.start, self.rebalancer.stop)
        self._run_part(self._rules_thread.start, self._stop_rules_thread)
        self._run_part(self.monitor.start, self.monitor.stop)
        if self.mode == "live":
            self._announce_live()
        logger.info("engine started: mode={} markets={}", self.mode, ",".join(config.markets))
        self._started_fully = True
        self.alerter.notify(Alert("startup", "engine", self.summary().replace(
            "K-Arb summary", "K-Arb started", 1), "info"))

    def _set_inventory_targets(self, balances: dict) -> None:
        """Targets from where inventory first started (the journal's first balances); a new
        journal gets today's, written before any trade so a restart finds the same."""
        first = self.journal.first_balances()
        if not first:
            for venue, venue_balances in balances.items():
                self.journal.record_balances(venue.value, venue_balances, "start")
            self.journal.flush()
            first = {v.value: {c: b.free for c, b in vb.items()} for v, vb in balances.items()}
        self.inventory.set_targets({Venue(v): amounts for v, amounts in first.items()})

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

    def _stop_alerter(self, timeout_s: float) -> None:
        # last to stop: the summary is final now (legs finished, orders cancelled)
        if self._started_fully:
            self.alerter.notify(Alert("shutdown", "engine", self.summary().replace(
                "K-Arb summary", "K-Arb stopped", 1), "info"))
        self.alerter.stop(max(timeout_s, ALERTS_DRAIN_S))

    def _stop_executor(self, timeout_s: float) -> None:
        recovery_of(self.executor).stop(min(timeout_s, 2.0))
        self.executor.stop(timeout_s)
        if self.mode != "dry_run":  # dry-run venues hold no resting orders
            self.executor.cancel_open_orders("shutdown")

    def _stop_resume_thread(self, timeout_s: float) -> None:
        self._resume_stop.set()
        self._resume_thread.join(timeout_s)

    def _watch_resume(self) -> None:
        # Thread ``resume-watch``: `karb resume` writes a row to the journal; act on it here.
        while not self._resume_stop.wait(RESUME_POLL_S):
            try:
                self.risk.poll_resume()
            except Exception:
                logger.exception("looking for a resume request failed")

    def _journal_order_id(self, client_id: str, order_id: str) -> None:
        try:
            self.journal.record_order_id(client_id, order_id)
        except JournalError as exc:
            logger.error("venue order id {} of {} not journalled ({}); a restart must find it by "
                         "the start-up sweep", order_id, client_id, exc)

    def _stop_rules_thread(self, timeout_s: float) -> None:
        self._rules_stop.set()
        self._rules_thread.join(timeout_s)

    # --- market rules ------------------------------------------------------------------------
    def _refresh_rules(self, own_fees: dict[tuple[Venue, str], MarketInfo] | None = None) -> None:
        """Read every venue's market rules, then publish each venue's in one swap: its answer
        with ``own_fees`` (markets found to charge their own fee) laid over it. Nothing is
        published while a venue is being read, so no reader ever plans such a market at the
        venue-wide fee; a venue that cannot be read keeps the rules it has."""
        read: dict[Venue, list[MarketInfo]] = {}
        for venue, client in self.venue_clients.items():
            fallback = self.config.venues[venue].taker_fee
            try:
                read[venue] = client.get_market_info(self.config.markets)
            except VenueError as exc:
                logger.warning("{} market rules unavailable ({}); using the tick table and the config "
                               "fallback fee: taker {} (venues.{}.taker_fee)", venue.value, exc,
                               fallback, venue.value)
                continue
            logger.info("{}", describe_fees(venue, read[venue], fallback))
        for venue, infos in read.items():
            own = [info for (v, _market), info in (own_fees or {}).items() if v is venue]
            self.rules.update(venue, infos + own)  # in order: the own fee wins

    def _refresh_rules_daily(self) -> None:
        self._check_market_fees()
        while not self._rules_stop.wait(RULES_REFRESH_S):
            self._daily_rules_pass()

    def _daily_rules_pass(self) -> None:
        self._refresh_rules(dict(self._own_fees))  # own fees kept until checked again
        self._check_market_fees()

    def _check_market_fees(self) -> None:
        """Each market's own fee schedule, one look-up per ``FEE_CHECK_INTERVAL_S``.

        The rules load read one market per venue and assumed the others charge the same (the
        venues publish one rate for all KRW markets); this walk proves it market by market at
        a pace no rate window notices, and a market that differs gets its own rules."""
        checks = {venue: client.get_market_fees for venue, client in self.venue_clients.items()
                  if hasattr(client, "get_market_fees")}
        for market in self.config.markets:
            for venue, market_fees in list(checks.items()):
                if self._rules_stop.wait(FEE_CHECK_INTERVAL_S):
                    return
                try:
                    info = market_fees(market)
                except AuthError:  # a public-only client (dry run without keys): nothing to read
                    del checks[venue]
                    continue
                except VenueError as exc:
                    logger.debug("{} {} fee check skipped: {}", venue.value, market, exc)
                    continue
                current = self.rules.get(venue, market)
                told = {"taker_fee": info.taker_fee, "maker_fee": info.maker_fee,
                        "min_total": info.min_total}
                changed = {k: v for k, v in told.items() if v is not None and v != getattr(current, k)}
                if changed:
                    logger.warning("{} {} has its own fee schedule {}; using it", venue.value,
                                   market, ", ".join(f"{k} {v}" for k, v in changed.items()))
                    self.rules.update(venue, [info])
                    self._own_fees[(venue, market)] = info

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
        stats = dict(self.market_data.stats())
        if self.streams is not None:
            stats.update(self.streams.feed_stats())
        for venue, s in stats.items():
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
                # content age: receive time less the venue's own lag (BookView.as_of_ns)
                ages[venue.value] = (now_ns - view.as_of_ns) / 1e6 if view.recv_ns else None
                valid[venue.value] = view.valid
            markets.append(MarketStatus(market, ages, valid, {
                d: net.get((market, d)) for d in ("upbit_sell", "bithumb_sell")},
                venue_state=self.strategy.venue_state(market),
                sanity=strategy["sanity_held"].get(market)))
        risk = self.risk.summary()
        execs = self.executor.stats()
        # the ledger's free already includes what trades hold (available = free - held)
        balances = {v: {c: Decimal(a) for c, a in b.items()} for v, b in risk["balances"].items()}
        journal_errors = self.journal.errors
        alerts = self.alerter.stats()
        assets = sorted({base_currency(m) for m in self.config.markets})
        return EngineSnapshot(
            mode=self.mode, uptime_s=(now_ns - self._started_ns) / 1e9, feeds=feeds, markets=markets,
            signals=strategy["signals"], refused=sum(strategy["refused"].values()),
            trades=risk["trades"], successes=risk["successes"], shortfalls=risk["shortfalls"],
            failures=risk["failures"], consecutive_failures=risk["consecutive_failures"],
            realised_pnl_krw=risk["realised_pnl_krw"], fees_krw=risk["fees_krw"], balances=balances,
            residual={a: v for a, v in risk["residual"].items() if v},
            residual_krw={a: v for a, v in risk["residual_krw"].items() if risk["residual"].get(a)},
            unresolved=[f"{cid} on {venue} ({state})" for cid, venue, state in execs["unresolved_legs"]],
            latencies_us=execs.get("latency_us", {}), rate_limits=self._rate_limits(),
            rate_limit_bans=self._rate_limit_bans(),
            circuit=risk["circuit"],
            trading_state=risk["state"], halt_reason=risk["kill_reason"] or risk["halt_reason"],
            transfers=self.rebalancer.lines(),
            inventory={a: {v.value: (shares[v.value], self.inventory.target_share(v, a) or 0.0)
                           for v in VENUES}
                       for a, shares in self.inventory.shares(assets + ["KRW"]).items()},
            journal_errors=journal_errors,
            journal_failing=self._journal_watch.failing(journal_errors, now_ns),
            recorder_error=self.market_data.recorder_error, halts=risk["halts"],
            alerts_fired=alerts["fired"], alert_failures=alerts["failed"])

    def _rate_limits(self) -> dict:
        """Each venue's REST request windows (clients without a limiter, e.g. stubs, skipped)."""
        out = {}
        for venue, client in self.venue_clients.items():
            limiter = getattr(client, "limiter", None)
            if limiter is not None:
                out[venue.value] = {group.value: stats for group, stats in limiter.stats().items()}
        return out

    def _rate_limit_bans(self) -> dict:
        """Each venue's HTTP 418 blocks (clients without a limiter skipped)."""
        limiters = {v: getattr(c, "limiter", None) for v, c in self.venue_clients.items()}
        return {v.value: limiter.ban_stats() for v, limiter in limiters.items() if limiter is not None}

    def summary(self) -> str:
        s = self.snapshot()
        rate = "-" if s.success_rate is None else f"{100 * s.success_rate:.1f}%"
        lines = [
            f"K-Arb summary ({self.mode}, {s.uptime_s:.0f}s)",
            f"  signals {s.signals}, refused {s.refused},"
            f" trades {s.trades}, succeeded {s.successes}, shortfall {s.shortfalls},"
            f" failed {s.failures}, success rate {rate}",
            f"  realised PnL {s.realised_pnl_krw:,.0f} KRW, fees {s.fees_krw:,.2f} KRW",
        ]
        for venue, balances in sorted(s.balances.items()):
            shown = ", ".join(f"{c} {_amount(c, v)}" for c, v in sorted(balances.items()))
            lines.append(f"  {venue}: {shown}")
        residual = ", ".join(f"{a} {v}" for a, v in s.residual.items()) or "none"
        lines.append(f"  residual exposure: {residual}")
        if s.unresolved:
            lines.append(f"  orders that may still fill (the next start looks them up): "
                         f"{', '.join(s.unresolved)}")
        if s.halt_reason:
            lines.append(f"  trading stopped: {s.halt_reason}")
        return "\n".join(lines)


def _amount(currency: str, value: Decimal) -> str:
    """KRW in whole won with separators; a coin with no trailing zeros and no exponent."""
    if currency == "KRW":
        return f"{value:,.0f}"
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
