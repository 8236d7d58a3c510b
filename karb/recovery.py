"""Start-up recovery: close out what a crashed run left behind, before any signal is taken.

``reconcile(executor)`` (from ``Executor.start``, before the strategy starts):

1. Clients that cannot look an order up by client id (legacy Bithumb) are seeded with what the
   journal knows: the venue order id (``record_order_id``), else the request and its send time.
2. Every trade the journal left ``sending``, and every order left open, is rebuilt from its rows.
   Each open order is looked up (by its journalled venue id, else by client id); one still
   resting is cancelled and read back; the venue's answer (state, fills) is journalled.
   "Not found" is final ("never placed") only once ``execution.not_found_window_s`` has passed
   since the order's journalled creation: a venue may be slow to register an order. Until then
   it is looked up again with backoff, for at most ``lookup_budget_s`` during start-up.
3. A trade whose orders are all final is finished like a live one: if one-legged, the unwinder
   (same loss cap) tries to get flat; then ``risk.finish`` books realised PnL and residual, and
   the signal gets its final status (``filled``/``flat``/``residual``). Unwind orders the
   crashed run already sent are the unwinder's ``sent``: it goes on where they stopped (their
   attempts and loss-cap cost counted, fresh client ids). If the unwinder cannot run (kill
   switch engaged, or it raises), the trade is booked with its residual and trading HALTS
   (persisted; ``karb resume``). An unwind
   order the unwinder leaves not final (answer lost) is unresolved like any other: the trade is
   parked (step 4), and once the order is final the unwind resumes with it in ``sent``; the
   trade is booked only when nothing of it can still fill.
4. A trade with an order still unresolved stays open in the journal, its volume counts as
   exposure (``risk.adopt``) and ALL trading is held (``risk.hold``) while the ``recovery``
   thread keeps looking (backoff up to ``MAX_BACKOFF_S``); it finishes the trade and lifts the
   hold once resolved. An order that still cannot be looked up after the window halts trading
   and is given up on like the leg-resolver's stranded trades: looking stops (a human must
   check the venue; nothing is sent for it), the trade stays unbooked (signal ``sending``, the
   order open in the journal, so the next start looks again) and its whole volume keeps
   counting as in-flight exposure against position room, also after ``karb resume``.
5. Every order resting on the traded markets is cancelled (the start-up sweep): the engine
   assumes it alone trades these markets on these accounts, so an order left resting by the
   legacy IOC emulation is cancelled even when its id never reached the journal.

Every recovery incident is ``critical``. ``cancel_open_orders`` is also the kill switch's and
shutdown's cancel-everything.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from loguru import logger

from karb.clock import NS_PER_S
from karb.exchanges.errors import OrderNotFound, VenueError
from karb.ledger import Reservation
from karb.legs import Leg, LegState
from karb.model import OrderRequest, OrderType, Side, Signal, TimeInForce, Venue
from karb.risk import TradeOutcome
from karb.unwind import filled

STARTUP_LOOKUP_S = 5.0  # how long start-up keeps looking for a not-yet-found order
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
HOLD_KEY = "recovery"
ZERO = Decimal(0)


@dataclass
class _Trade:
    """A journalled trade being recovered: its signal, its orders, and whether it was booked."""

    signal: Signal
    booked: dict[str, Any] | None  # the signals row if a result was already written
    legs: list[Leg] = field(default_factory=list)  # as the journal left them
    unwinds: list[Leg] = field(default_factory=list)  # unwind orders sent by this recovery
    reservation: Reservation | None = None  # what this recovery's unwind holds, once it runs
    created_ns: dict[str, int] = field(default_factory=dict)  # client id -> journalled wall ns
    unresolved: dict[str, str] = field(default_factory=dict)  # client id -> why

    def leg(self, role: str) -> Leg | None:
        return next((leg for leg in self.legs if leg.role == role), None)

    @property
    def orders(self) -> list[Leg]:
        return [*self.legs, *self.unwinds]


class Recovery:
    def __init__(self, executor, lookup_budget_s: float = STARTUP_LOOKUP_S,
                 pause: Callable[[float], None] = time.sleep):
        self.executor = executor
        self.clients = executor.clients
        self.journal = executor.journal
        self.risk = executor.risk
        self.unwinder = executor.unwinder
        self.config = executor.config
        self.clock = executor.clock
        self.lookup_budget_s = lookup_budget_s
        self.pause = pause
        self._pending: dict[str, _Trade] = {}
        self._stranded: dict[str, _Trade] = {}  # given up on: exposure counted, trading halted
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- start-up ----------------------------------------------------------------------------
    def run(self) -> int:
        """Recover everything (steps 1-5 above); return how many orders were resolved."""
        open_rows = self.journal.open_orders()
        self._seed_clients(open_rows)
        trades = self._load(open_rows)
        count = 0
        deadline = time.monotonic() + self.lookup_budget_s
        delay = FIRST_BACKOFF_S
        while True:
            count += sum(self._resolve(trade) for trade in trades.values())
            waiting = [t for t in trades.values() if t.unresolved]
            if not waiting or time.monotonic() + delay > deadline:
                break
            self.pause(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
        for trade in trades.values():
            if not trade.unresolved:
                self._finish(trade)
            if trade.unresolved:  # still, or an unwind order it sent is not final
                self._park(trade)
        self.journal.flush()
        if trades:
            logger.warning("recovered {} trades ({} orders) left unfinished by a previous run; "
                           "{} still unresolved", len(trades), count, len(self._pending))
        cancel_open_orders(self.executor, "startup_sweep")
        if self._pending:
            self._thread = threading.Thread(target=self._keep_resolving, name="recovery", daemon=True)
            self._thread.start()
        return count

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def stranded(self) -> list[str]:
        """Signal ids of trades given up on (unbooked, exposure counted, trading halted)."""
        with self._lock:
            return list(self._stranded)

    # --- loading -----------------------------------------------------------------------------
    def _seed_clients(self, rows: list[dict]) -> None:
        for row in rows:
            client = self.clients.get(Venue(row["venue"]))
            seed = getattr(client, "seed_order", None)
            if seed is not None:
                seed(_request(row), row["order_id"], (row["created_wall_ns"] or 0) / NS_PER_S)

    def _load(self, open_rows: list[dict]) -> dict[str, _Trade]:
        ids = {row["signal_id"] for row in open_rows}
        ids |= {r["id"] for r in self.journal.query("SELECT id FROM signals WHERE status = 'sending'")}
        trades: dict[str, _Trade] = {}
        for signal_id in sorted(ids):
            rows = self.journal.query("SELECT * FROM signals WHERE id = ?", (signal_id,))
            if not rows:
                logger.error("orders of unknown signal {} left open; looking them up anyway", signal_id)
                continue
            row = rows[0]
            trade = _Trade(_signal(row), None if row["status"] == "sending" else row)
            for order in self.journal.query("SELECT * FROM orders WHERE signal_id = ? ORDER BY "
                                            "created_wall_ns, rowid", (signal_id,)):
                leg = _leg(order)
                trade.legs.append(leg)
                trade.created_ns[leg.client_id] = order["created_wall_ns"] or 0
                if not leg.final:
                    trade.unresolved[leg.client_id] = "not looked up yet"
                elif leg.executed_volume and trade.booked is None:
                    self._refetch_fills(trade, leg)
            if trade.booked is None:
                self.risk.adopt(signal_id, trade.signal.market, trade.signal.volume)
            trades[signal_id] = trade
        return trades

    def _refetch_fills(self, trade: _Trade, leg: Leg) -> None:
        # the order's final row was committed but the crash may have lost its fills rows
        if self.journal.query("SELECT 1 FROM fills WHERE client_id = ? LIMIT 1", (leg.client_id,)):
            return
        client = self.clients[leg.request.venue]
        try:
            result = (client.get_order(order_id=leg.order_id) if leg.order_id
                      else client.get_order(client_id=leg.client_id))
            leg.apply(result, self.clock.monotonic_ns())
        except Exception as exc:  # the order row is final already: the fills rows are detail
            logger.error("fills of {} not journalled and not fetched: {}", leg.client_id, exc)
            return
        if leg.fills:
            self.journal.record_fills(leg)

    # --- resolving orders ----------------------------------------------------------------------
    def _resolve(self, trade: _Trade) -> int:
        """Look up each unresolved order of ``trade`` once; return how many became final."""
        done = 0
        for leg in [leg for leg in trade.orders if leg.client_id in trade.unresolved]:
            before = (leg.executed_volume, leg.executed_funds, leg.paid_fee, len(leg.fills))
            why = self._look_up(trade, leg)
            if any(leg is unwind for unwind in trade.unwinds):
                self._book_progress(trade, leg, before)
            if why is None:
                del trade.unresolved[leg.client_id]
                done += 1
                self.journal.record_order(trade.signal.id, leg)
                if leg.fills:
                    self.journal.record_fills(leg)
                self._note(trade, "reconciled", f"{leg.role} {leg.client_id} on "
                           f"{leg.request.venue.value}: {leg.state.value}, filled {leg.executed_volume}"
                           + (f" ({leg.error})" if leg.error else ""))
            else:
                trade.unresolved[leg.client_id] = why
        return done

    def _look_up(self, trade: _Trade, leg: Leg) -> str | None:
        """Bring ``leg`` to a final state from the venue's answer; None, or why it is not final."""
        client = self.clients[leg.request.venue]
        age_s = (self.clock.wall_ns() - trade.created_ns[leg.client_id]) / NS_PER_S
        window_s = self.config.execution.not_found_window_s
        try:
            result = (client.get_order(order_id=leg.order_id) if leg.order_id
                      else client.get_order(client_id=leg.client_id))
            if not result.is_final:
                client.cancel_order(order_id=result.order_id)
                result = client.get_order(order_id=result.order_id)
            leg.apply(result, self.clock.monotonic_ns())
        except OrderNotFound:
            if age_s < window_s:
                return f"not found {age_s:.1f} s after it was journalled (final after {window_s:g} s)"
            if leg.state not in (LegState.SENT, LegState.UNKNOWN):
                return f"{leg.state.value} by the venue earlier, yet not found now"
            leg.reject(f"not found at the venue {age_s:.0f} s after it was journalled: never placed")
        except Exception as exc:  # a venue error or a bug: look again later
            logger.error("looking up {} failed: {}", leg.client_id, exc)
            return f"lookup failed: {type(exc).__name__}: {exc}"
        return None if leg.final else f"still {leg.state.value} after a cancel"

    def _book_progress(self, trade: _Trade, leg: Leg, before: tuple) -> None:
        # an unwind order of this run: the unwinder booked what it knew when it returned, so
        # book what the venue has told since (the crashed run's orders are in the balances
        # loaded at start). Legacy fills are cumulative: only the new ones carry new coin fees.
        volume, funds, fee, n_fills = before
        if (leg.executed_volume, leg.executed_funds, leg.paid_fee) != (volume, funds, fee):
            req = leg.request
            self.risk.ledger.apply_fill(trade.reservation, req.venue, req.market, req.side,
                                        leg.executed_volume - volume, leg.executed_funds - funds,
                                        leg.paid_fee - fee, fills=leg.fills[n_fills:])

    def _park(self, trade: _Trade) -> None:
        with self._lock:
            self._pending[trade.signal.id] = trade
        why = "; ".join(f"{cid} {reason}" for cid, reason in trade.unresolved.items())
        self._note(trade, "recovery_unresolved", why)
        self.risk.hold(HOLD_KEY, f"order(s) of {trade.signal.id} left by the previous run not "
                       f"resolved yet: {why}")

    def _keep_resolving(self) -> None:
        # Thread ``recovery``: look again with backoff until every parked trade is final.
        delay = FIRST_BACKOFF_S * 5
        while self._pending and not self._stop.wait(delay):
            delay = min(delay * 2, MAX_BACKOFF_S)
            for signal_id, trade in list(self._pending.items()):
                try:
                    self._resolve(trade)
                    if trade.unresolved:
                        if self._window_passed(trade):
                            self._give_up(trade)
                        continue
                    self._finish(trade)
                    if trade.unresolved:  # its resumed unwind sent an order left not final
                        self._park(trade)
                    else:
                        with self._lock:
                            del self._pending[signal_id]
                except Exception:
                    logger.exception("recovering {} failed; trying again", signal_id)
        if not self._pending:
            self.risk.release_hold(HOLD_KEY)

    def _window_passed(self, trade: _Trade) -> bool:
        now = self.clock.wall_ns()
        window_ns = self.config.execution.not_found_window_s * NS_PER_S
        return all(now - trade.created_ns[cid] >= window_ns + MAX_BACKOFF_S * NS_PER_S
                   for cid in trade.unresolved)

    def _give_up(self, trade: _Trade) -> None:
        # The venue keeps failing to answer about an order well past the window: stop looking
        # and halt. Not booked: a residual would be a guess (the order may have filled all,
        # some or none), while the adopted in-flight volume covers whatever it did; the signal
        # stays ``sending`` with the order open, so the next start looks again. The
        # reservation goes (exposure is risk's in-flight, not a hold balance sync waits on).
        sid = trade.signal.id
        why = "; ".join(f"{cid} {reason}" for cid, reason in trade.unresolved.items())
        self._note(trade, "recovery_failed", f"{why}; its exposure ({trade.signal.volume} "
                   f"{trade.signal.market}) stays counted, the trade is not booked")
        self.risk.halt(f"trade {sid} from the previous run cannot be resolved ({why}); its "
                       "exposure stays counted; check the venue, then `karb resume`")
        if trade.reservation is not None:
            self.risk.ledger.release(trade.reservation)
        with self._lock:  # last: ``stranded`` showing it means all of the above is done
            self._pending.pop(sid, None)
            self._stranded[sid] = trade

    # --- finishing trades ----------------------------------------------------------------------
    def _finish(self, trade: _Trade) -> None:
        """Unwind (or resume the unwind of) a trade whose orders are all final, and book it;
        an unwind order left not final goes to ``unresolved`` instead, the trade unbooked."""
        if trade.booked is not None:
            self._rebook(trade)
            return
        signal = trade.signal
        if trade.reservation is None:
            trade.reservation = self.risk.ledger.reserve(f"{signal.id}/recovery", {})
        buy, sell = trade.leg("buy"), trade.leg("sell")
        excess = filled(trade.orders, Side.BUY)[0] - filled(trade.orders, Side.SELL)[0]
        if excess and buy is not None and sell is not None and all(leg.final for leg in trade.orders):
            why = self._cannot_unwind(trade)
            if why is None:
                # the crashed run's own unwind orders count: the unwind goes on where it stopped
                # (their attempts, costs and client ids taken), never from the start
                earlier = [leg for leg in trade.legs if leg.role not in ("buy", "sell")]
                sent = [*earlier, *trade.unwinds]
                try:  # ``sent`` gets each unwind order once journalled, even if this raises
                    self.unwinder.run(signal, trade.reservation, buy, sell, sent)
                except Exception as exc:
                    logger.exception("recovery unwind of {} failed", signal.id)
                    why = f"unwind raised {type(exc).__name__}: {exc}"
                finally:
                    trade.unwinds.extend(sent[len(earlier) + len(trade.unwinds):])
            if why is not None:
                self.risk.halt(f"one-legged trade {signal.id} from the previous run left "
                               f"{excess} {signal.market} unhedged ({why}); flatten it, then "
                               "`karb resume`")
        for leg in trade.unwinds:
            if not leg.final and leg.client_id not in trade.unresolved:
                trade.created_ns.setdefault(leg.client_id, self.clock.wall_ns())
                trade.unresolved[leg.client_id] = f"unwind order {leg.state.value}: may have filled"
        if trade.unresolved:
            return
        orders = trade.orders
        outcome = _outcome(signal, orders)
        realised = self.risk.finish(signal, trade.reservation, outcome)
        status = outcome.status
        self.journal.record_result(signal.id, status, {}, realised, outcome.fees, outcome.residual,
                                   "recovered at start: " + _summary(orders))
        self._note(trade, "recovered", f"{status}: {_summary(orders)}; realised {realised:.2f} KRW, "
                   f"residual {outcome.residual}")

    def _cannot_unwind(self, trade: _Trade) -> str | None:
        if self.risk.kill.engaged:
            return "kill switch engaged"
        return None

    def _rebook(self, trade: _Trade) -> None:
        # an order of a trade booked earlier was resolved now: correct the booking by the change
        row, signal = trade.booked, trade.signal
        outcome = _outcome(signal, trade.orders)
        old_residual = Decimal(row["residual"] or 0)
        old_realised = Decimal(row["realised_krw"] or 0)
        if outcome.residual == old_residual and outcome.realised_krw == old_realised:
            return
        self.risk.rebook(signal.market, outcome.residual - old_residual,
                         outcome.realised_krw - old_realised, signal.buy_price)
        self.journal.record_result(signal.id, outcome.status, {}, outcome.realised_krw,
                                   outcome.fees, outcome.residual,
                                   "re-booked at start: " + _summary(trade.legs))
        self._note(trade, "rebooked", f"residual {old_residual} -> {outcome.residual}, realised "
                   f"{old_realised} -> {outcome.realised_krw:.2f} KRW")

    def _note(self, trade: _Trade, kind: str, detail: str) -> None:
        self.journal.record_incident(kind, detail, trade.signal.id, "critical")
        logger.critical("recovery of {}: {}: {}", trade.signal.id, kind, detail)


