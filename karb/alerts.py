"""Alert rules evaluated on each ``EngineSnapshot``: a CRITICAL log line, and an optional JSON
POST to a webhook.

An alert fires once when its condition becomes true and re-arms when it clears, so a feed that
stays down does not page every second. Webhook POSTs run on the ``alerts`` thread so a slow
receiver never delays the monitor.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass
from decimal import Decimal

import requests
from loguru import logger

from karb.status import EngineSnapshot

FAILURE_STREAK = 5
FIRED_KEPT = 1000  # the alerts kept in ``Alerter.fired`` (the log has them all)


@dataclass(frozen=True)
class Alert:
    kind: str  # low_balance | order_failures | feed_down | residual_exposure | circuit_open
    #            | journal_error | recorder_failed | halted | unresolved_orders
    key: str  # what it is about (venue, asset...), so two feeds alert separately
    message: str


def evaluate(s: EngineSnapshot, low_balance_krw: Decimal, feed_down_s: float,
             residual_tolerance_krw: Decimal = Decimal(0)) -> list[Alert]:
    """Return every alert condition true in ``s``. A residual worth no more than
    ``residual_tolerance_krw`` (``execution.residual_tolerance_krw``, dust) does not page."""
    alerts: list[Alert] = []
    for venue, balances in s.balances.items():
        krw = balances.get("KRW")
        if krw is not None and krw < low_balance_krw:
            alerts.append(Alert("low_balance", venue, f"{venue} KRW balance {krw:,.0f} below {low_balance_krw:,.0f}"))
    if s.consecutive_failures >= FAILURE_STREAK:
        alerts.append(Alert("order_failures", "all", f"{s.consecutive_failures} consecutive order failures"))
    for venue, feed in s.feeds.items():
        if feed.down_for_s > feed_down_s:
            alerts.append(Alert("feed_down", venue, f"{venue} feed down (no data) for {feed.down_for_s:.0f}s"))
    for asset, amount in s.residual.items():
        worth = s.residual_krw.get(asset)
        if amount and (worth is None or abs(worth) > residual_tolerance_krw):
            alerts.append(Alert("residual_exposure", asset, f"residual exposure {amount} {asset} after unwind"))
    if s.trading_state == "halted":
        alerts.append(Alert("halted", "all", f"trading HALTED: {s.halt_reason}; "
                            "check, then `karb resume`"))
    if s.unresolved:
        alerts.append(Alert("unresolved_orders", "all", f"{len(s.unresolved)} orders may still fill "
                            f"and are being looked up: {', '.join(s.unresolved[:5])}"))
    if s.circuit == "open":
        alerts.append(Alert("circuit_open", "all", "circuit breaker OPEN: trading paused"))
    if s.journal_failing:
        alerts.append(Alert("journal_error", "journal", f"journal refusing writes ({s.journal_errors} "
                            "failed so far; disk full?): new trades are refused"))
    if s.recorder_error:
        alerts.append(Alert("recorder_failed", "recorder", f"frame recording stopped: {s.recorder_error}"))
    return alerts


class Alerter:
    """Turn alert conditions into CRITICAL logs and webhook POSTs, once per episode."""

    def __init__(self, webhook_url: str | None, low_balance_krw: Decimal, feed_down_s: float,
                 timeout_s: float = 3.0, residual_tolerance_krw: Decimal = Decimal(0)):
        self._webhook_url = webhook_url
        self._low_balance_krw = low_balance_krw
        self._feed_down_s = feed_down_s
        self._timeout_s = timeout_s
        self._residual_tolerance_krw = residual_tolerance_krw
        self._active: set[tuple[str, str]] = set()
        self._queue: queue.Queue[Alert | None] = queue.Queue()
        self._thread = threading.Thread(target=self._post_loop, name="alerts", daemon=True)
        self.fired: collections.deque[Alert] = collections.deque(maxlen=FIRED_KEPT)  # latest

    def start(self) -> "Alerter":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 3.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)

    def check(self, s: EngineSnapshot) -> list[Alert]:
        """Evaluate ``s``; fire the alerts that are new. Called by the monitor thread."""
        current = evaluate(s, self._low_balance_krw, self._feed_down_s, self._residual_tolerance_krw)
        keys = {(a.kind, a.key) for a in current}
        new = [a for a in current if (a.kind, a.key) not in self._active]
        self._active = keys
        for alert in new:
            logger.critical("ALERT {}: {}", alert.kind, alert.message)
            self.fired.append(alert)
            if self._webhook_url:
                self._queue.put(alert)
        return new

    def _post_loop(self) -> None:
        session = requests.Session()
        while (alert := self._queue.get()) is not None:
            body = {"kind": alert.kind, "key": alert.key, "message": alert.message,
                    "source": "karb", "time": time.time()}
            try:
                session.post(self._webhook_url, json=body, timeout=self._timeout_s).raise_for_status()
            except requests.RequestException as exc:
                logger.error("alert webhook failed for {}: {}", alert.kind, type(exc).__name__)
        session.close()
