"""Thread ``leg-resolver``: follow orders left non-final until the venue says they are final.

A leg that is still UNKNOWN, SENT or ACKNOWLEDGED after its fill timeout (answer lost, polls
and cancel failing) may yet fill: it is possible exposure. Nothing may be retried or flattened
against it, so its trade is handed here (``add``) instead of being unwound and booked. This
thread outlives the leg threads' part in the trade: it looks each open order up (by order id,
else client id) with exponential backoff, cancels it once found resting, applies what the venue
says (``on_progress(trade, leg, before)`` books what changed since ``before``) and journals each change. When every order of a trade
is final, ``on_resolved(trade)`` runs the unwind decision and books the trade (on this thread).

Bounds: an order the venue has not heard of is taken as never placed (REJECTED) only after
``not_found_window_s``; a trade still unresolved after ``resolve_timeout_s`` goes to
``on_give_up(trade)`` (journal a critical incident, halt; its exposure stays counted). Time
comes from ``clock``; ``pause`` is injectable (tests move a fake clock instead of waiting).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from loguru import logger

from karb.clock import NS_PER_S, Clock
from karb.config import ExecutionConfig
from karb.exchanges.base import VenueClient
from karb.exchanges.errors import OrderNotFound
from karb.journal import Journal
from karb.legs import Leg, LegState
from karb.model import Venue
from karb.placement import Placer

MAX_BACKOFF_S = 5.0
_NEVER_SEEN = (LegState.NEW, LegState.SENT, LegState.UNKNOWN)


@dataclass
class _Entry:
    trade: object  # karb.execution.Trade (no import: execution imports this module)
    since_ns: int
    delay_s: float
    due_ns: int = 0


class LegResolver:
    def __init__(self, clients: dict[Venue, VenueClient], placer: Placer, journal: Journal,
                 config: ExecutionConfig, clock: Clock,
                 on_progress: Callable[[object, Leg, tuple], None],
                 on_resolved: Callable[[object], None], on_give_up: Callable[[object], None]):
        self.clients = clients
        self.placer = placer
        self.journal = journal
        self.config = config
        self.clock = clock
        self.on_progress = on_progress
        self.on_resolved = on_resolved
        self.on_give_up = on_give_up
        self._wake = threading.Event()
        self.pause: Callable[[float], None] = self._wake.wait  # woken early by add/stop
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}  # by signal id
        self._stopping = False
        self._hurry = False
        self._thread = threading.Thread(target=self._run, name="leg-resolver", daemon=True)

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop looking (what is left is reported by the executor); bounded by ``timeout``."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("leg-resolver did not stop within {} s", timeout)

    def hurry(self) -> None:
        """Look again now and then at the shortest backoff (the engine is stopping)."""
        self._hurry = True
        now = self.clock.monotonic_ns()
        with self._lock:
            for entry in self._entries.values():
                entry.due_ns, entry.delay_s = now, self.config.poll_interval_ms / 1000
        self._wake.set()

    def add(self, trade) -> None:
        """Resolve ``trade``'s non-final orders, then hand it to ``on_resolved``."""
        now = self.clock.monotonic_ns()
        delay = self.config.poll_interval_ms / 1000
        with self._lock:
            self._entries[trade.signal.id] = _Entry(trade, now, delay, now)
        logger.warning("trade {}: {} not final; resolving on leg-resolver", trade.signal.id,
                       ", ".join(f"{l.client_id} {l.state.value}" for l in trade.orders if not l.final))
        self._wake.set()

    def pending(self) -> list:
        with self._lock:
            return [e.trade for e in self._entries.values()]

    # --- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()  # before picking: an add or stop from now on cuts the wait short
            with self._lock:
                entry = min(self._entries.values(), key=lambda e: e.due_ns, default=None)
            if entry is None:
                self._wake.wait()
                continue
            wait_s = (entry.due_ns - self.clock.monotonic_ns()) / NS_PER_S
            if wait_s > 0:
                self.pause(wait_s)
                continue  # re-pick: a new trade may be due sooner, or we are stopping
            try:
                self._step(entry)
            except Exception:  # a bug must not kill the thread that owns possible exposure
                logger.exception("resolving trade {} raised", entry.trade.signal.id)
                self._schedule(entry)

    def _step(self, entry: _Entry) -> None:
        trade = entry.trade
        now = self.clock.monotonic_ns()
        elapsed_s = (now - entry.since_ns) / NS_PER_S
        for leg in trade.orders:
            if not leg.final:
                self._look(trade, leg, elapsed_s)
        if all(leg.final for leg in trade.orders):
            self._drop(trade)
            logger.warning("trade {}: every order final after {:.1f} s", trade.signal.id, elapsed_s)
            self.on_resolved(trade)
        elif elapsed_s >= self.config.resolve_timeout_s:
            self._drop(trade)
            self.on_give_up(trade)
        else:
            self._schedule(entry)

    def _schedule(self, entry: _Entry) -> None:
        if self._hurry:
            entry.delay_s = self.config.poll_interval_ms / 1000
        entry.due_ns = self.clock.monotonic_ns() + int(entry.delay_s * NS_PER_S)
        entry.delay_s = min(entry.delay_s * 2, MAX_BACKOFF_S)

    def _drop(self, trade) -> None:
        with self._lock:
            self._entries.pop(trade.signal.id, None)

    def _look(self, trade, leg: Leg, elapsed_s: float) -> None:
        # one look-up (and a cancel if it is resting); never a new order
        signal_id = trade.signal.id
        client = self.clients[leg.request.venue]
        before = _progress(leg)
        try:
            result = client.get_order(order_id=leg.order_id) if leg.order_id else \
                client.get_order(client_id=leg.client_id)
            self.placer.apply(signal_id, leg, result)
            if not leg.final:
                client.cancel_order(order_id=leg.order_id,
                                    client_id=None if leg.order_id else leg.client_id)
                self.placer.apply(signal_id, leg, client.get_order(order_id=leg.order_id)
                                  if leg.order_id else client.get_order(client_id=leg.client_id))
        except OrderNotFound:
            if leg.state in _NEVER_SEEN and elapsed_s >= self.config.not_found_window_s:
                leg.reject(f"not found at the venue for {elapsed_s:.0f} s: never placed",
                           self.clock.monotonic_ns())
                self.journal.record_incident(
                    "leg_presumed_unplaced", f"{leg.role} {leg.client_id} on "
                    f"{leg.request.venue.value}: not found for {elapsed_s:.0f} s", signal_id,
                    "critical")
            else:
                leg.error = f"not found by client id after {elapsed_s:.1f} s"
        except Exception as exc:  # VenueError or a transport surprise: look again later
            leg.error = f"resolving: {type(exc).__name__}: {exc}"
            logger.warning("resolving {} failed: {}", leg.client_id, exc)
        if _progress(leg) != before:
            self.on_progress(trade, leg, before)
            self.journal.record_order(signal_id, leg)
            if leg.fills:
                self.journal.record_fills(leg)


def _progress(leg: Leg) -> tuple:
    # what ``on_progress`` gets as ``before``: state, executed volume, funds, fee, and how many
    # fills were known (a venue's fills are cumulative: the new ones are ``fills[n:]``)
    return leg.state, leg.executed_volume, leg.executed_funds, leg.paid_fee, len(leg.fills)