def _outcome(signal: Signal, orders: list[Leg]) -> TradeOutcome:
    bought, buy_funds, buy_fees = filled(orders, Side.BUY)
    sold, sell_funds, sell_fees = filled(orders, Side.SELL)
    states = {leg.role: leg.state for leg in orders}
    success = (states.get("buy") is LegState.FILLED and states.get("sell") is LegState.FILLED
               and bought == sold == signal.volume)
    # ``clean`` stays False: a trade the previous run left unfinished is never a harmless
    # shortfall, whatever its orders did
    return TradeOutcome(signal.market, success, bought, buy_funds, sold, sell_funds,
                        buy_fees + sell_fees, signal.buy_price)


def _summary(orders: list[Leg]) -> str:
    return ", ".join(f"{leg.role} {leg.request.venue.value} {leg.state.value} {leg.executed_volume}"
                     for leg in orders)


def _dec(text: str | None) -> Decimal | None:
    return Decimal(text) if text else None


def _request(row: dict) -> OrderRequest:
    return OrderRequest(Venue(row["venue"]), row["market"], Side.BUY if row["side"] == "buy" else Side.SELL,
                        OrderType(row["order_type"]), row["client_id"], price=_dec(row["price"]),
                        volume=_dec(row["volume"]), funds=_dec(row["funds"]), tif=TimeInForce(row["tif"]))


