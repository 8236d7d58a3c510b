"""The ``rebalance`` thread: follow open transfers, plan, and (opt-in) move coin back.

Every ``rebalance.check_s`` (the first one after start) the thread calls ``step(now_ns)`` (the backtest calls the same
method from its loop on simulated time):

1. ``TransferExecutor.poll()``: every open transfer followed (arrived, failed, overdue: alert and
   the asset blocked);
2. the withdrawal fees, read from each venue's ``withdraw/chance`` at the first step and every
   ``fee_refresh_s`` after (``rebalance.network_fee`` where that cannot be read);
3. ``Planner.plans`` (``karb.rebalance.plan``: what, itemised cost, expected earnings, worth it
   or not), with the earnings of each direction read from the journal only when some side is
   low; a plan whose asset is blocked or has a transfer open says so and is not acted on;
4. ``mode: plan``: each plan is logged and sent as a ``rebalance_plan`` alert (info) once per
   change (a new plan, or one turning worth it or not); nothing is ever withdrawn.
   ``mode: auto`` (and withdrawals enabled: ``auto_transfer_refusal``): each worth-doing coin
   plan is submitted to ``TransferExecutor``, which enforces every safety rule (whitelist, caps,
   test transfer to a new address, journal first, look up never re-send). KRW plans (the bridge:
   buy, send, sell) are proposed only, in either mode: the three-step bridge with its own
   restart-safe journal is not built yet.

``on_moved`` is called after a withdrawal was sent or a transfer arrived (balances changed
outside any trade): the engine asks ``balance-sync`` for a refresh, the backtest reloads its
ledger. ``cost_krw`` adds up what the transfers sent cost (network fee x the sending venue's
bid when sent); the panel shows ``lines()``.
"""
from __future__ import annotations

import threading
from decimal import Decimal
from typing import Callable, Mapping

from loguru import logger

from karb.alerts import Alert
from karb.book import BookBoard
from karb.clock import NS_PER_S, Clock
from karb.exchanges.errors import VenueError
from karb.journal import Journal, JournalError
from karb.model import Venue
from karb.rebalance.config import RebalanceConfig
from karb.rebalance.plan import Direction, Plan, Planner
from karb.rebalance.records import Transfer
from karb.rebalance.transfer import TransferExecutor, TransferIntent, TransferRefused
from karb.threads import stop_thread

ZERO = Decimal(0)


