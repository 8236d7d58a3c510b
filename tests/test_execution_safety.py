"""Execution safety: no retry, flatten or exit while a leg could still fill; unwinds survive a
slow journal; market legs succeed by value. Stub venues, a ManualClock moved by the injected
pauses (no real waiting), and a resolver whose backoff the test releases step by step."""
import threading
from decimal import Decimal as D

import pytest

from karb.balance_sync import BalanceSync
from karb.circuit import CircuitBreaker, CircuitState
from karb.clock import ManualClock
from karb.execution import Executor
from karb.journal import Journal, JournalError
from karb.legs import LegState
from karb.model import Fill, OrderResult, Venue
from karb.risk import Risk, TradingState
from tests.conftest import wait_until
from tests.stub_venue import StubVenue, _fields
from tests.trading_fixtures import balances, make_config, make_rules, make_signal

UP, BT = Venue.UPBIT, Venue.BITHUMB


class Steps:
    """The resolver's pause: parks until the test lets it go (``run_free``), then moves the
    fake clock by the backoff it asked for."""

    def __init__(self, clock: ManualClock):
        self.clock = clock
        self.waiting = threading.Event()
        self.free = threading.Event()

    def __call__(self, seconds: float) -> None:
        if not self.free.is_set():
            self.waiting.set()
            self.free.wait(30)
        self.clock.advance(seconds)

    def run_free(self) -> None:
        self.free.set()


class Rig:
    def __init__(self, tmp_path, **execution):
        self.config = make_config(tmp_path, risk={"max_trade_krw": "5000000"},
                                  execution={"poll_interval_ms": 1, "fill_timeout_s": 1.0,
                                             **execution})
        self.rules = make_rules(self.config)
        self.clock = ManualClock()
        self.risk = Risk(self.config, self.rules, self.clock)
        self.risk.ledger.load(BT, balances(KRW=10_000_000, BTC=1))
        self.risk.ledger.load(UP, balances(KRW=10_000_000, BTC=1))
        self.venues = {UP: StubVenue(UP, "0.0005"), BT: StubVenue(BT, "0.0004")}
        self.journal = Journal(self.config.journal.path)
        self.journal.start()
        self.executor = Executor(self.venues, self.rules, self.risk, self.journal, self.config,
                                 self.clock)
        self.executor.placer.pause = self.clock.advance
        self.steps = Steps(self.clock)
        resolver = getattr(self.executor, "resolver", None)
        if resolver is not None:
            resolver.pause = self.steps
        self.trades = []
        self.executor.add_listener(self.trades.append)

    def incidents(self, kind):
        self.journal.flush()
        return self.journal.query("SELECT severity, detail FROM incidents WHERE kind=?", (kind,))

    def placed(self, venue):
        return [p.client_id for p in self.venues[venue].placements]

    def close(self):
        self.steps.run_free()
        self.executor.stop(5.0)
        self.journal.stop()


@pytest.fixture
def rig(tmp_path):
    rigs = []

    def make(**execution):
        r = Rig(tmp_path / f"rig{len(rigs)}", **execution)
        r.executor.start()
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        r.close()


# --- 1. never retry a leg that may have filled ---------------------------------------------

def test_unwind_never_resends_an_acknowledged_sell_whose_polls_and_cancel_failed(rig):
    r = rig(fill_timeout_s=0.05)
    r.venues[UP].script = ["ack"]  # Bithumb-2.0-like: ids only, fills when looked at
    r.venues[UP].down.set()  # polls and the cancel fail for the whole fill timeout
    assert r.executor.submit(make_signal()) is None
    wait_until(lambda: r.steps.waiting.is_set() or r.trades, message="resolver or booking")
    assert r.placed(UP) == ["s1s"]  # no second sell while the first may fill
    assert r.executor.unresolved() == [("s1", "s1s", "upbit", "acknowledged")]
    assert r.executor.stats()["unresolved"] == 1
    assert r.risk.summary()["in_flight"] == 1 and r.risk.ledger.open_reservations() == 1
    r.venues[UP].down.clear()
    r.steps.run_free()
    assert r.executor.wait_idle(5.0)
    (trade,) = r.trades
    assert trade.sell.state is LegState.FILLED and trade.unwinds == []
    assert r.placed(UP) == ["s1s"] and r.risk.residual("BTC") == 0
    assert r.risk.summary()["successes"] == 1 and r.executor.unresolved() == []