def _leg(row: dict) -> Leg:
    """A leg as the journal last saw it (state and amounts as journalled)."""
    leg = Leg(row["role"], _request(row))
    leg.state = LegState(row["state"])
    leg.order_id = row["order_id"]
    leg.executed_volume = _dec(row["executed_volume"]) or ZERO
    leg.executed_funds = _dec(row["executed_funds"]) or ZERO
    leg.paid_fee = _dec(row["paid_fee"]) or ZERO
    leg.error = row["error"] or ""
    if leg.state is LegState.NEW:  # journalled before sending: it may have been sent
        leg.mark_sent(0)
    return leg


def _signal(row: dict) -> Signal:
    return Signal(market=row["market"], buy_venue=Venue(row["buy_venue"]),
                  sell_venue=Venue(row["sell_venue"]), volume=Decimal(row["volume"]),
                  buy_price=Decimal(row["buy_price"]), sell_price=Decimal(row["sell_price"]),
                  buy_vwap=row["buy_vwap"] or 0.0, sell_vwap=row["sell_vwap"] or 0.0,
                  gross_bps=row["gross_bps"] or 0.0, net_bps=row["net_bps"] or 0.0,
                  est_profit_krw=Decimal(row["est_profit_krw"] or 0), created_ns=row["signal_ns"] or 0,
                  id=row["id"])


