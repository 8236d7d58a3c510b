"""The ``balance-sync`` thread: ask the venues for balances, report drift, adopt the truth.

It runs every ``monitor.balance_sync_s`` and whenever ``request_refresh()`` is called (the
executor calls it after each trade). For each venue it notes the ledger's version, fetches the
balances, journals the ones that changed since it last journalled that venue (all of them the
first time; a currency gone from the answer as a zero), and compares them with the ledger's
free balances: any difference is drift (a missed fill, a fee rounded differently, a manual
deposit or trade) and is logged and journalled as an incident. The venue's numbers then replace
the ledger's, but only if no trade touched the ledger while the answer was in flight
(``Ledger.load(if_version=...)``), so a balance that raced a fill is never taken as truth; it
is simply tried again next time.

A venue's balance also lags its own fills a little, so an answer fetched right after a trade
can still show the pre-trade numbers. The venue's numbers are therefore not adopted for
``SETTLE_S`` after this thread last saw the ledger change (the change is noticed at the next
sync, so the period counts from no earlier than the trade itself); such a sync is counted as
skipped and the thread syncs again as soon as the period is over (while trades keep coming
faster than that, drift waits for a quiet moment).

With a private stream (``karb.order_stream``) the venue's balances come first from its
``myAsset`` events: each REST answer is a baseline that later events overlay, currency by
currency, and a sync reads that view instead of asking REST. A view that agrees with the
ledger costs no request; one that differs is never adopted itself: REST is asked at once and
only its answer is compared, reported and adopted (a missed or stale event cannot rewrite the
ledger). REST is also asked when the view is older than ``monitor.balance_rest_check_s``, when
the stream is down or has reconnected since the baseline (events may have been missed), and
when an event arrived while the REST answer was in flight (the answer may predate it). The
adoption guards are the same either way.
"""
from __future__ import annotations

import threading
from decimal import Decimal

from loguru import logger

from karb.clock import Clock
from karb.config import Config
from karb.exchanges.base import VenueClient
from karb.journal import Journal
from karb.model import Balance, Venue, base_currency
from karb.order_stream import OrderStreams
from karb.risk import Risk
from karb.threads import stop_thread

ZERO = Decimal(0)
SETTLE_S = 2.0  # how long after a trade touched the ledger a venue balance is not adopted


