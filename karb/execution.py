"""Two-leg executor: reserve, journal the intent, fire both legs at once, unwind, book.

``submit(signal)`` runs on the strategy thread and returns at once: risk approves and reserves
both legs' worst-case spend, the intent (both legs, sizes, prices, client ids) is committed to
the journal, and the two legs go to two idle threads of a pre-started pool (``leg-0``,
``leg-1``, ...), which send them at the same moment. With lean clients
(``karb.exchanges.wire``) both orders are prepared on the submitting thread before the intent
is committed (slot, signature, bytes; nothing written) and written by it back to back once it
is, so no thread hand-off sits between the signal and the wire; when that would mean waiting
(no free slot, no warm connection) the leg threads prepare them and release them together
(``karb.placement.LegPair``). (The pool is the default ``LegRunner``; a
backtest injects one that runs the legs on its own thread in simulated time, after the intent
is journalled all the same, with the placer's ``pause`` advancing simulated time.) Each leg thread follows its order to a
final state (``karb.placement``) and books its fill in the ledger; the thread that finishes
second completes the trade: the unwind policy if the fills differ (``karb.unwind``), then
``risk.finish`` (exact realised PnL, circuit breaker, halts) and the journal's result row. A
trade's reservation is released on every path, exceptions included.

An order that is not final (answer lost, polls failing) may still fill: the trade is then
neither unwound nor booked but handed to the ``leg-resolver`` thread (``karb.resolver``), and
stays in flight (reservation held, exposure counted by risk) until every order is final; then
the unwind decision runs with the true fills. If resolution gives up, trading halts with the
trade's exposure still counted and its ledger holds kept (stranded: balance sync still adopts
venue balances), and the trade counts as a circuit-breaker failure. ``stop`` waits (bounded) for trades, unwinds and resolutions,
and journals whatever may still fill (``unresolved()``) for the next start to reconcile.

Success is judged by value: both legs complete and the matched volume within
``residual_tolerance_krw`` of the signal's (a market buy spends funds, so it rarely buys the
exact volume; its dust is booked as residual).

On start, ``karb.recovery`` closes out what a previous run left open (orders looked up, trades
finished or unwound, resting orders swept) before any signal is taken; when the kill switch
engages, every open order on the traded markets is cancelled.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from decimal import ROUND_FLOOR, Decimal
from typing import Callable, Protocol

from loguru import logger

from karb import recovery
from karb.clock import Clock
from karb.config import Config
from karb.exchanges.base import VenueClient
from karb.exchanges.errors import VenueError
from karb.journal import Journal, JournalError
from karb.ledger import Reservation
from karb.legs import Leg, LegState
from karb.model import OrderRequest, OrderType, Side, Signal, TimeInForce, Venue
from karb.order_stream import OrderStreams
from karb.placement import LegPair, Placer
from karb.resolver import LegResolver
from karb.risk import Risk, TradeOutcome
from karb.rules import RulesBook
from karb.unwind import Unwinder, filled

# signal_to_sent: the later leg began to be placed; signal_to_wire: the later leg's request
# was wholly handed to its socket (lean clients only)
STAGES = ("frame_to_signal", "signal_to_sent", "signal_to_wire", "frame_to_sent", "sent_to_acked")
_STOP = object()


class LegRunner(Protocol):
    """Where the executor runs a trade's two legs: live, the ``LegPool`` of threads; in a
    backtest, the driver's own thread (``karb.backtest.runner.InlineRunner``)."""

    workers: int

    def start(self) -> None: ...
    def stop(self, timeout: float) -> None: ...
    def claim(self, n: int) -> bool: ...
    def release(self, n: int) -> None: ...
    def submit(self, fn: Callable, *args) -> None: ...
    def wait_all_idle(self, timeout: float) -> bool: ...
    def run_on_each(self, fn: Callable[[], None], timeout: float) -> bool: ...


