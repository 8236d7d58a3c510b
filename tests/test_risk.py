"""Risk gate, PnL booking, automatic halts, circuit breaker transitions, inventory transfers."""
from decimal import Decimal as D

import pytest

from karb.circuit import CircuitBreaker, CircuitState
from karb.clock import NS_PER_S, ManualClock
from karb.model import Venue
from karb.risk import Risk, TradeOutcome, TradingState
from tests.trading_fixtures import balances, make_config, make_rules, make_signal

UP, BT = Venue.UPBIT, Venue.BITHUMB


def _risk(tmp_path, clock=None, **risk):
    config = make_config(tmp_path, risk={"max_trade_krw": "5000000", **risk})
    r = Risk(config, make_rules(config), clock or ManualClock())
    r.ledger.load(BT, balances(KRW=10_000_000, BTC=1))
    r.ledger.load(UP, balances(KRW=10_000_000, BTC=1))
    return r


def _flat(realised_krw=0, success=True):
    # 0.01 BTC both ways; fees 1,000 KRW; sell funds chosen for the wanted realised PnL
    return TradeOutcome("KRW-BTC", success, D("0.01"), D(1_400_000), D("0.01"),
                        D(1_401_000) + D(realised_krw), D(1_000), D(140_000_000))


# --- PnL --------------------------------------------------------------------------------

def test_outcome_flat_realises_sell_minus_buy_minus_fees_exactly():
    o = TradeOutcome("KRW-BTC", True, D("0.01"), D("1400000"), D("0.01"), D("1407000"),
                     D("560") + D("703.5"))
    assert o.realised_krw == D("5736.5")
    assert o.residual == 0


def test_outcome_with_residual_realises_the_matched_part_only():
    # bought 0.01 for 1,400,000; sold 0.004 for 563,200; fees 600
    o = TradeOutcome("KRW-BTC", False, D("0.01"), D(1_400_000), D("0.004"), D(563_200), D(600))
    assert o.residual == D("0.006")
    assert o.realised_krw == D("0.004") * D(140_800_000) - D("0.004") * D(140_000_000) - 600


def test_outcome_with_nothing_filled_on_one_side_realises_only_fees():
    o = TradeOutcome("KRW-BTC", False, D("0.01"), D(1_400_000), D(0), D(0), D(560))
    assert o.realised_krw == D(-560)


# --- the gate ---------------------------------------------------------------------------

def test_approve_with_room_reserves_both_legs_worst_case():
    r = _risk(None)
    res = r.approve(make_signal(volume="0.01", buy_price="140000000"))
    assert not isinstance(res, str)
    assert res.held(BT, "KRW") == D("0.01") * D(140_000_000) * D("1.0004")
    assert res.held(UP, "BTC") == D("0.01")
    assert r.summary()["in_flight"] == 1


@pytest.mark.parametrize("block", ["kill", "halt", "value", "position", "balance"])
def test_approve_with_a_limit_hit_refuses_with_a_reason_and_holds_nothing(tmp_path, block):
    r = _risk(tmp_path, max_position={"BTC": "0.05"})
    signal = make_signal(volume="0.01")
    if block == "kill":
        r.kill.engage("test")
    elif block == "halt":
        r.halt("manual")
    elif block == "value":
        signal = make_signal(volume="0.04")  # 5.6M KRW > max_trade_krw 5M
    elif block == "position":
        r.finish(make_signal("old"), r.approve(make_signal("old")),
                 TradeOutcome("KRW-BTC", False, D("0.045"), D(6_300_000), fees=D(0),
                              ref_price=D(140_000_000)))
    else:
        r.ledger.load(UP, balances(KRW=0, BTC="0.001"))
    reason = r.approve(signal)
    assert isinstance(reason, str) and reason
    assert r.ledger.open_reservations() == 0


def test_approve_twice_for_the_same_krw_refuses_the_second():
    r = _risk(None)
    r.ledger.load(BT, balances(KRW=2_000_000))
    assert not isinstance(r.approve(make_signal("a", volume="0.01")), str)  # 1,400,560 held
    assert isinstance(r.approve(make_signal("b", volume="0.01")), str)