# --- 2. never flatten while a leg could still fill -----------------------------------------

def test_unwind_never_flattens_against_an_unknown_sell_that_filled(rig):
    r = rig()
    r.venues[UP].script = ["timeout"]  # placed and filled, the answer lost
    r.venues[UP].down.set()  # and every look-up fails for a while
    assert r.executor.submit(make_signal()) is None
    wait_until(lambda: r.steps.waiting.is_set() or r.trades, message="resolver or booking")
    assert r.placed(BT) == ["s1b"]  # no flatten of the bought coin
    assert r.executor.unresolved() == [("s1", "s1s", "upbit", "unknown")]
    r.venues[UP].down.clear()
    r.steps.run_free()
    assert r.executor.wait_idle(5.0)
    (trade,) = r.trades
    assert trade.sell.state is LegState.FILLED and trade.unwinds == []
    assert r.placed(BT) == ["s1b"] and r.placed(UP) == ["s1s"]
    assert r.risk.residual("BTC") == 0 and r.risk.summary()["successes"] == 1
    assert r.risk.ledger.free(UP, "BTC") == D("0.99") and r.risk.ledger.free(BT, "BTC") == D("1.01")
    r.journal.flush()
    (row,) = r.journal.query("SELECT status FROM signals")
    assert row["status"] == "filled"


def test_unresolved_leg_past_the_bound_halts_with_its_exposure_still_counted(rig):
    r = rig(resolve_timeout_s=5.0)
    r.venues[UP].script = ["timeout"]
    r.venues[UP].down.set()  # never comes back
    r.steps.run_free()
    assert r.executor.submit(make_signal()) is None
    wait_until(lambda: r.risk.state is TradingState.HALTED, message="halt")
    assert "s1s" in r.risk.summary()["halt_reason"]
    (incident,) = r.incidents("leg_unresolved")
    assert incident["severity"] == "critical" and "s1s" in incident["detail"]
    assert r.placed(BT) == ["s1b"] and r.placed(UP) == ["s1s"]
    assert r.executor.unresolved() == [("s1", "s1s", "upbit", "unknown")]
    assert r.risk.summary()["in_flight"] == 1 and r.risk.ledger.open_reservations() == 1
    assert r.executor.stats()["unresolved"] == 1


def test_unknown_leg_not_found_past_the_window_is_rejected_then_flattened(rig):
    r = rig(not_found_window_s=2.0)
    r.venues[UP].script = ["lost"]  # timed out and truly never placed
    r.steps.run_free()
    assert r.executor.submit(make_signal()) is None
    assert r.executor.wait_idle(5.0)
    (trade,) = r.trades
    assert trade.sell.state is LegState.REJECTED
    assert LegState.UNKNOWN in [s for s, _ in trade.sell.history]
    assert r.placed(UP) == ["s1s"]  # presumed never placed: still no retry on that venue
    (flatten,) = trade.unwinds
    assert (flatten.request.venue, flatten.state) == (BT, LegState.FILLED)
    assert r.risk.residual("BTC") == 0


# --- 5. a slow journal never abandons an unwind --------------------------------------------

def _failing_intents(r, failures):
    real = r.journal.record_intent_order
    calls = []

    def flaky(signal_id, leg, timeout=2.0):
        calls.append(leg.client_id)
        if failures is None or len(calls) <= failures:
            raise JournalError("journal busy for more than 2.0 s")
        return real(signal_id, leg, timeout)

    r.journal.record_intent_order = flaky
    return calls


def test_unwind_journal_stall_retries_the_intent_and_sends_the_hedge(rig):
    r = rig()
    r.venues[UP].script = ["reject"]  # the sell fails: the retry must go out
    calls = _failing_intents(r, failures=2)
    assert r.executor.submit(make_signal()) is None
    assert r.executor.wait_idle(5.0)
    (trade,) = r.trades
    (retry,) = trade.unwinds
    assert retry.state is LegState.FILLED and calls == ["s1r1"] * 3
    assert r.risk.residual("BTC") == 0 and r.risk.state is TradingState.ACTIVE
    alerts = r.incidents("unwind_journal_retry")
    assert len(alerts) == 2 and {a["severity"] for a in alerts} == {"critical"}


