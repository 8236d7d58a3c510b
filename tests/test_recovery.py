"""Start-up recovery after a crash (kill -9) with stub venues: trades left ``sending`` are
resolved, unwound or halted, booked with a final status, and their residual shows; "not found"
is not final while a venue may still be registering the order."""
import time
from dataclasses import replace
from decimal import Decimal as D

from karb.exchanges.errors import OrderNotFound, VenueUnavailable
from karb.model import Venue
from tests.conftest import wait_until
from tests.test_execution import BUY_FEE, BUY_FUNDS, Rig
from tests.trading_fixtures import make_signal

UP, BT = Venue.UPBIT, Venue.BITHUMB


def _crash_after_buy_filled(r, signal_id="old"):
    """A previous run journalled the intent, its buy filled on Bithumb, then it was killed
    before the sell reached Upbit (nothing but the intent is in the journal)."""
    signal = make_signal(signal_id)
    buy, sell = r.executor._legs(signal)
    r.journal.record_intent(signal, (buy, sell), {})
    r.venues[BT].place_order(buy.request)
    return signal


def _signal_row(r, signal_id="old"):
    r.journal.flush()
    return r.journal.query("SELECT * FROM signals WHERE id = ?", (signal_id,))[0]


def test_restart_after_kill_between_filled_buy_and_sell_unwinds_and_books_the_trade(tmp_path):
    r = Rig(tmp_path, not_found_window_s=0)
    _crash_after_buy_filled(r)
    r.executor.start()
    try:
        row = _signal_row(r)
        # the one-legged trade went through the unwinder: its retry sold on Upbit
        assert [p.client_id for p in r.venues[UP].placements] == ["oldr1"]
        assert row["status"] == "flat" and D(row["residual"]) == 0
        # the retry sold at its limit, 30 bps under the signal's 140,700,000: 140,278,000
        assert D(row["realised_krw"]) == D("1402780") - D("701.39") - BUY_FUNDS - BUY_FEE
        assert r.risk.summary()["residual"] == {}
        assert r.risk.summary()["trades"] == 1 and r.risk.summary()["in_flight"] == 0
        severities = {i["kind"]: i["severity"] for i in r.incidents()}
        assert severities["recovered"] == "critical" and severities["reconciled"] == "critical"
        fills = r.journal.query("SELECT client_id FROM fills ORDER BY client_id")
        assert [f["client_id"] for f in fills] == ["oldb", "oldr1"]
        assert r.journal.open_orders() == []
    finally:
        r.close()


def test_restart_with_one_legged_trade_that_cannot_be_unwound_shows_residual_and_halts(tmp_path):
    r = Rig(tmp_path, not_found_window_s=0, unwind_attempts=1)
    _crash_after_buy_filled(r)
    r.venues[UP].script = ["reject"]  # the retry sell is refused
    r.venues[BT].script = ["reject"]  # and so is the flatten on Bithumb
    r.executor.start()
    try:
        row = _signal_row(r)
        assert row["status"] == "residual" and D(row["residual"]) == D("0.01")
        assert r.risk.summary()["residual"] == {"BTC": D("0.01")}
        assert any(i["kind"] == "residual_exposure" and i["severity"] == "critical"
                   for i in r.incidents())
    finally:
        r.close()


def test_restart_with_kill_switch_engaged_books_one_legged_trade_as_residual_and_halts(tmp_path):
    r = Rig(tmp_path, not_found_window_s=0)
    _crash_after_buy_filled(r)
    r.risk.kill.engage("operator")
    r.executor.start()
    try:
        row = _signal_row(r)
        assert r.venues[UP].placements == []  # no unwind while killed
        assert row["status"] == "residual" and r.risk.summary()["residual"] == {"BTC": D("0.01")}
        assert "kill switch engaged" in r.risk.summary()["halt_reason"]
    finally:
        r.close()


class SlowRegistration:
    """Wrap a stub venue: an order is invisible to look-ups for ``delay_s`` after placement."""

    def __init__(self, venue, delay_s):
        self.venue, self.delay_s, self.placed_at = venue, delay_s, {}

    def place_later(self, request):
        self.placed_at[request.client_id] = time.monotonic()
        self.venue.place_order(request)

    def get_order(self, order_id=None, client_id=None):
        if client_id in self.placed_at and time.monotonic() - self.placed_at[client_id] < self.delay_s:
            raise OrderNotFound(self.venue.venue, "order not found", "order_not_found", 404)
        return self.venue.get_order(order_id=order_id, client_id=client_id)

    def __getattr__(self, name):
        return getattr(self.venue, name)


