"""Send one leg to its venue and follow it to a final state, never sending it twice.

``Placer.run`` is called on a leg thread. The rules, by outcome of ``place_order``:

* an answer: apply it, then follow the leg until it is final or ``fill_timeout_s`` passes;
  then ask for a cancel and look once more (REST). Following uses the venue's private order
  stream first (``karb.order_stream``) when it is up: the leg thread waits for the order's
  next event instead of sleeping, applies what the stream says once its executions add up,
  and asks REST ``get_order`` when no event came within ``stream_fallback_ms``, when the
  stream's account of the order is incomplete, or when the stream went down or reconnected
  meanwhile. Without a stream (or while it is down) it polls ``get_order``, doubling from
  ``poll_interval_ms``. A stream event older than what the leg knows is skipped, never
  applied (executed amounts only grow; a final leg stays final);
* ``InvalidOrder`` / ``InsufficientFunds`` / ``RateLimited`` / ``VenueUnavailable`` /
  ``AuthError`` / a 4xx ``UnknownVenueError``: the venue says it was not placed: REJECTED;
* ``OrderStateUnknown``, a 5xx or status-less ``UnknownVenueError``, or any other exception:
  the order may exist. The leg goes UNKNOWN and is looked up by its client id up to
  ``lookup_attempts`` times (the private stream's account of that client id, when it has a
  complete one, answers before REST is asked; the stream's silence is never taken as "not
  placed"). It is never re-sent; if it cannot be found it stays UNKNOWN, an
  incident is journalled, and the executor's ``leg-resolver`` keeps looking (``karb.resolver``).

A leg not final when ``run`` returns may still fill: nothing may be retried or flattened
against it until it is resolved.

Sending: a client with a lean path (``prepare_order``, ``karb.exchanges.wire``) first prepares
the order (slot taken, signed, serialised, connection open; nothing written). The executor
prepares a trade's legs on the submitting thread when that needs no waiting and writes them
there, back to back, once the intent is committed, handing them over written; the others are
prepared here and a trade's ``LegPair`` releases them together: the second leg ready writes
both requests back to back from its own thread, so no thread wake-up, signing or logging sits
between the two writes. A client without a lean path (the backtest's, a proxied one, Bithumb
legacy) is sent with ``place_order``. Either way the outcome rules above are the same:
preparation fails only before anything was written.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from loguru import logger

from karb.clock import NS_PER_S, Clock
from karb.config import ExecutionConfig
from karb.exchanges.base import VenueClient
from karb.exchanges.errors import (AuthError, InsufficientFunds, InvalidOrder, OrderNotFound,
                                   RateLimited, UnknownVenueError, VenueError, VenueUnavailable)
from karb.journal import Journal
from karb.legs import IllegalTransition, Leg, LegState
from karb.model import OrderResult, OrderStatus, Venue
from karb.order_stream import OrderStreams

NOT_PLACED = (InvalidOrder, InsufficientFunds, RateLimited, VenueUnavailable, AuthError)
PAIR_WAIT_S = 0.005  # a prepared leg waits this long at most for the other leg to be ready


class LegPair:
    """Releases a trade's legs together. Each leg's thread arrives once, with its prepared
    order or None; the last to arrive writes every prepared order, in arrival order, back to
    back. A leg that arrives with a prepared order waits at most ``wait_s`` for the others and
    then writes its own; one with none (no lean path, or preparing it failed) never waits, so a
    runner that runs the legs one after the other (the backtest's) is never held."""

    def __init__(self, legs: int = 2, wait_s: float | None = None):
        self._lock = threading.Lock()
        self._left = legs
        self._prepared: list = []
        self._released = threading.Event()
        self._wait_s = PAIR_WAIT_S if wait_s is None else wait_s

    def arrive(self, prepared) -> None:
        with self._lock:
            if prepared is not None:
                self._prepared.append(prepared)
            self._left -= 1
            last = self._left == 0
        if last:
            for ready in self._prepared:
                ready.write()  # a no-op for one its own thread wrote after waiting
            self._released.set()
        elif prepared is not None:
            self._released.wait(self._wait_s)


class Placer:
    def __init__(self, clients: dict[Venue, VenueClient], journal: Journal,
                 config: ExecutionConfig, clock: Clock,
                 pause: Callable[[float], None] = time.sleep, streams: OrderStreams | None = None):
        self.clients = clients
        self.streams = streams
        self.journal = journal
        self.config = config
        self.clock = clock
        self.pause = pause  # injectable so tests of the polling need no real waiting
        self.lookups = 0
        self.stream_applied = self.rest_refreshes = 0

    def run(self, signal_id: str, leg: Leg, priority: bool = False,
            pair: LegPair | None = None, prepared=None) -> Leg:
        """Send ``leg`` (state NEW), released with the rest of its ``pair`` if given, follow
        it, journal it; return it. Leg thread only. A leg the executor already prepared and
        marked sent comes with its ``prepared`` order (written, or written here)."""
        client = self.clients[leg.request.venue]
        if leg.state is LegState.NEW:
            leg.mark_sent(self.clock.monotonic_ns())
        result = self._place(client, leg, priority, pair, prepared)
        if result is None and leg.state is LegState.UNKNOWN:
            result = self._lookup(client, leg)
        if result is not None:
            self.apply(signal_id, leg, result)
            self._follow(signal_id, client, leg)
            self._add_stream_fills(leg)
        self.journal.record_order(signal_id, leg)
        if leg.fills:
            self.journal.record_fills(leg)
        if leg.state is LegState.UNKNOWN:
            self.journal.record_incident(
                "leg_unknown", f"{leg.role} {leg.client_id} on {leg.request.venue.value}: "
                f"{leg.error}; not re-sent, still looking", signal_id, "critical")
        elif not leg.final:
            self.journal.record_incident(
                "leg_not_final", f"{leg.role} {leg.client_id} still {leg.state.value} after "
                f"{self.config.fill_timeout_s} s and a cancel; still looking", signal_id, "critical")
        return leg

    def _place(self, client: VenueClient, leg: Leg, priority: bool, pair: LegPair | None,
               prepared) -> OrderResult | None:
        try:
            if prepared is None:
                prepared = self._prepare(client, leg, priority, pair)
            if prepared is None:
                return client.place_order(leg.request, priority=priority)
            try:
                return prepared.send()
            finally:
                leg.wire_ns = prepared.wire_ns
                prepared.close()
        except NOT_PLACED as exc:
            self._reject(leg, exc)
        except UnknownVenueError as exc:
            if 400 <= exc.status < 500:
                self._reject(leg, exc)
            else:
                self._unknown(leg, exc)
        except VenueError as exc:  # OrderStateUnknown, or anything not saying "not placed"
            self._unknown(leg, exc)
        except Exception as exc:  # a bug or a transport surprise: the order may exist
            logger.exception("placing {} raised unexpectedly", leg.client_id)
            self._unknown(leg, exc)
        return None

    @staticmethod
    def _prepare(client: VenueClient, leg: Leg, priority: bool, pair: LegPair | None):
        # the lean path's prepared order, or None (then ``place_order``); the pair hears of
        # this leg whatever happens, so a failed preparation never holds the other leg
        prepared = None
        prepare = getattr(client, "prepare_order", None)
        try:
            if prepare is not None:
                prepared = prepare(leg.request, priority=priority)
        finally:
            if pair is not None:
                pair.arrive(prepared)
        return prepared

    def _reject(self, leg: Leg, exc: Exception) -> None:
        leg.reject(f"{type(exc).__name__}: {exc}", self.clock.monotonic_ns())
        logger.warning("{} leg {} rejected: {}", leg.role, leg.client_id, exc)

    def _unknown(self, leg: Leg, exc: Exception) -> None:
        leg.error = f"{type(exc).__name__}: {exc}"
        leg.transition(LegState.UNKNOWN, self.clock.monotonic_ns())
        logger.warning("{} leg {} state unknown ({}); looking it up by client id",
                       leg.role, leg.client_id, exc)

    def _lookup(self, client: VenueClient, leg: Leg) -> OrderResult | None:
        delay = self.config.poll_interval_ms / 1000
        for attempt in range(self.config.lookup_attempts):
            found = self._stream_account(leg)  # the stream's word that it exists, if it has one
            if found is not None:
                return found
            self.lookups += 1
            try:
                return client.get_order(client_id=leg.client_id)
            except OrderNotFound:
                leg.error = f"not found by client id after {attempt + 1} lookups"
            except Exception as exc:  # keep looking; never fall back to sending again
                leg.error = f"lookup failed: {type(exc).__name__}: {exc}"
            if attempt + 1 < self.config.lookup_attempts:
                self.pause(delay)
                delay *= 2
        return None

    def _follow(self, signal_id: str, client: VenueClient, leg: Leg) -> None:
        deadline = self.clock.monotonic_ns() + int(self.config.fill_timeout_s * NS_PER_S)
        delay = self.config.poll_interval_ms / 1000
        venue = leg.request.venue
        streams = self.streams if self.streams is not None and venue in self.streams.venues else None
        mark = streams.mark(venue, leg.order_id, leg.client_id) if streams else (0, 0)
        if streams is not None and streams.is_up(venue):  # events that came before the REST answer
            if not self._from_stream(signal_id, leg) and streams.seen(venue, leg.order_id, leg.client_id):
                self._refresh(signal_id, client, leg)  # the stream's account is incomplete: ask now
        while not leg.final and self.clock.monotonic_ns() < deadline:
            if streams is not None and streams.is_up(venue):
                left_s = (deadline - self.clock.monotonic_ns()) / NS_PER_S
                wait_s = max(0.0, min(self.config.stream_fallback_ms / 1000, left_s))
                news = streams.wait(venue, leg.order_id, leg.client_id, mark, wait_s)
                mark = streams.mark(venue, leg.order_id, leg.client_id)
                if news and self._from_stream(signal_id, leg):
                    continue
                if not news and self.clock.monotonic_ns() >= deadline:
                    break  # the cancel and last look below ask REST
            else:
                self.pause(delay)
                delay = min(delay * 2, 0.5)
            self._refresh(signal_id, client, leg)
        if not leg.final:
            try:
                client.cancel_order(order_id=leg.order_id, client_id=None if leg.order_id else leg.client_id)
            except VenueError as exc:
                logger.warning("cancelling {} failed: {}", leg.client_id, exc)
            self._refresh(signal_id, client, leg)

    def _stream_account(self, leg: Leg) -> OrderResult | None:
        """The private stream's complete account of ``leg``'s order by its client id, or None.
        Only ever evidence that the order exists: its absence proves nothing."""
        streams = self.streams
        if streams is None or leg.request.venue not in streams.venues:
            return None
        result = streams.result(leg.request.venue, leg.order_id, leg.client_id, leg.request.order_type)
        return result if result is not None and result.client_id == leg.client_id else None

    def _add_stream_fills(self, leg: Leg) -> None:
        """A leg final from an answer that listed no executions (Upbit's placement answer)
        takes them from the stream, if it already has the same final account; its state and
        amounts stay exactly as the venue answered."""
        if not leg.final or not leg.executed_volume or leg.fills:
            return
        found = self._stream_account(leg)
        if (found is not None and found.status is not OrderStatus.OPEN
                and (found.executed_volume, found.executed_funds) == (leg.executed_volume, leg.executed_funds)):
            leg.fills = found.fills

    def _from_stream(self, signal_id: str, leg: Leg) -> bool:
        """Apply the stream's complete account of ``leg`` if it says more than the leg knows.
        Return False when the stream has nothing usable (the caller asks REST)."""
        assert self.streams is not None
        result = self.streams.result(leg.request.venue, leg.order_id, leg.client_id,
                                     leg.request.order_type)
        if result is None or (leg.client_id and result.client_id not in (None, leg.client_id)):
            return False
        if leg.final or result.executed_volume < leg.executed_volume:
            self.streams.stale += 1
            return True  # stale: the leg already knows more; nothing to do
        self.stream_applied += 1
        self.apply(signal_id, leg, result)
        return True

    def _refresh(self, signal_id: str, client: VenueClient, leg: Leg) -> None:
        self.rest_refreshes += 1
        try:
            result = client.get_order(order_id=leg.order_id) if leg.order_id else \
                client.get_order(client_id=leg.client_id)
        except VenueError as exc:
            logger.warning("polling {} failed: {}", leg.client_id, exc)
            return
        self.apply(signal_id, leg, result)

    def apply(self, signal_id: str, leg: Leg, result: OrderResult) -> None:
        """Apply a venue answer to ``leg``; an illegal transition is journalled, not raised."""
        try:
            leg.apply(result, self.clock.monotonic_ns())
        except IllegalTransition as exc:
            self.journal.record_incident("illegal_transition", str(exc), signal_id, "critical")
            logger.error("{}", exc)