# --- the executor's delegations ----------------------------------------------------------------
def recovery_of(executor) -> Recovery:
    """The executor's ``Recovery`` (made on first use)."""
    recovery = getattr(executor, "_recovery", None)
    if recovery is None:
        recovery = executor._recovery = Recovery(executor)
    return recovery


def reconcile(executor) -> int:
    """``Executor.reconcile``: recover what the journal left open; return orders resolved."""
    return recovery_of(executor).run()


def _open_orders(venue, client, markets: list[str], unlisted: list[str]):
    """The venue's open orders on ``markets``: one listing of all markets (one request, or a
    few pages, instead of one per market: 150 markets took 6 s of Upbit's private window at
    start-up and again at shutdown), or, if that listing fails, market by market. A market
    that cannot be listed either way is appended to ``unlisted``."""
    traded = set(markets)
    try:
        listed = client.get_open_orders()
    except VenueError as exc:
        logger.warning("listing all open orders on {} failed ({}); listing market by market",
                       venue.value, exc)
    else:
        yield [o for o in listed if o.market in traded]
        return
    for market in markets:
        try:
            yield client.get_open_orders(market)
        except VenueError as exc:
            logger.error("listing open orders on {} {} failed, none cancelled there: {}",
                         venue.value, market, exc)
            unlisted.append(f"{venue.value} {market} ({type(exc).__name__}: {exc})")


def cancel_open_orders(executor, reason: str = "kill_switch") -> int:
    """Cancel every order resting on the traded markets (kill switch, start-up sweep,
    shutdown); journal the count as an incident of kind ``reason``. Return the count.

    A venue whose open orders cannot be listed (an error, or an answer whose shape is not
    understood) is an ERROR line and a critical incident naming it: "cancelled 0" must never
    stand for "could not look"."""
    cancelled, unlisted = 0, []
    for venue, client in executor.clients.items():
        for orders in _open_orders(venue, client, executor.config.markets, unlisted):
            for order in orders:
                try:
                    client.cancel_order(order_id=order.order_id)
                    cancelled += 1
                except VenueError as exc:
                    logger.error("cancelling {} on {} failed: {}", order.order_id, venue.value, exc)
    severity = "critical" if reason == "kill_switch" or (reason == "startup_sweep" and cancelled) \
        or unlisted else "info"
    detail = f"cancelled {cancelled} open orders"
    if unlisted:
        detail += f"; could NOT list open orders on {'; '.join(unlisted)}"
    executor.journal.record_incident(reason, detail, None, severity)
    return cancelled