def test_restart_soon_after_crash_with_venue_slow_to_register_keeps_the_leg_open(tmp_path):
    from karb.recovery import recovery_of

    # Arrange: the sell reached Upbit just before the crash; Upbit shows it only 1.5 s later
    r = Rig(tmp_path)  # not_found_window_s: 30 (default)
    slow = SlowRegistration(r.venues[UP], delay_s=1.5)
    r.executor.clients[UP] = r.executor.placer.clients[UP] = slow
    signal = make_signal("old")
    buy, sell = r.executor._legs(signal)
    r.journal.record_intent(signal, (buy, sell), {})
    r.venues[BT].place_order(buy.request)
    slow.place_later(sell.request)
    recovery_of(r.executor).lookup_budget_s = 0.2  # restart 0.5 s after: give up looking soon
    # Act
    r.executor.start()
    try:
        # Assert: not rejected, still open in the journal, exposure counted, trading held
        states = {o["client_id"]: o["state"] for o in r.journal.query("SELECT * FROM orders")}
        assert states["olds"] != "rejected" and "olds" in {o["client_id"] for o in r.journal.open_orders()}
        assert r.venues[UP].placements[-1].client_id == "olds"  # nothing re-sent, no unwind
        assert len(r.venues[UP].placements) == 1 and len(r.venues[BT].placements) == 1
        assert r.risk.summary()["in_flight"] == 1
        assert "held" in r.executor.submit(make_signal("new"))
        # the recovery thread keeps looking, finds it filled, books the trade, lifts the hold
        wait_until(lambda: _signal_row(r)["status"] != "sending", 10.0, message="recovered trade")
        assert _signal_row(r)["status"] == "filled"
        wait_until(lambda: r.risk.blocked() is None, 5.0, message="hold lifted")
        assert r.journal.open_orders() == [] and r.risk.summary()["residual"] == {}
    finally:
        recovery_of(r.executor).stop()
        r.close()


def test_restart_after_window_with_order_never_found_marks_it_never_placed(tmp_path):
    r = Rig(tmp_path, not_found_window_s=0)
    signal = make_signal("old")
    r.journal.record_intent(signal, r.executor._legs(signal), {})  # neither leg reached a venue
    r.executor.start()
    try:
        row = _signal_row(r)
        states = {o["client_id"]: o["state"] for o in r.journal.query("SELECT * FROM orders")}
        assert states == {"oldb": "rejected", "olds": "rejected"}
        assert row["status"] == "flat" and D(row["realised_krw"]) == 0
        assert r.risk.blocked() is None
    finally:
        r.close()


def test_restart_sweeps_orders_resting_on_traded_markets(tmp_path):
    r = Rig(tmp_path)
    r.venues[UP].script = ["rest"]
    r.venues[UP].place_order(r.executor._legs(make_signal("foreign"))[1].request)  # not journalled
    r.executor.start()
    try:
        assert r.venues[UP].cancelled == ["foreigns"]
        r.journal.flush()
        assert any(i["kind"] == "startup_sweep" and "cancelled 1" in i["detail"] for i in r.incidents())
    finally:
        r.close()


def _spy_open_orders(venue, fail_all: bool = False):
    """Record each ``get_open_orders`` call's market; optionally fail the all-markets one."""
    calls, listing = [], venue.get_open_orders

    def get_open_orders(market=None):
        calls.append(market)
        if market is None and fail_all:
            raise VenueUnavailable(venue.venue, "listing all markets failed", "timeout")
        return listing(market)

    venue.get_open_orders = get_open_orders
    return calls


def test_sweep_lists_all_markets_in_one_call_and_leaves_other_markets_alone(tmp_path):
    r = Rig(tmp_path)
    r.venues[UP].script = ["rest", "rest"]
    r.venues[UP].place_order(r.executor._legs(make_signal("foreign"))[1].request)
    other = r.executor._legs(make_signal("manual"))[1].request
    r.venues[UP].place_order(replace(other, market="KRW-DOGE"))  # the trader's own, not traded
    calls = _spy_open_orders(r.venues[UP])
    r.executor.start()
    try:
        assert r.venues[UP].cancelled == ["foreigns"]
        assert calls == [None]
    finally:
        r.close()


def test_sweep_whose_all_markets_listing_fails_lists_market_by_market(tmp_path):
    r = Rig(tmp_path)
    r.venues[UP].script = ["rest"]
    r.venues[UP].place_order(r.executor._legs(make_signal("foreign"))[1].request)
    calls = _spy_open_orders(r.venues[UP], fail_all=True)
    r.executor.start()
    try:
        assert r.venues[UP].cancelled == ["foreigns"]
        assert calls == [None, *r.executor.config.markets]
    finally:
        r.close()


# --- review defects 1 and 2 ----------------------------------------------------------------