class LegPool:
    """Pre-started worker threads named ``leg-0``..``leg-N``; ``idle`` counts free workers."""

    def __init__(self, workers: int):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._all_idle = threading.Condition(self._lock)
        self.workers = workers
        self.idle = workers
        self._threads = [threading.Thread(target=self._run, name=f"leg-{i}", daemon=True)
                         for i in range(workers)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def claim(self, n: int) -> bool:
        """Reserve ``n`` idle workers for tasks about to be submitted."""
        with self._lock:
            if self.idle < n:
                return False
            self.idle -= n
            return True

    def release(self, n: int) -> None:
        """Give back ``n`` claimed workers that will not get a task."""
        with self._lock:
            self.idle += n
            self._all_idle.notify_all()

    def wait_all_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._all_idle.wait_for(lambda: self.idle == self.workers, timeout)

    def submit(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` on a worker claimed with ``claim``."""
        self._queue.put((fn, args))

    def run_on_each(self, fn: Callable[[], None], timeout: float) -> bool:
        """Run ``fn()`` once on every worker (a barrier keeps one worker from taking two);
        return True if all finished within ``timeout``. Call while no trade is in flight."""
        if not self.claim(self.workers):
            return False
        barrier = threading.Barrier(self.workers + 1)

        def task() -> None:
            try:
                fn()
            finally:
                try:
                    barrier.wait(timeout)
                except threading.BrokenBarrierError:
                    pass

        for _ in range(self.workers):
            self.submit(task)
        try:
            barrier.wait(timeout)
        except threading.BrokenBarrierError:
            return False
        return self.wait_all_idle(timeout)

    def stop(self, timeout: float) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        for t in self._threads:
            t.join(timeout)
            if t.is_alive():
                logger.warning("{} did not stop within {} s", t.name, timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:
                logger.exception("leg task failed")
            finally:
                with self._lock:
                    self.idle += 1
                    self._all_idle.notify_all()


class Trade:
    """One signal in flight: its reservation, two legs and, later, its unwind orders."""

    def __init__(self, signal: Signal, reservation: Reservation, buy: Leg, sell: Leg,
                 submit_ns: int):
        self.signal = signal
        self.reservation = reservation
        self.buy = buy
        self.sell = sell
        self.unwinds: list[Leg] = []
        self.submit_ns = submit_ns
        self._pending = 2
        self._lock = threading.Lock()

    def leg_done(self) -> bool:
        """Return True for the caller that finished the last leg."""
        with self._lock:
            self._pending -= 1
            return self._pending == 0

    @property
    def orders(self) -> list[Leg]:
        return [self.buy, self.sell, *self.unwinds]


class Executor:
    def __init__(self, clients: dict[Venue, VenueClient], rules: RulesBook, risk: Risk,
                 journal: Journal, config: Config, clock: Clock, streams: OrderStreams | None = None,
                 runner: LegRunner | None = None, pause: Callable[[float], None] | None = None):
        # ``runner`` and ``pause`` (the placer's wait between polls) are injected by the
        # backtest, which runs legs on its own thread in simulated time; live uses the pool.
        self.clients = clients
        self.rules = rules
        self.risk = risk
        self.journal = journal
        self.config = config
        self.settings = config.execution
        self.clock = clock
        self.placer = Placer(clients, journal, self.settings, clock, streams=streams,
                             pause=pause or time.sleep)
        self.unwinder = Unwinder(self.placer, rules, risk.ledger, journal, config, halt=risk.halt)
        self.resolver = LegResolver(clients, self.placer, journal, self.settings, clock,
                                    on_progress=self._book_progress, on_resolved=self._complete,
                                    on_give_up=self._give_up)
        self.pool: LegRunner = runner or LegPool(self.settings.workers)
        self.label = "[DryRun] " if all(getattr(c, "dry_run", False) for c in clients.values()) else ""
        self._listeners: list[Callable[[Trade], None]] = []
        self._running = False
        self._lock = threading.Lock()
        self._in_flight: dict[str, Trade] = {}
        self._stranded: dict[str, Trade] = {}  # resolution gave up: exposure, trading halted
        self._idle = threading.Condition(self._lock)
        self._latency: dict[str, deque] = {s: deque(maxlen=2048) for s in STAGES}
        self.trades = self.successes = self.failures = self.refused = 0
        self.reconciled = 0
        self._reconciled = False
        self._stop_keepalive = threading.Event()
        self._keepalive = threading.Thread(target=self._keep_warm, name="leg-keepalive", daemon=True)
        risk.kill.add_listener(self._on_kill)

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Reconcile what the journal left open (unless done already, or dry-run: dry-run
        venues cannot know real orders), then start the leg threads."""
        if not self.label and not self._reconciled:
            self.reconcile()
        self.pool.start()
        self.resolver.start()
        if not self.label and not self.pool.run_on_each(self._warm_sessions, timeout=10.0):
            logger.warning("leg threads' venue connections not all warm after 10 s")
        self._running = True
        if not self.label and self.settings.keepalive_s > 0:
            self._keepalive.start()

    def _keep_warm(self) -> None:
        # Thread ``leg-keepalive``: re-warm the leg threads' connections while no trade is in
        # flight. ``run_on_each`` claims every worker or none, so it never delays a trade; a
        # signal arriving during the few ms it runs is refused like any busy moment.
        while not self._stop_keepalive.wait(self.settings.keepalive_s):
            if self._running and not self._in_flight:
                self.pool.run_on_each(self._warm_sessions, timeout=10.0)

    def stop(self, timeout: float = 10.0) -> None:
        """Take no new signals; let trades in flight, their unwinds and the resolution of
        orders that may still fill finish (bounded by ``timeout``); journal and log whatever
        is left (``unresolved()``) so the next start reconciles it; stop the threads."""
        self._running = False
        self._stop_keepalive.set()
        if self._keepalive.is_alive():
            self._keepalive.join(timeout)
        self.resolver.hurry()
        with self._idle:
            self._idle.wait_for(lambda: not self._in_flight, timeout)
            left = list(self._in_flight.values())
        if left or self._stranded:
            self._report_left(left)
        self.resolver.stop(timeout)
        self.pool.stop(timeout)

    def _report_left(self, trades: list[Trade]) -> None:
        # the journal must say what may still fill before the engine stops it
        for trade in trades:
            sid = trade.signal.id
            legs = [leg for leg in trade.orders if not leg.final]
            for leg in legs:
                self.journal.record_order(sid, leg)
            detail = (f"stopped with trade {sid} not booked; " + (
                "orders that may still fill: " + ", ".join(
                    f"{l.client_id} on {l.request.venue.value} ({l.state.value})" for l in legs)
                if legs else "every order final, unwind or booking unfinished"))
            self.journal.record_incident("shutdown_unresolved", detail, sid, "critical")
            logger.critical("{}", detail)
        for sid, client_id, venue, state in self.unresolved():
            if sid in self._stranded:
                logger.critical("stopped with {} on {} ({}) unresolved since before: trading "
                                "was halted for it", client_id, venue, state)
        try:
            self.journal.flush(timeout=2.0)
        except JournalError as exc:
            logger.critical("journal did not commit what was left in flight: {}", exc)

    def _warm_sessions(self) -> None:
        # Each leg thread has its own HTTP session (one per thread): open its keep-alive
        # connection to both venues now, and keep the venues' pooled lean order connections
        # open (``warm_orders``), so the first real order pays no TCP/TLS handshake.
        for venue, client in self.clients.items():
            try:
                client.get_ticker(self.config.markets[:1])
                warm_orders = getattr(client, "warm_orders", None)
                if warm_orders is not None:
                    warm_orders(self.config.markets[:1])
            except VenueError as exc:
                logger.warning("warming {} connection on {} failed: {}", venue.value,
                               threading.current_thread().name, exc)

    def add_listener(self, listener: Callable[[Trade], None]) -> None:
        """``listener(trade)`` runs on a leg thread after each trade is booked."""
        self._listeners.append(listener)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no trade is in flight and every leg thread is free again."""
        deadline = time.monotonic() + timeout
        with self._idle:
            if not self._idle.wait_for(lambda: not self._in_flight, timeout):
                return False
        return self.pool.wait_all_idle(max(0.0, deadline - time.monotonic()))

    # --- the hot path -------------------------------------------------------------------
    def submit(self, signal: Signal) -> str | None:
        """Start a trade for ``signal``; return None, or why it was not started."""
        submit_ns = self.clock.monotonic_ns()
        if not self._running:
            return "executor not running"
        if not self.pool.claim(2):
            self.refused += 1
            return "no two idle leg threads"
        reservation = self.risk.approve(signal)
        if isinstance(reservation, str):
            self.pool.release(2)
            self.refused += 1
            return reservation
        trade = Trade(signal, reservation, *self._legs(signal), submit_ns)
        early = self._prepare_here(trade)
        stages = {"recv_ns": max(signal.book_recv_ns), "submit_ns": submit_ns}
        try:
            self.journal.record_intent(signal, (trade.buy, trade.sell), stages)
        except JournalError as exc:
            for prepared in early.values():
                prepared.close()  # never written
            self.risk.abandon(signal, reservation)
            self.pool.release(2)
            self.refused += 1
            logger.error("{}not trading {}: intent not journalled ({})", self.label, signal.id, exc)
            return f"journal: {exc}"
        with self._lock:
            self._in_flight[signal.id] = trade
        if early:  # committed: write what is prepared, back to back, before any hand-off
            sent_ns = self.clock.monotonic_ns()
            for leg in early:
                leg.mark_sent(sent_ns)
            for prepared in early.values():
                prepared.write()
        # legs not prepared here are prepared on their threads and released together
        pair = LegPair() if not early else None
        for leg in (trade.buy, trade.sell):
            self.pool.submit(self._run_leg, trade, leg, pair, early.get(leg))
        return None

    def _prepare_here(self, trade: Trade) -> dict:
        """Both legs' orders prepared on this (the submitting) thread, or none: only with
        lean clients, and only when neither needs to wait for a slot or a connection (nothing
        is written; a leg not prepared here is prepared on its leg thread, any error then
        handled there as for any placement)."""
        early = {}
        for leg in (trade.buy, trade.sell):
            prepare = getattr(self.clients[leg.request.venue], "prepare_order", None)
            prepared = None
            if prepare is not None:
                try:
                    prepared = prepare(leg.request, wait=False)
                except Exception:  # nothing was written: its leg thread prepares it again
                    prepared = None
            if prepared is None:
                for other in early.values():
                    other.close()
                return {}
            early[leg] = prepared
        return early

    def _legs(self, signal: Signal) -> tuple[Leg, Leg]:
        market, vol = signal.market, signal.volume
        if self.settings.leg_type == "market":
            funds = (vol * signal.buy_price).quantize(Decimal(1), rounding=ROUND_FLOOR)
            buy = OrderRequest(signal.buy_venue, market, Side.BUY, OrderType.MARKET_BUY,
                               f"{signal.id}b", funds=funds)
            sell = OrderRequest(signal.sell_venue, market, Side.SELL, OrderType.MARKET_SELL,
                                f"{signal.id}s", volume=vol)
        else:
            buy = OrderRequest(signal.buy_venue, market, Side.BUY, OrderType.LIMIT, f"{signal.id}b",
                               price=signal.buy_price, volume=vol, tif=TimeInForce.IOC)
            sell = OrderRequest(signal.sell_venue, market, Side.SELL, OrderType.LIMIT,
                                f"{signal.id}s", price=signal.sell_price, volume=vol,
                                tif=TimeInForce.IOC)
        return Leg("buy", buy), Leg("sell", sell)

    # --- leg threads --------------------------------------------------------------------
    def _run_leg(self, trade: Trade, leg: Leg, pair: LegPair | None = None,
                 prepared=None) -> None:
        try:
            self.placer.run(trade.signal.id, leg, pair=pair, prepared=prepared)
            if leg.executed_volume:
                self.risk.ledger.apply_fill(trade.reservation, leg.request.venue, leg.request.market,
                                            leg.request.side, leg.executed_volume,
                                            leg.executed_funds, leg.paid_fee, fills=leg.fills)
            if leg.state is not LegState.FILLED:
                self.journal.record_incident(
                    f"leg_{leg.state.value}",
                    f"{leg.role} {leg.client_id} on {leg.request.venue.value}: filled "
                    f"{leg.executed_volume} of {leg.request.volume} {leg.error}".rstrip(),
                    trade.signal.id, "warning")
        finally:
            if trade.leg_done():
                self._complete(trade)

    def _complete(self, trade: Trade) -> None:
        # a leg thread (or the leg-resolver) with every order of the trade settled, or not
        signal = trade.signal
        try:
            if all(leg.final for leg in trade.orders):
                orders = trade.orders
                if filled(orders, Side.BUY)[0] != filled(orders, Side.SELL)[0]:
                    trade.unwinds = self.unwinder.run(signal, trade.reservation, trade.buy,
                                                      trade.sell, trade.unwinds)
        except Exception:
            logger.exception("unwind of {} failed", signal.id)
            self.journal.record_incident("unwind_error", "unwind raised; see log", signal.id, "critical")
        if not all(leg.final for leg in trade.orders):
            self.resolver.add(trade)  # possible exposure: in flight until the venue answers
            return
        self._book(trade)

    def _book_progress(self, trade: Trade, leg: Leg, before: tuple) -> None:
        # leg-resolver: the venue told us more about ``leg``; book the fill it adds, with only
        # the new fills (a legacy Bithumb coin fee among them is booked off the coin)
        _, volume, funds, fee, n_fills = before
        if (leg.executed_volume, leg.executed_funds, leg.paid_fee) != (volume, funds, fee):
            self.risk.ledger.apply_fill(trade.reservation, leg.request.venue, leg.request.market,
                                        leg.request.side, leg.executed_volume - volume,
                                        leg.executed_funds - funds, leg.paid_fee - fee,
                                        fills=leg.fills[n_fills:])

    def _give_up(self, trade: Trade) -> None:
        # leg-resolver: bounded look-ups did not settle it; a human must look. Its exposure
        # stays in risk's in-flight count and its holds stay in the ledger (no other trade may
        # spend the coin it bought or what its open order may have sold), but the reservation
        # is stranded: nothing books fills against it any more, so balance sync may adopt the
        # venue's balances again. It counts as a failed trade for the breaker (if it was the
        # half-open probe, the breaker reopens instead of waiting for it forever).
        sid = trade.signal.id
        legs = [leg for leg in trade.orders if not leg.final]
        self.risk.ledger.strand(trade.reservation)
        self.risk.circuit.record_failure(sid)
        with self._lock:
            self._in_flight.pop(sid, None)
            self._stranded[sid] = trade
            self._idle.notify_all()
        for leg in legs:
            self.journal.record_order(sid, leg)
        names = ", ".join(f"{l.client_id} on {l.request.venue.value} ({l.state.value})" for l in legs)
        detail = (f"{names} not final after {self.settings.resolve_timeout_s:g} s of look-ups; "
                  f"its exposure stays counted; check the venue, reconcile, then resume")
        self.journal.record_incident("leg_unresolved", detail, sid, "critical")
        logger.critical("trade {} leg_unresolved: {}", sid, detail)
        self.risk.halt(f"unresolved order {names}")

    def _book(self, trade: Trade) -> None:
        signal = trade.signal
        success_counted = False
        try:
            orders = trade.orders
            bought, buy_funds, buy_fees = filled(orders, Side.BUY)
            sold, sell_funds, sell_fees = filled(orders, Side.SELL)
            success = self._succeeded(trade)
            outcome = TradeOutcome(signal.market, success, bought, buy_funds, sold, sell_funds,
                                   buy_fees + sell_fees, signal.buy_price,
                                   clean=all(leg.ended_normally for leg in orders))
            realised = self.risk.finish(signal, trade.reservation, outcome)
            done_ns = self.clock.monotonic_ns()
            status = outcome.status
            self.journal.record_result(signal.id, status, self._stages(trade, done_ns), realised,
                                       outcome.fees, outcome.residual, self._summary(trade))
            log = logger.info if success else logger.warning
            log("{}Trade {} {} {}: {}; realised {:,.2f} KRW (fees {:,.2f})", self.label,
                signal.id, signal.direction, signal.market, self._summary(trade), realised,
                outcome.fees)
            for listener in list(self._listeners):
                try:
                    listener(trade)
                except Exception:
                    logger.exception("trade listener failed")
            success_counted = success
        finally:
            if not trade.reservation.released:  # booking itself failed: never leak the hold
                logger.error("trade {} could not be booked; releasing its reservation", signal.id)
                self.risk.abandon(signal, trade.reservation)
            with self._lock:  # last: wait_idle() returning means the trade is fully booked
                self.trades += 1
                if success_counted:
                    self.successes += 1
                else:
                    self.failures += 1
                self._in_flight.pop(signal.id, None)
                self._idle.notify_all()

    def _succeeded(self, trade: Trade) -> bool:
        # by value: both legs complete, their volumes matched to within the residual tolerance
        signal, tolerance = trade.signal, self.settings.residual_tolerance_krw
        bought, sold = trade.buy.executed_volume, trade.sell.executed_volume
        return (self._complete_leg(trade.buy) and self._complete_leg(trade.sell)
                and abs(bought - sold) * signal.buy_price <= tolerance
                and (signal.volume - min(bought, sold)) * signal.buy_price <= tolerance)

    def _complete_leg(self, leg: Leg) -> bool:
        # a market buy ends CANCELLED when its funds are all but spent (Upbit keeps the dust)
        if leg.state is LegState.FILLED:
            return True
        req = leg.request
        return (req.order_type is OrderType.MARKET_BUY and leg.state is LegState.CANCELLED
                and leg.executed_volume > 0
                and req.funds - leg.executed_funds <= self.settings.residual_tolerance_krw)

    @staticmethod
    def _summary(trade: Trade) -> str:
        return ", ".join(f"{leg.role} {leg.request.venue.value} {leg.state.value} "
                         f"{leg.executed_volume}" for leg in trade.orders)

    def _stages(self, trade: Trade, done_ns: int) -> dict[str, int]:
        signal = trade.signal
        recv = max(signal.book_recv_ns)
        sent = max(trade.buy.sent_ns, trade.sell.sent_ns)
        acked = max(trade.buy.acked_ns, trade.sell.acked_ns)
        with self._lock:
            if recv and signal.on_update:
                self._latency["frame_to_signal"].append(signal.created_ns - recv)
                self._latency["frame_to_sent"].append(sent - recv)
            self._latency["signal_to_sent"].append(sent - signal.created_ns)
            if trade.buy.wire_ns and trade.sell.wire_ns:
                wire = max(trade.buy.wire_ns, trade.sell.wire_ns)
                self._latency["signal_to_wire"].append(wire - signal.created_ns)
            if trade.buy.acked_ns and trade.sell.acked_ns:
                self._latency["sent_to_acked"].append(acked - sent)
        return {"sent_ns": sent, "acked_ns": acked or None, "done_ns": done_ns}

    # --- reporting ----------------------------------------------------------------------
    def unresolved(self) -> list[tuple[str, str, str, str]]:
        """(signal id, client id, venue, state) of every order that may still fill: trades
        in flight (sending, resolving, unwinding) and those whose resolution gave up."""
        with self._lock:
            trades = list(self._in_flight.values()) + list(self._stranded.values())
        return self._open_legs(trades)

    @staticmethod
    def _open_legs(trades: list[Trade]) -> list[tuple[str, str, str, str]]:
        return [(t.signal.id, leg.client_id, leg.request.venue.value, leg.state.value)
                for t in trades for leg in t.orders if not leg.final]

    def stats(self) -> dict:
        """Counts, and per stage (p50, p99) latency in microseconds over recent trades."""
        with self._lock:
            samples = {k: sorted(v) for k, v in self._latency.items()}
            counts = {"trades": self.trades, "successes": self.successes,
                      "failures": self.failures, "refused": self.refused,
                      "in_flight": len(self._in_flight), "reconciled": self.reconciled,
                      "lookups": self.placer.lookups,
                      "stream_applied": self.placer.stream_applied,
                      "rest_refreshes": self.placer.rest_refreshes}
            resolving = self.resolver.pending() + list(self._stranded.values())
        legs = self._open_legs(resolving)
        counts.update(unresolved=len(legs), unresolved_orders=[client_id for _, client_id, _, _ in legs],
                      unresolved_legs=[(client_id, venue, state) for _, client_id, venue, state in legs],
                      stranded=len(self._stranded))
        latency = {}
        for stage, values in samples.items():
            if values:
                latency[stage] = (values[len(values) // 2] / 1000,
                                  values[min(len(values) - 1, int(len(values) * 0.99))] / 1000)
        return {**counts, "latency_us": latency}

    # --- recovery (karb.recovery) ------------------------------------------------------
    def reconcile(self) -> int:
        """Recover what a previous run left open (``karb.recovery``): resolve its orders,
        finish its trades, sweep resting orders. Return how many orders were resolved.
        Called from ``start``, before any signal is taken."""
        count = recovery.reconcile(self)
        self._reconciled = True
        self.reconciled += count
        return count

    def cancel_open_orders(self, reason: str = "kill_switch") -> int:
        """Cancel every order resting on the traded markets (``karb.recovery``)."""
        return recovery.cancel_open_orders(self, reason)

    def _on_kill(self, engaged: bool, reason: str) -> None:
        if engaged:
            self.cancel_open_orders()
