"""The ``balance-sync`` thread: ask the venues for balances, report drift, adopt the truth.

It runs every ``monitor.balance_sync_s`` and whenever ``request_refresh()`` is called (the
executor calls it after each trade). For each venue it notes the ledger's version, fetches the
balances, journals them, and compares them with the ledger's free balances: any difference is
drift (a missed fill, a fee rounded differently, a manual deposit or trade) and is logged and
journalled as an incident. The venue's numbers then replace the ledger's, but only if no trade
touched the ledger while the answer was in flight (``Ledger.load(if_version=...)``), so a
balance that raced a fill is never taken as truth; it is simply tried again next time.
"""
from __future__ import annotations

import threading
from decimal import Decimal

from loguru import logger

from karb.clock import Clock
from karb.config import Config
from karb.exchanges.base import VenueClient
from karb.journal import Journal
from karb.model import Venue, base_currency
from karb.risk import Risk
from karb.threads import stop_thread

ZERO = Decimal(0)


class BalanceSync:
    def __init__(self, clients: dict[Venue, VenueClient], risk: Risk, journal: Journal,
                 config: Config, clock: Clock):
        self.clients = clients
        self.ledger = risk.ledger
        self.journal = journal
        self.clock = clock
        self.interval_s = config.monitor.balance_sync_s
        self.currencies = ["KRW", *sorted({base_currency(m) for m in config.markets})]
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.syncs = self.errors = self.skipped = 0
        self.drift: dict[str, dict[str, Decimal]] = {}  # venue -> currency -> venue - ledger
        self.last_sync_ns: dict[str, int] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="balance-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        stop_thread(self._thread, timeout, self._stop, self._wake)

    def request_refresh(self, *_args) -> None:
        """Sync soon (any thread; accepts and ignores a listener's arguments)."""
        self._wake.set()

    def stats(self) -> dict:
        with self._lock:
            return {"syncs": self.syncs, "errors": self.errors, "skipped": self.skipped,
                    "drift": {v: dict(d) for v, d in self.drift.items()},
                    "last_sync_ns": dict(self.last_sync_ns)}

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.sync_all()

    def sync_all(self) -> None:
        """Sync every venue once (the thread's body; tests call it directly)."""
        for venue in self.clients:
            try:
                self.sync(venue)
            except Exception as exc:  # a venue error (or a bug) must not end the thread
                with self._lock:
                    self.errors += 1
                logger.warning("balance sync of {} failed: {}", venue.value, exc)

    def sync(self, venue: Venue) -> bool:
        """Fetch, compare and adopt one venue's balances. Return whether they were adopted."""
        version = self.ledger.version
        balances = self.clients[venue].get_balances()
        self.journal.record_balances(venue.value, balances, "sync")
        drift = {}
        for currency in sorted(set(self.currencies) | set(balances)):
            theirs = balances[currency].free if currency in balances else ZERO
            diff = theirs - self.ledger.free(venue, currency)
            if diff:
                drift[currency] = diff
        adopted = self.ledger.load(venue, balances, if_version=version)
        with self._lock:
            self.last_sync_ns[venue.value] = self.clock.monotonic_ns()
            if not adopted:
                self.skipped += 1  # a trade raced the answer: its drift is not meaningful
                return False
            self.syncs += 1
            self.drift[venue.value] = drift
        if drift:
            detail = ", ".join(f"{c} {d:+f}" for c, d in drift.items())
            logger.warning("balance drift on {} (venue - ledger): {}; ledger now follows the venue",
                           venue.value, detail)
            self.journal.record_incident("balance_drift", f"{venue.value}: {detail}")
        return True
