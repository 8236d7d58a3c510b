"""Alert rules evaluated on each ``EngineSnapshot``, and one-off notices; each goes to the log
and to every configured notifier (``karb.notifiers``: JSON webhook, Telegram, Slack, Discord).

A condition alert fires once when it becomes true and re-arms when it clears, so a feed that
stays down does not page every second. A notice (start-up, shutdown, a sanity check's verdict)
is an event: ``notify`` sends it as it happens. Each notifier has its own queue and delivery
thread (``alerts-telegram``, ``alerts-slack``...), so a slow receiver never delays the monitor,
the strategy or another notifier; within a queue critical alerts go before warnings and info
notices. ``stop`` drains every queue in parallel within one deadline. Failed deliveries are
counted per notifier.
"""
from __future__ import annotations

import collections
import itertools
import math
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

import requests
from loguru import logger

from karb.notifiers import BUDGET_S, JsonWebhook, Notifier, deliver
from karb.status import EngineSnapshot

FAILURE_STREAK = 5
FIRED_KEPT = 1000  # the alerts kept in ``Alerter.fired`` (the log has them all)
RANK = {"critical": 0, "warning": 1, "info": 2}  # delivery order within one notifier's queue


@dataclass(frozen=True)
class Alert:
    kind: str  # low_balance | order_failures | feed_down | residual_exposure | circuit_open
    #            | journal_error | recorder_failed | halted | unresolved_orders | market_skipped
    #            | rate_limit_ban | transfer_overdue | transfer_failed | transfer_unknown
    #            notices: startup | shutdown | sanity_confirmed | sanity_refuted | rebalance_plan
    key: str  # what it is about (venue, asset...), so two feeds alert separately
    message: str
    severity: str = "critical"  # critical | warning | info (the log level too)


def evaluate(s: EngineSnapshot, low_balance_krw: Decimal, feed_down_s: float,
             residual_tolerance_krw: Decimal = Decimal(0),
             low_balance: dict[str, Decimal] | None = None) -> list[Alert]:
    """Return every alert condition true in ``s``. A residual worth no more than
    ``residual_tolerance_krw`` (``execution.residual_tolerance_krw``, dust) does not page.
    ``low_balance`` holds per-coin thresholds (coin units) besides ``low_balance_krw``."""
    alerts: list[Alert] = []
    limits = {"KRW": low_balance_krw, **(low_balance or {})}
    for venue, balances in s.balances.items():
        for currency, limit in limits.items():
            amount = balances.get(currency)
            if amount is not None and amount < limit:
                alerts.append(Alert("low_balance", f"{venue} {currency}",
                                    f"{venue} {currency} balance {_amount(amount)} below {_amount(limit)}"))
    if s.consecutive_failures >= FAILURE_STREAK:
        alerts.append(Alert("order_failures", "all", f"{s.consecutive_failures} consecutive order failures"))
    for venue, feed in s.feeds.items():
        if feed.down_for_s > feed_down_s:
            alerts.append(Alert("feed_down", venue, f"{venue} feed down (no data) for {feed.down_for_s:.0f}s"))
    for asset, amount in s.residual.items():
        worth = s.residual_krw.get(asset)
        if amount and (worth is None or abs(worth) > residual_tolerance_krw):
            alerts.append(Alert("residual_exposure", asset, f"residual exposure {amount} {asset} after unwind"))
    if s.halts:  # one alert per kind of halt (daily loss, drawdown, stale market data...)
        for kind, reason in s.halts.items():
            alerts.append(Alert("halted", kind, f"trading HALTED ({kind}): {reason}; "
                                "check, then `karb resume`"))
    elif s.trading_state == "halted":
        alerts.append(Alert("halted", "all", f"trading HALTED: {s.halt_reason}; "
                            "check, then `karb resume`"))
    for m in s.markets:
        if m.venue_state:
            alerts.append(Alert("market_skipped", m.market, f"{m.market} not traded: {m.venue_state}",
                                "warning"))
    if s.unresolved:
        alerts.append(Alert("unresolved_orders", "all", f"{len(s.unresolved)} orders may still fill "
                            f"and are being looked up: {', '.join(s.unresolved[:5])}"))
    for venue, ban in s.rate_limit_bans.items():
        if ban.blocked_for_s > 0:
            alerts.append(Alert("rate_limit_ban", venue, f"{venue} BLOCKED our requests (HTTP 418, "
                                f"{ban.bans} blocks so far): every {venue} request fails for "
                                f"{ban.blocked_for_s:.0f}s more, cancels and look-ups included"))
    if s.circuit == "open":
        alerts.append(Alert("circuit_open", "all", "circuit breaker OPEN: trading paused"))
    if s.journal_failing:
        alerts.append(Alert("journal_error", "journal", f"journal refusing writes ({s.journal_errors} "
                            "failed so far; disk full?): new trades are refused"))
    if s.recorder_error:
        alerts.append(Alert("recorder_failed", "recorder", f"frame recording stopped: {s.recorder_error}"))
    return alerts