def test_unwind_journal_down_for_good_sends_nothing_reports_residual_and_halts(rig):
    r = rig()
    r.venues[UP].script = ["reject"]
    _failing_intents(r, failures=None)
    assert r.executor.submit(make_signal()) is None
    assert r.executor.wait_idle(5.0)
    assert r.placed(UP) == ["s1s"] and r.placed(BT) == ["s1b"]  # intent before send holds
    assert r.risk.residual("BTC") == D("0.01")
    assert r.incidents("residual_exposure")[0]["severity"] == "critical"
    assert r.risk.state is TradingState.HALTED and "journal" in r.risk.summary()["halt_reason"]


# --- 7. market legs succeed by value ------------------------------------------------------

@pytest.mark.parametrize("price, script, bought, state", [
    # the buy venue's price moved up 0.002%: 1,400,000 KRW buys 0.0099998 BTC, not 0.01
    (140_002_800, "fill", "0.0099998", LegState.FILLED),
    # Upbit-like: the buy ends "cancel" with 14 KRW of its funds left unspent
    (140_000_000, ("partial", 0.99999), "0.0099999", LegState.CANCELLED),
])
def test_market_leg_type_trade_with_buy_short_by_dust_counts_as_success(rig, price, script,
                                                                       bought, state):
    r = rig(leg_type="market")
    r.venues[BT].market_price = D(price)
    r.venues[BT].script = [script]
    assert r.executor.submit(make_signal()) is None
    assert r.executor.wait_idle(5.0)
    (trade,) = r.trades
    assert trade.buy.executed_volume == D(bought) and trade.sell.executed_volume == D("0.01")
    assert trade.buy.state is state and trade.unwinds == []
    s = r.risk.summary()
    assert s["successes"] == 1 and s["failures"] == 0
    assert r.executor.stats()["successes"] == 1
    assert r.risk.residual("BTC") == D(bought) - D("0.01")  # a few KRW of dust, booked as such
    assert not r.incidents("residual_exposure")
    r.journal.flush()
    (row,) = r.journal.query("SELECT status FROM signals")
    assert row["status"] == "filled"


# --- 10/11. stop never exits silently while a leg could fill -------------------------------

def _gate_placements(r, venue, hold):
    gate, entered = threading.Event(), threading.Event()
    place = r.venues[venue].place_order

    def slow(request, priority=False):
        if hold(request):
            entered.set()
            gate.wait(30)
        return place(request, priority)

    r.venues[venue].place_order = slow
    return gate, entered


def test_sigterm_while_a_venue_is_slow_journals_the_leg_that_may_fill(rig):
    r = rig()
    r.steps.run_free()
    gate, entered = _gate_placements(r, BT, lambda req: True)
    assert r.executor.submit(make_signal()) is None
    assert entered.wait(5)
    try:
        r.executor.stop(0.2)
        assert r.executor.unresolved() == [("s1", "s1b", "bithumb", "sent")]
        (incident,) = r.incidents("shutdown_unresolved")
        assert incident["severity"] == "critical" and "s1b" in incident["detail"]
        (order,) = r.journal.query("SELECT state FROM orders WHERE client_id='s1b'")
        assert order["state"] == "sent"
    finally:
        gate.set()


def test_shutdown_during_an_unwind_journals_the_unwind_order_left(rig):
    r = rig()
    r.steps.run_free()
    r.venues[UP].script = ["reject"]
    gate, entered = _gate_placements(r, UP, lambda req: req.client_id != "s1s")
    assert r.executor.submit(make_signal()) is None
    assert entered.wait(5)  # the retry is on its way to Upbit
    try:
        r.executor.stop(0.2)
        assert ("s1", "s1r1", "upbit", "sent") in r.executor.unresolved()
        (incident,) = r.incidents("shutdown_unresolved")
        assert incident["severity"] == "critical" and "s1r1" in incident["detail"]
    finally:
        gate.set()