def test_finish_books_pnl_fees_and_releases_the_reservation():
    r = _risk(None)
    signal = make_signal()
    res = r.approve(signal)
    realised = r.finish(signal, res, _flat(realised_krw=5_000))
    s = r.summary()
    assert realised == D(5_000)
    assert (s["realised_pnl_krw"], s["fees_krw"], s["trades"], s["successes"]) == (D(5000), D(1000), 1, 1)
    assert s["reserved"] == {} and s["in_flight"] == 0


def test_finish_with_residual_tracks_exposure_in_coin_and_krw():
    r = _risk(None)
    signal = make_signal()
    r.finish(signal, r.approve(signal),
             TradeOutcome("KRW-BTC", False, D("0.01"), D(1_400_000), D("0.004"), D(563_200),
                          D(600), D(140_500_000)))
    assert r.residual("BTC") == D("0.006")
    assert r.summary()["residual_krw"]["BTC"] == D("0.006") * D(140_500_000)


# --- halts ------------------------------------------------------------------------------

def test_finish_with_daily_loss_reaching_the_limit_halts(tmp_path):
    r = _risk(tmp_path, daily_loss_limit_krw="10000", max_drawdown_krw="1000000")
    for i in range(2):
        s = make_signal(f"s{i}")
        r.finish(s, r.approve(s), _flat(realised_krw=-5_000))
    assert r.state is TradingState.HALTED
    assert "daily realised loss" in r.blocked()
    r.resume()
    assert r.state is TradingState.ACTIVE


def test_finish_after_midnight_kst_starts_a_new_day(tmp_path):
    clock = ManualClock(wall_ns=1_750_000_000 * NS_PER_S)
    r = _risk(tmp_path, clock=clock, daily_loss_limit_krw="10000", max_drawdown_krw="1000000")
    s = make_signal("a")
    r.finish(s, r.approve(s), _flat(realised_krw=-6_000))
    clock.set_wall(clock.wall_ns() + 86_400 * NS_PER_S)
    s = make_signal("b")
    r.finish(s, r.approve(s), _flat(realised_krw=-6_000))
    assert r.state is TradingState.ACTIVE
    assert r.summary()["realised_today_krw"] == D(-6_000)
    assert r.summary()["realised_pnl_krw"] == D(-12_000)


def test_finish_with_drawdown_from_the_days_peak_halts(tmp_path):
    r = _risk(tmp_path, daily_loss_limit_krw="1000000", max_drawdown_krw="20000")
    for i, pnl in enumerate((30_000, -15_000, -6_000)):
        s = make_signal(f"s{i}")
        r.finish(s, r.approve(s), _flat(realised_krw=pnl))
    assert r.state is TradingState.HALTED
    assert "drawdown 21000" in r.blocked()


def test_finish_with_consecutive_failures_opens_circuit_then_halts(tmp_path):
    r = _risk(tmp_path, circuit_failures=2, halt_after_failures=3, circuit_reset_s=1)
    clock = r.clock
    for i in range(2):
        s = make_signal(f"s{i}")
        r.finish(s, r.approve(s), _flat(success=False))
    assert r.circuit.state is CircuitState.OPEN
    assert "circuit open" in r.approve(make_signal("x"))
    clock.advance(1.0)
    probe = make_signal("probe")
    res = r.approve(probe)
    assert not isinstance(res, str)
    r.finish(probe, res, _flat(success=False))
    assert r.state is TradingState.HALTED


def _short(realised_krw=0, clean=True, bought="0.004", sold="0.004"):
    # a trade that filled 0.004 of its 0.01 on both sides (or as given), unwound flat
    buy_funds = D(bought) * D(140_000_000)
    return TradeOutcome("KRW-BTC", False, D(bought), buy_funds, D(sold),
                        D(sold) * D(140_000_000) + D(400) + D(realised_krw), D(400),
                        D(140_000_000), clean=clean)


@pytest.mark.parametrize("outcome, status", [
    (_flat(success=True), "filled"),
    (_short(realised_krw=0), "shortfall"),       # break-even counts as harmless
    (_short(realised_krw=250), "shortfall"),
    (_short(realised_krw=-1), "flat"),           # any loss is a failure
    (_short(clean=False), "flat"),               # an order refused, errored or looked up
    (_short(bought="0", sold="0"), "flat"),      # nothing filled: the book was not there
    (_short(bought="0.004", sold="0.003"), "residual"),
])
def test_outcome_status_separates_harmless_shortfalls_from_failures(outcome, status):
    assert outcome.status == status
    assert outcome.harmless is (status == "shortfall")