def _amount(value: Decimal) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:f}"


class Alerter:
    """Turn alert conditions into log lines and notifications, once per episode."""

    def __init__(self, webhook_url: str | None, low_balance_krw: Decimal, feed_down_s: float,
                 timeout_s: float = 3.0, residual_tolerance_krw: Decimal = Decimal(0),
                 low_balance: dict[str, Decimal] | None = None,
                 notifiers: list[Notifier] | None = None):
        self.notifiers: list[Notifier] = ([JsonWebhook(webhook_url)] if webhook_url else []) + \
            list(notifiers or [])
        self._low_balance_krw = low_balance_krw
        self._low_balance = dict(low_balance or {})
        self._feed_down_s = feed_down_s
        self._residual_tolerance_krw = residual_tolerance_krw
        self._active: set[tuple[str, str]] = set()
        self._channels = [_Channel(n, timeout_s) for n in self.notifiers]
        self._lock = threading.Lock()
        self._started = False
        self.counts: Counter[str] = Counter()  # kind -> alerts fired
        self.fired: collections.deque[Alert] = collections.deque(maxlen=FIRED_KEPT)  # latest

    def start(self) -> "Alerter":
        with self._lock:
            if not self._started:
                self._started = True
                for channel in self._channels:
                    channel.thread.start()
        return self

    def stop(self, timeout_s: float = 3.0) -> None:
        """Deliver what is queued, every notifier at once, within ``timeout_s``; then end the
        threads. What a notifier could not send by then is counted as failed."""
        deadline = time.monotonic() + timeout_s
        for channel in self._channels:
            channel.close(deadline)
        for channel in self._channels:
            if channel.thread.is_alive():
                channel.thread.join(max(0.0, deadline - time.monotonic()))

    def stats(self) -> dict:
        with self._lock:
            fired = dict(self.counts)
        return {"fired": fired, "failed": {n.name: n.failed for n in self.notifiers},
                "sent": {n.name: n.sent for n in self.notifiers}}

    def check(self, s: EngineSnapshot) -> list[Alert]:
        """Evaluate ``s``; fire the alerts that are new. Called by the monitor thread."""
        current = evaluate(s, self._low_balance_krw, self._feed_down_s, self._residual_tolerance_krw,
                           self._low_balance)
        keys = {(a.kind, a.key) for a in current}
        new = [a for a in current if (a.kind, a.key) not in self._active]
        self._active = keys
        for alert in new:
            self.notify(alert)
        return new

    def notify(self, alert: Alert) -> None:
        """Log ``alert`` and queue it for every notifier. Any thread; never blocks."""
        logger.log(alert.severity.upper(), "ALERT {}: {}", alert.kind, alert.message)
        with self._lock:
            self.counts[alert.kind] += 1
        self.fired.append(alert)
        for channel in self._channels:
            channel.put(alert)


class _Channel:
    """One notifier's priority queue and delivery thread."""

    def __init__(self, notifier: Notifier, timeout_s: float) -> None:
        self.notifier = notifier
        self._timeout_s = timeout_s
        self._queue: queue.PriorityQueue[tuple[int, int, Alert | None]] = queue.PriorityQueue()
        self._order = itertools.count()  # first in, first out within one severity
        self._deadline = math.inf  # monotonic; set by ``close``
        self._changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, name=f"alerts-{notifier.name}", daemon=True)

    def put(self, alert: Alert) -> None:
        self._queue.put((RANK.get(alert.severity, 0), next(self._order), alert))

    def close(self, deadline: float) -> None:
        """Deliver what is queued until ``deadline``, then end; a wait in progress is cut short."""
        with self._changed:
            self._deadline = deadline
            self._changed.notify_all()
        self._queue.put((len(RANK), next(self._order), None))  # after every queued alert

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        with self._changed:
            while (left := min(end, self._deadline) - time.monotonic()) > 0:
                self._changed.wait(left)

    def _run(self) -> None:
        session = requests.Session()
        late = 0
        while (alert := self._queue.get()[2]) is not None:
            self._sleep(self.notifier.resume_at - time.monotonic())  # a 429's wait, on this thread only
            if time.monotonic() >= self._deadline:
                late += 1  # stopping and out of time: counted, never sent after the deadline
                continue
            try:
                deliver(self.notifier, alert, session, self._timeout_s, self._sleep, BUDGET_S,
                        lambda: self._deadline)
            except Exception:  # a bug in one notifier must not end alerting
                logger.exception("alert delivery to {} failed", self.notifier.label)
        if late:
            self.notifier.failed += late
            logger.error("{} alerts not delivered to {}: out of time at stop", late, self.notifier.label)
        session.close()