class BalanceSync:
    def __init__(self, clients: dict[Venue, VenueClient], risk: Risk, journal: Journal,
                 config: Config, clock: Clock, streams: OrderStreams | None = None):
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
        self._seen_version: int | None = None  # the ledger version at the last sync
        self._changed_ns: int | None = None  # when a sync first saw the version move
        self.streams = streams
        self.rest_check_ns = int(config.monitor.balance_rest_check_s * 1e9)
        self._view: dict[Venue, dict[str, Balance]] = {}  # REST baseline + myAsset overlay
        self._view_epoch: dict[Venue, int] = {}
        self._view_rest_ns: dict[Venue, int] = {}
        self._asset_events: dict[Venue, int] = {}
        # what was last journalled per venue: a sync journals only changes (a full set on every
        # sync was ~1,800 rows/s at 150 markets with a private stream, ~9 GB of journal a day)
        self._journalled: dict[Venue, dict[str, tuple[Decimal, Decimal]]] = {}
        self.stream_syncs = self.rest_fetches = 0
        if streams is not None:
            streams.add_asset_listener(self.on_asset)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="balance-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        stop_thread(self._thread, timeout, self._stop, self._wake)

    def on_asset(self, venue: Venue, balances: dict[str, Balance], _ts_ms: int = 0) -> None:
        """A ``myAsset`` event (stream thread): overlay the view, sync soon."""
        with self._lock:
            self._asset_events[venue] = self._asset_events.get(venue, 0) + 1
            view = self._view.get(venue)
            if view is not None:
                view.update(balances)
        self._wake.set()

    def _drift(self, venue: Venue, balances: dict[str, Balance]) -> dict[str, Decimal]:
        drift = {}
        for currency in sorted(set(self.currencies) | set(balances)):
            theirs = balances[currency].free if currency in balances else ZERO
            diff = theirs - self.ledger.free(venue, currency)
            if diff:
                drift[currency] = diff
        return drift

    def _balances(self, venue: Venue, rest: bool = False) -> tuple[dict[str, Balance], str]:
        """The venue's balances: the stream's view when it can be trusted (and ``rest`` is
        not asked for), else REST."""
        streams = self.streams
        up = streams is not None and venue in streams.venues and streams.is_up(venue)
        epoch = streams.mark(venue, None, None)[0] if up else None
        now = self.clock.monotonic_ns()
        with self._lock:
            view = self._view.get(venue)
            if (not rest and up and view is not None and self._view_epoch.get(venue) == epoch
                    and now - self._view_rest_ns.get(venue, 0) < self.rest_check_ns):
                self.stream_syncs += 1
                return dict(view), "stream"
            events_before = self._asset_events.get(venue, 0)
        balances = self.clients[venue].get_balances()
        with self._lock:
            self.rest_fetches += 1
            if not up:
                self._view.pop(venue, None)
            elif self._asset_events.get(venue, 0) == events_before:
                self._view[venue] = dict(balances)
                self._view_epoch[venue] = epoch
                self._view_rest_ns[venue] = now
            else:  # an event raced the answer: which is newer is unknown; ask REST next time
                self._view.pop(venue, None)
        return balances, "sync"

    def request_refresh(self, *_args) -> None:
        """Sync soon (any thread; accepts and ignores a listener's arguments)."""
        self._wake.set()

    def stats(self) -> dict:
        with self._lock:
            return {"syncs": self.syncs, "errors": self.errors, "skipped": self.skipped,
                    "stream_syncs": self.stream_syncs, "rest_fetches": self.rest_fetches,
                    "drift": {v: dict(d) for v, d in self.drift.items()},
                    "last_sync_ns": dict(self.last_sync_ns)}

    def next_wait_s(self) -> float:
        """Seconds until the next scheduled sync: the interval, or sooner if a sync was skipped
        only because the ledger had not settled."""
        settle_end = self._settle_end_ns()
        if settle_end is None:
            return self.interval_s
        return min(self.interval_s, max(0.0, (settle_end - self.clock.monotonic_ns()) / 1e9))

    def _changes(self, venue: Venue, balances: dict[str, Balance]) -> dict[str, Balance]:
        # the balances that differ from what was last journalled for ``venue`` (remembered as
        # journalled; the write itself is queued and its failure counted by the journal)
        last = self._journalled.setdefault(venue, {})
        changed = {c: b for c, b in balances.items() if last.get(c) != (b.free, b.locked)}
        changed.update({c: Balance(c, ZERO) for c, amounts in last.items()
                        if c not in balances and amounts != (ZERO, ZERO)})
        for currency, balance in changed.items():
            last[currency] = (balance.free, balance.locked)
        return changed

    def _settle_end_ns(self) -> int | None:
        with self._lock:
            if self._changed_ns is None:
                return None
            return self._changed_ns + int(SETTLE_S * 1e9)

    def _settling(self, version: int) -> bool:
        # Note a ledger version change; True while within SETTLE_S of the last one seen.
        now = self.clock.monotonic_ns()
        with self._lock:
            if self._seen_version is not None and version != self._seen_version:
                self._changed_ns = now
            self._seen_version = version
            if self._changed_ns is not None and now - self._changed_ns >= int(SETTLE_S * 1e9):
                self._changed_ns = None
            return self._changed_ns is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.next_wait_s())
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
        settling = self._settling(version)
        balances, source = self._balances(venue)
        drift = self._drift(venue, balances)
        if drift and source == "stream" and not settling:  # only REST's word is adopted as drift
            balances, source = self._balances(venue, rest=True)
            drift = self._drift(venue, balances)
        changed = self._changes(venue, balances)
        if changed:
            self.journal.record_balances(venue.value, changed, source)
        adopted = not settling and self.ledger.load(venue, balances, if_version=version)
        with self._lock:
            self.last_sync_ns[venue.value] = self.clock.monotonic_ns()
            if not adopted:
                self.skipped += 1  # a trade raced or just preceded the answer: no verdict
                return False
            self.syncs += 1
            self.drift[venue.value] = drift
        if drift:
            detail = ", ".join(f"{c} {d:+f}" for c, d in drift.items())
            logger.warning("balance drift on {} (venue - ledger): {}; ledger now follows the venue",
                           venue.value, detail)
            self.journal.record_incident("balance_drift", f"{venue.value}: {detail}")
        return True