def test_recovery_unwind_order_left_unknown_keeps_trading_held_until_it_is_resolved(tmp_path):
    from karb.recovery import recovery_of

    r = Rig(tmp_path, not_found_window_s=0)
    _crash_after_buy_filled(r)
    up = r.venues[UP]
    up.script = ["timeout"]  # the recovery's retry sell fills, its answer is lost
    place = up.place_order

    def place_then_go_down(request, priority=False):
        up.down.set()  # and Upbit look-ups fail for a while from then on
        return place(request, priority)
    up.place_order = place_then_go_down
    r.executor.start()
    try:
        r.journal.flush()
        states = {o["client_id"]: o["state"] for o in r.journal.query("SELECT * FROM orders")}
        assert states["oldr1"] == "unknown"  # sold at Upbit: the true position is flat
        # the trade must stay open (exposure counted, trading held) while oldr1 may have filled
        assert _signal_row(r)["status"] == "sending", (_signal_row(r)["status"], r.risk.blocked(),
                                                       r.risk.summary()["residual"])
        assert r.risk.blocked() is not None
        assert "held" in r.executor.submit(make_signal("new"))
        # Upbit answers again: oldr1 sold 0.01, the unwind resumes with it (flat: nothing more
        # sent), and only then is the trade booked and the hold lifted
        up.down.clear()
        wait_until(lambda: _signal_row(r)["status"] != "sending", 10.0, message="recovered trade")
        row = _signal_row(r)
        assert row["status"] == "flat" and D(row["residual"]) == 0
        assert [p.client_id for p in up.placements] == ["oldr1"]
        wait_until(lambda: r.risk.blocked() is None, 5.0, message="hold lifted")
        summary = r.risk.summary()
        assert summary["residual"] == {} and summary["in_flight"] == 0
        assert summary["halt_reason"] is None and r.journal.open_orders() == []
        # the sale found later is in the ledger: Upbit's coin went out with it
        assert r.risk.ledger.free(UP, "BTC") == D(1) - D("0.01")
        assert r.risk.ledger.open_reservations() == 0
    finally:
        recovery_of(r.executor).stop()
        r.close()


def test_recovery_giving_up_on_a_filled_buy_keeps_its_exposure_counted(tmp_path):
    from karb.recovery import recovery_of

    r = Rig(tmp_path, not_found_window_s=0)
    _crash_after_buy_filled(r)  # 0.01 BTC bought on Bithumb, the sell never sent
    r.venues[BT].down.set()  # Bithumb cannot be asked about the buy
    recovery_of(r.executor).lookup_budget_s = 0.1
    r.executor.start()
    try:
        assert r.risk.summary()["in_flight"] == 1  # parked: exposure counted, trading held
        room = r.risk.position_room("BTC", D("140000000"))
        # past the window + backoff the recovery thread gives up and halts
        wait_until(lambda: recovery_of(r.executor).stranded, 15.0, message="gave up")
        assert "cannot be resolved" in (r.risk.summary()["halt_reason"] or "")
        # the 0.01 BTC the venue bought must still count against position room: the trade
        # stays unbooked and in flight (a guessed residual would book what nobody confirmed)
        summary = r.risk.summary()
        assert summary["in_flight"] == 1, (_signal_row(r)["status"], summary["residual"])
        assert _signal_row(r)["status"] == "sending"
        assert "oldb" in {o["client_id"] for o in r.journal.open_orders()}  # next start looks again
        assert any(i["kind"] == "recovery_failed" and i["severity"] == "critical"
                   for i in r.incidents())
        r.risk.resume()  # `karb resume`: trading may go on, the exposure still counts
        assert r.risk.position_room("BTC", D("140000000")) == room
        assert r.risk.ledger.open_reservations() == 0  # balance sync can adopt venue balances
        assert recovery_of(r.executor).pending == 0
    finally:
        recovery_of(r.executor).stop()
        r.close()


def test_restart_after_kill_mid_unwind_resumes_the_unwind_with_fresh_ids_instead_of_halting(tmp_path):
    # Arrange: the crashed run's buy filled, its sell did nothing, and its first unwind retry
    # (journalled, then sent) filled nothing before the kill -9
    from karb.legs import Leg
    from karb.model import OrderRequest, OrderType, Side, TimeInForce

    r = Rig(tmp_path, not_found_window_s=0)
    signal = _crash_after_buy_filled(r)
    sell = r.executor._legs(signal)[1]
    r.venues[UP].script = ["none", "none"]
    r.venues[UP].place_order(sell.request)
    retry = Leg("retry-1", OrderRequest(UP, signal.market, Side.SELL, OrderType.LIMIT, "oldr1",
                                        price=D("140278000"), volume=signal.volume,
                                        tif=TimeInForce.IOC))
    r.journal.record_intent_order(signal.id, retry)
    r.venues[UP].place_order(retry.request)
    r.executor.start()
    try:
        row = _signal_row(r)
        # the unwind went on where it stopped: retry-2 with a fresh id sold, nothing halted
        assert [p.client_id for p in r.venues[UP].placements] == ["olds", "oldr1", "oldr2"]
        assert row["status"] == "flat" and D(row["residual"]) == 0
        assert r.risk.summary()["halt_reason"] is None
    finally:
        r.close()