def test_unwind_retry_left_unknown_is_resolved_before_any_flatten(rig):
    r = rig()
    r.venues[UP].script = ["reject", "timeout"]  # the sell fails; its retry fills, answer lost
    r.venues[UP].down.set()
    placed_retry = threading.Event()
    place = r.venues[UP].place_order

    def spy(request, priority=False):
        try:
            return place(request, priority)
        finally:
            if request.client_id == "s1r1":
                placed_retry.set()

    r.venues[UP].place_order = spy
    assert r.executor.submit(make_signal()) is None
    assert placed_retry.wait(5)
    wait_until(lambda: r.steps.waiting.is_set() or r.trades, message="resolver or booking")
    assert r.placed(BT) == ["s1b"] and r.placed(UP) == ["s1s", "s1r1"]  # no flatten, no 2nd retry
    assert r.executor.stats()["unresolved_orders"] == ["s1r1"]
    assert r.incidents("unwind_paused")[0]["severity"] == "critical"
    r.venues[UP].down.clear()
    r.steps.run_free()
    assert r.executor.wait_idle(5.0)
    (trade,) = r.trades
    (retry,) = trade.unwinds
    assert retry.state is LegState.FILLED and r.risk.residual("BTC") == 0
    assert r.placed(BT) == ["s1b"] and r.placed(UP) == ["s1s", "s1r1"]
    assert r.risk.ledger.open_reservations() == 0 and r.risk.summary()["in_flight"] == 0


def test_unwind_resumed_after_a_presumed_unplaced_retry_flattens_with_fresh_client_ids(rig):
    r = rig(unwind_attempts=1, not_found_window_s=2.0)
    r.venues[UP].script = ["reject", "lost"]  # the sell fails; its retry is never placed
    r.steps.run_free()
    assert r.executor.submit(make_signal()) is None
    assert r.executor.wait_idle(5.0)
    (trade,) = r.trades
    retry, flatten = trade.unwinds
    assert retry.client_id == "s1r1" and retry.state is LegState.REJECTED
    assert flatten.client_id == "s1f2" and (flatten.request.venue, flatten.state) == (BT, LegState.FILLED)
    assert r.placed(UP) == ["s1s", "s1r1"] and r.risk.residual("BTC") == 0


def test_unwinder_called_with_a_leg_not_final_sends_nothing(rig):
    # what the restart path gets if it hands over a one-legged trade still being looked up
    from karb.legs import Leg
    from karb.model import OrderRequest, OrderType, Side, TimeInForce

    r = rig()
    signal = make_signal("old")
    buy = Leg("buy", OrderRequest(BT, signal.market, Side.BUY, OrderType.LIMIT, "oldb",
                                  price=signal.buy_price, volume=signal.volume, tif=TimeInForce.IOC))
    sell = Leg("sell", OrderRequest(UP, signal.market, Side.SELL, OrderType.LIMIT, "olds",
                                    price=signal.sell_price, volume=signal.volume, tif=TimeInForce.IOC))
    buy.state, buy.executed_volume = LegState.FILLED, D("0.01")
    buy.executed_funds = D(1_400_000)
    sell.state = LegState.UNKNOWN
    reservation = r.risk.ledger.reserve("old", {})
    assert r.executor.unwinder.run(signal, reservation, buy, sell) == []
    assert r.placed(UP) == [] and r.placed(BT) == []
    assert r.incidents("unwind_deferred")[0]["severity"] == "critical"


def test_stop_gives_a_leg_being_resolved_its_last_look_at_once_and_books_it(rig):
    r = rig(fill_timeout_s=0.05)
    resolver = r.executor.resolver
    parked = threading.Event()

    def real_wait(seconds):  # the fake clock never makes the next look due: only a wake-up does
        parked.set()
        resolver._wake.wait(seconds)

    resolver.pause = real_wait
    r.venues[UP].script = ["ack"]
    r.venues[UP].down.set()
    assert r.executor.submit(make_signal()) is None
    assert parked.wait(5)  # looked once, failed, now backing off
    r.venues[UP].down.clear()  # the venue answers again
    r.executor.stop(5.0)
    (trade,) = r.trades
    assert trade.sell.state is LegState.FILLED and r.placed(UP) == ["s1s"]
    assert r.executor.unresolved() == [] and not r.incidents("shutdown_unresolved")


# --- a fill the leg-resolver finds; a trade it gives up on ---------------------------------

class LegacyCoinFeeVenue(StubVenue):
    """Legacy Bithumb: the buy's fee is charged in the coin and reported per execution."""

    def _result(self, request, fraction, status):
        result = super()._result(request, fraction, status)
        if not result.fills or request.side.name != "BUY":
            return result
        coin_fee = (result.executed_volume * self.fee_rate).quantize(D("1e-10"))
        fill = result.fills[0]
        fills = (Fill(fill.price, fill.volume, fill.funds, None, coin_fee, "BTC"),)
        return OrderResult(**{**_fields(result), "fills": fills, "paid_fee": coin_fee * fill.price})