class Rebalancer:
    def __init__(self, config: RebalanceConfig, planner: Planner, executor: TransferExecutor,
                 board: BookBoard, journal: Journal, clock: Clock, *,
                 fee_clients: Mapping[Venue, object] | None = None,
                 notify: Callable[[Alert], None] = lambda alert: None,
                 on_moved: Callable[[], None] = lambda: None):
        self.config = config
        self.planner = planner
        self.executor = executor
        self.board = board
        self.journal = journal
        self.clock = clock
        self.fee_clients = dict(fee_clients or {})
        self.notify = notify
        self.on_moved = on_moved
        self.auto = config.mode == "auto" and executor.disabled_reason is None
        self._fees: dict[tuple[Venue, str], Decimal] = {}
        self._fees_read_ns: int | None = None
        self._shown: set[tuple] = set()
        self._lines: tuple[str, ...] = ()
        self.plans: list[Plan] = []
        self.cost_krw = ZERO
        self.sent: list[Transfer] = []
        self._started_wall_ns = clock.wall_ns()  # the earnings window's start when the journal has none
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- thread -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rebalance", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            stop_thread(self._thread, timeout)

    def _run(self) -> None:
        # the first pass one check_s after start: start-up's own requests go first
        while not self._stop.wait(self.config.check_s):
            try:
                self.step(self.clock.monotonic_ns())
            except Exception:  # a bad pass must not end the thread: the next one tries again
                logger.exception("rebalance pass failed")

    # --- one pass -----------------------------------------------------------------------------
    def step(self, now_ns: int) -> list[Plan]:
        """One pass (module docstring); return the plans."""
        before = {t.id: t.state for t in self.executor.records.open_transfers()}
        polled = self.executor.poll()
        if any(before.get(t.id) != t.state for t in polled) or len(polled) < len(before):
            self.on_moved()  # something arrived, failed or was found
        self._refresh_fees(now_ns)
        needs = any(self.planner.needs(a) for a in self._assets())
        earnings = self._earnings() if needs else {}
        plans = self.planner.plans(self._top, self._network_fees(), earnings) if needs else []
        blocked = self.executor.blocked_assets()
        open_assets = {t.asset for t in self.executor.records.open_transfers()}
        notes = {}
        for plan in plans:
            moving = plan.bridge if plan.route == "krw" else plan.asset
            if moving in blocked:
                notes[id(plan)] = f"{moving} transfers blocked: {blocked[moving]}"
            elif moving in open_assets:
                notes[id(plan)] = f"a {moving} transfer is open"
        self._announce(plans, notes)
        if self.auto:
            for plan in plans:
                if plan.worth and plan.route == "coin" and id(plan) not in notes:
                    notes[id(plan)] = self._submit(plan)
        self.plans = plans
        self._lines = tuple(self._render(plans, notes, blocked))
        return plans

    def lines(self) -> list[str]:
        """The panel's rebalance lines: each plan, open transfers, blocked assets."""
        return list(self._lines)

    def _assets(self) -> list[str]:
        return sorted({m.split("-", 1)[1] for m in self.planner.markets}) + ["KRW"]

    def _submit(self, plan: Plan) -> str:
        intent = TransferIntent(plan.asset, plan.amount, plan.from_venue, plan.to_venue, plan.net_type)
        try:
            transfer = self.executor.submit(intent)
        except TransferRefused as exc:
            logger.info("rebalance {}: not sent ({}: {})", plan.asset, exc.reason, exc)
            return f"not sent: {exc}"
        except (VenueError, JournalError) as exc:
            logger.warning("rebalance {}: withdrawal failed: {}", plan.asset, exc)
            return f"withdrawal failed: {exc}"
        fee = transfer.fee if transfer.fee is not None else self._fee(plan.from_venue, plan.asset) or ZERO
        top = self._top(plan.from_venue, f"KRW-{plan.asset}")
        self.cost_krw += fee * top[0] if top else ZERO
        self.sent.append(transfer)
        self.on_moved()
        return (f"sent {transfer.amount} {plan.asset} ({transfer.id}"
                f"{', a test transfer to a new address' if transfer.is_test else ''})")

    def _announce(self, plans: list[Plan], notes: dict) -> None:
        """Log (and in plan mode alert) each plan once per change."""
        keys = {p.key for p in plans}
        for plan in plans:
            if plan.key in self._shown:
                continue
            logger.info("rebalance plan: {}", plan)
            if not self.auto:
                self.notify(Alert("rebalance_plan", f"{plan.asset} {plan.to_venue.value}",
                                  f"rebalance plan: {plan}", "info"))
        self._shown = keys

    def _render(self, plans: list[Plan], notes: dict, blocked: dict[str, str]) -> list[str]:
        out = [f"{plan}" + (f" ({notes[id(plan)]})" if id(plan) in notes else "") for plan in plans]
        out += [f"transfer open: {t.amount} {t.asset} {t.from_venue.value} -> {t.to_venue.value} ({t.state})"
                for t in self.executor.records.open_transfers()]
        out += [f"{asset} transfers BLOCKED: {why}" for asset, why in blocked.items()]
        return out

    # --- inputs ---------------------------------------------------------------------------------
    def _top(self, venue: Venue, market: str) -> tuple[Decimal, Decimal] | None:
        try:
            view = self.board.get(venue, market).view
        except KeyError:
            return None
        if not view.valid or not view.bids or not view.asks:
            return None
        return Decimal(repr(view.bids[0][0])), Decimal(repr(view.asks[0][0]))

    def _refresh_fees(self, now_ns: int) -> None:
        if self._fees_read_ns is not None and now_ns - self._fees_read_ns < self.config.fee_refresh_s * NS_PER_S:
            return
        self._fees_read_ns = now_ns
        coins = set(self._assets()[:-1]) | {self.config.bridge}
        for venue, client in self.fee_clients.items():
            chance = getattr(client, "get_withdraw_chance", None)
            if chance is None:
                continue
            for asset in sorted(coins):
                try:
                    self._fees[(venue, asset)] = chance(asset, self.planner.net_type(asset)).fee
                except VenueError as exc:
                    logger.debug("{} {} withdrawal fee not read ({}); using rebalance.network_fee",
                                 venue.value, asset, exc)

    def _fee(self, venue: Venue, asset: str) -> Decimal | None:
        return self._fees.get((venue, asset), self.config.network_fee.get(asset))

    def _network_fees(self) -> dict:
        fees: dict = dict(self.config.network_fee)
        fees.update(self._fees)
        return fees

    def _earnings(self) -> dict[Direction, Decimal]:
        """Each direction's realised PnL over the window, as a rate over the part of the window
        the journal covers, times ``horizon_s`` (``karb.rebalance.plan``)."""
        now = self.clock.wall_ns()
        since = now - int(self.config.earnings_window_s * NS_PER_S)
        (first,) = self.journal.query("SELECT MIN(wall_ns) AS t FROM balances")
        start = max(since, first["t"] if first["t"] is not None else self._started_wall_ns)
        covered_s = Decimal(now - start) / NS_PER_S
        if covered_s <= 0:
            return {}
        rows = self.journal.query("SELECT market, sell_venue, realised_krw FROM signals "
                                  "WHERE status IS NOT NULL AND wall_ns >= ?", (since,))
        sums: dict[Direction, Decimal] = {}
        for r in rows:
            key = (r["market"], Venue(r["sell_venue"]))
            sums[key] = sums.get(key, ZERO) + Decimal(r["realised_krw"] or 0)
        horizon = Decimal(repr(self.config.horizon_s))
        return {k: v / covered_s * horizon for k, v in sums.items()}