def test_finish_with_shortfalls_feeds_neither_the_breaker_nor_the_failure_streak(tmp_path):
    # competitors took part of the level: legs short-filled, unwound flat at no loss. They are
    # not failures (no trip, no halt) and not successes (they do not reset the streak either)
    r = _risk(tmp_path, circuit_failures=3, halt_after_failures=3)

    def book(name, outcome):
        s = make_signal(name)
        r.finish(s, r.approve(s), outcome)

    book("f1", _flat(success=False))
    for i in range(20):
        book(f"short{i}", _short(realised_krw=i))
    book("f2", _flat(success=False))
    s = r.summary()
    assert (s["trades"], s["successes"], s["shortfalls"], s["failures"]) == (22, 0, 20, 2)
    assert r.circuit.state is CircuitState.CLOSED and r.circuit.consecutive_failures == 2
    assert r.state is TradingState.ACTIVE
    book("f3", _flat(success=False))  # the shortfalls in between did not forgive f1 and f2
    assert r.state is TradingState.HALTED and "3 consecutive failed trades" in r.blocked()


def test_finish_with_a_shortfall_as_half_open_probe_frees_the_probe_without_closing(tmp_path):
    r = _risk(tmp_path, circuit_failures=1, circuit_reset_s=1)
    s = make_signal("f")
    r.finish(s, r.approve(s), _flat(success=False))
    r.clock.advance(1.0)
    probe = make_signal("probe")
    res = r.approve(probe)
    assert not isinstance(res, str)
    assert "probe trade is in flight" in r.approve(make_signal("other"))
    r.finish(probe, res, _short(realised_krw=10))
    assert r.circuit.state is CircuitState.HALF_OPEN  # not closed by a shortfall ...
    assert not isinstance(r.approve(make_signal("next")), str)  # ... but the next may probe


# --- circuit breaker ----------------------------------------------------------------------

def test_circuit_with_n_failures_opens_then_half_opens_after_timeout_then_closes_on_success():
    clock = ManualClock()
    cb = CircuitBreaker(clock, failures=3, reset_s=30)
    for _ in range(2):
        assert cb.acquire() is None
        cb.record_failure()
    assert cb.state is CircuitState.CLOSED
    cb.record_failure()
    assert cb.state is CircuitState.OPEN and cb.acquire() is not None
    clock.advance(29.9)
    assert cb.state is CircuitState.OPEN
    clock.advance(0.1)
    assert cb.state is CircuitState.HALF_OPEN
    assert cb.acquire() is None  # the probe
    assert cb.acquire() is not None and cb.blocked() is not None  # only one probe at a time
    cb.record_success()
    assert cb.state is CircuitState.CLOSED and cb.consecutive_failures == 0


def test_circuit_half_open_probe_failure_reopens_for_another_timeout():
    clock = ManualClock()
    cb = CircuitBreaker(clock, failures=1, reset_s=10)
    cb.record_failure()
    clock.advance(10)
    assert cb.acquire() is None
    cb.record_failure()
    assert cb.state is CircuitState.OPEN and cb.trips == 2
    clock.advance(9)
    assert cb.state is CircuitState.OPEN
    clock.advance(1)
    assert cb.state is CircuitState.HALF_OPEN


def test_circuit_cancelled_probe_frees_the_probe_slot():
    clock = ManualClock()
    cb = CircuitBreaker(clock, failures=1, reset_s=1)
    cb.record_failure()
    clock.advance(1)
    assert cb.acquire() is None
    cb.cancel()
    assert cb.acquire() is None


def test_circuit_success_resets_the_consecutive_count_but_not_the_window():
    cb = CircuitBreaker(ManualClock(), failures=2)
    cb.record_failure()
    cb.record_success()
    assert cb.consecutive_failures == 0 and cb.state is CircuitState.CLOSED
    cb.record_failure()
    assert cb.state is CircuitState.OPEN  # two failures within the window


def test_circuit_with_zero_failures_is_a_config_error():
    with pytest.raises(ValueError):
        CircuitBreaker(ManualClock(), failures=0)