def _legacy_rig(tmp_path, **execution):
    r = Rig(tmp_path, **execution)
    r.venues[BT] = LegacyCoinFeeVenue(BT, "0.0004")
    for holder in (r.executor, r.executor.placer, r.executor.resolver):
        holder.clients = r.venues
    r.executor.start()
    return r


def test_coin_fee_of_a_buy_resolved_by_the_leg_resolver_is_booked_off_the_coin(tmp_path):
    # control: the same legacy buy answered at once books its coin fee off the coin
    ok = _legacy_rig(tmp_path / "ok")
    try:
        assert ok.executor.submit(make_signal()) is None
        assert ok.executor.wait_idle(5.0)
        expected_btc = ok.risk.ledger.free(BT, "BTC")
        assert expected_btc == D(1) + D("0.01") - D("0.000004")
    finally:
        ok.close()
    # the buy's answer comes only later, through the leg-resolver (polls failed meanwhile)
    r = _legacy_rig(tmp_path / "late", fill_timeout_s=0.05)
    try:
        r.venues[BT].script = ["ack"]
        r.venues[BT].down.set()
        assert r.executor.submit(make_signal()) is None
        wait_until(lambda: r.steps.waiting.is_set() or r.trades, message="resolver")
        r.venues[BT].down.clear()
        r.steps.run_free()
        assert r.executor.wait_idle(5.0)
        # the venue holds 1.009996 BTC; a later flatten of 0.01 would fail for funds
        assert r.risk.ledger.free(BT, "BTC") == expected_btc
    finally:
        r.close()


def test_after_resolver_gives_up_and_operator_resumes_balance_sync_still_adopts_venue_balances(tmp_path):
    r = Rig(tmp_path / "rig", fill_timeout_s=0.05, resolve_timeout_s=1.0)
    r.executor.start()
    try:
        r.venues[UP].script = ["ack"]
        r.venues[UP].down.set()  # the sell can never be looked up
        assert r.executor.submit(make_signal()) is None
        wait_until(lambda: r.steps.waiting.is_set(), message="resolver")
        r.steps.run_free()
        wait_until(lambda: r.risk.summary()["halt_reason"], message="give-up halt")
        r.risk.resume()  # `karb resume` after the operator checked the venue
        r.venues[UP].balances = balances(KRW=10_000_000, BTC=1)
        sync = BalanceSync(r.venues, r.risk, r.journal, r.config, r.clock)
        sync.sync(UP)
        r.clock.advance(10.0)  # long past the settle period, nothing trading
        # the venue's balances must become the ledger's truth again
        assert sync.sync(UP), (r.risk.ledger.open_reservations(), sync.stats())
        assert r.risk.ledger.free(UP, "BTC") == 1
        # but what the stranded sell may have sold is still held from every other trade
        assert r.risk.ledger.available(UP, "BTC") == D("0.99")
        assert r.risk.summary()["in_flight"] == 1
    finally:
        r.close()


def test_half_open_probe_trade_the_resolver_gave_up_on_does_not_block_trading_after_resume(tmp_path):
    r = Rig(tmp_path / "rig", fill_timeout_s=0.05, resolve_timeout_s=1.0)
    r.risk.circuit = CircuitBreaker(r.clock, failures=1, reset_s=30.0)
    r.executor.start()
    try:
        r.risk.circuit.record_failure("earlier")  # opened by an earlier failed trade
        r.clock.advance(31.0)
        assert r.risk.circuit.state is CircuitState.HALF_OPEN
        r.venues[UP].script = ["ack"]
        r.venues[UP].down.set()  # the probe's sell can never be looked up
        assert r.executor.submit(make_signal()) is None  # the probe
        wait_until(lambda: r.steps.waiting.is_set(), message="resolver")
        r.steps.run_free()
        wait_until(lambda: r.risk.summary()["halt_reason"], message="give-up halt")
        r.risk.resume()  # the operator checked the venue and ran `karb resume`
        r.clock.advance(3600.0)
        assert r.risk.blocked() is None
    finally:
        r.close()
