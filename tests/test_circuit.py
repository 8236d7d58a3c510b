"""Circuit breaker: failures counted in a sliding window; only the half-open probe closes it."""
from decimal import Decimal as D

from karb.circuit import CircuitBreaker, CircuitState
from karb.clock import ManualClock
from karb.model import Venue
from karb.risk import Risk, TradeOutcome
from tests.trading_fixtures import balances, make_config, make_rules, make_signal

UP, BT = Venue.UPBIT, Venue.BITHUMB


def _risk(tmp_path, **risk):
    config = make_config(tmp_path, risk={"max_trade_krw": "5000000", **risk})
    r = Risk(config, make_rules(config), ManualClock())
    r.ledger.load(BT, balances(KRW=100_000_000, BTC=10))
    r.ledger.load(UP, balances(KRW=100_000_000, BTC=10))
    return r


def _outcome(success):
    return TradeOutcome("KRW-BTC", success, D("0.01"), D(1_400_000), D("0.01"), D(1_401_000),
                        D(1_000), D(140_000_000))


def test_circuit_success_of_a_trade_approved_before_it_opened_keeps_it_open(tmp_path):
    r = _risk(tmp_path, circuit_failures=2, halt_after_failures=10)
    old = make_signal("old")
    old_res = r.approve(old)  # approved while closed, still in flight
    for i in range(2):
        s = make_signal(f"f{i}")
        r.finish(s, r.approve(s), _outcome(False))
    assert r.circuit.state is CircuitState.OPEN
    r.finish(old, old_res, _outcome(True))  # finishes well after the breaker opened
    assert r.circuit.state is CircuitState.OPEN
    assert "circuit open" in r.approve(make_signal("x"))


def test_circuit_half_open_probe_success_closes_but_an_older_trade_success_does_not(tmp_path):
    r = _risk(tmp_path, circuit_failures=1, circuit_reset_s=1, halt_after_failures=10)
    old = make_signal("old")
    old_res = r.approve(old)
    f = make_signal("f")
    r.finish(f, r.approve(f), _outcome(False))
    r.clock.advance(1)
    probe = make_signal("probe")
    probe_res = r.approve(probe)
    assert not isinstance(probe_res, str) and r.circuit.state is CircuitState.HALF_OPEN
    r.finish(old, old_res, _outcome(True))
    assert r.circuit.state is CircuitState.HALF_OPEN
    r.finish(probe, probe_res, _outcome(True))
    assert r.circuit.state is CircuitState.CLOSED


def test_circuit_four_failures_and_a_success_repeated_opens_within_the_window(tmp_path):
    r = _risk(tmp_path, circuit_failures=5, circuit_window_s=300, halt_after_failures=10)
    outcomes = [False, False, False, False, True] * 2
    for n, outcome in enumerate(outcomes):
        s = make_signal(f"s{n}")
        res = r.approve(s)
        if isinstance(res, str):
            break
        r.finish(s, res, _outcome(outcome))
        r.clock.advance(10)
    assert r.circuit.state is CircuitState.OPEN
    assert n == 6 and "circuit open" in res  # the 5th failure in 60 s opened it
    assert r.circuit.consecutive_failures == 1  # the halt's count still resets on success


def test_circuit_failures_older_than_the_window_do_not_count():
    clock = ManualClock()
    cb = CircuitBreaker(clock, failures=3, reset_s=30, window_s=300)
    cb.record_failure()
    cb.record_failure()
    clock.advance(300.1)
    cb.record_failure()
    assert cb.state is CircuitState.CLOSED
    clock.advance(100)
    cb.record_failure()
    cb.record_failure()
    assert cb.state is CircuitState.OPEN


def test_circuit_closed_by_its_probe_starts_a_fresh_window():
    clock = ManualClock()
    cb = CircuitBreaker(clock, failures=2, reset_s=1, window_s=300)
    cb.record_failure()
    cb.record_failure()
    clock.advance(1)
    assert cb.acquire("probe") is None
    cb.record_success("probe")
    assert cb.state is CircuitState.CLOSED
    cb.record_failure()
    assert cb.state is CircuitState.CLOSED


def test_circuit_restore_replays_failures_at_their_real_times_not_now():
    s = 1_000_000_000
    for later_s, state in ((49.0, CircuitState.OPEN), (51.0, CircuitState.CLOSED)):
        clock = ManualClock()
        cb = CircuitBreaker(clock, failures=3, reset_s=30.0, window_s=300.0)
        cb.restore(3, [400 * s, 250 * s, 10 * s])  # the oldest is outside the window
        assert cb.state is CircuitState.CLOSED and cb.consecutive_failures == 3
        clock.advance(later_s)  # the one 250 s old leaves the window 50 s from now
        cb.record_failure()
        assert cb.state is state, later_s


def test_circuit_restore_opens_at_the_failure_that_tripped_it_and_ignores_failures_while_open():
    clock = ManualClock()
    cb = CircuitBreaker(clock, failures=2, reset_s=30.0, window_s=300.0)
    s = 1_000_000_000
    # tripped 50 s ago (never journalled); a failure 40 s ago came while it was OPEN
    cb.restore(3, [60 * s, 50 * s, 40 * s])
    assert cb.state is CircuitState.HALF_OPEN  # 50 s after the trip, not 40 s
    cb.restore(2, [20 * s, 10 * s])
    assert cb.state is CircuitState.OPEN
    clock.advance(19.0)
    assert cb.state is CircuitState.OPEN
    clock.advance(1.0)
    assert cb.state is CircuitState.HALF_OPEN


def test_circuit_restore_of_a_trip_stays_open_until_reset_after_it_opened():
    clock = ManualClock()
    cb = CircuitBreaker(clock, failures=5, reset_s=30.0)
    cb.restore(0, [], opened_age_ns=12 * 1_000_000_000)
    assert cb.state is CircuitState.OPEN and cb.blocked()
    clock.advance(18.0)
    assert cb.state is CircuitState.HALF_OPEN


def test_circuit_tells_its_listener_of_every_trip_and_close_once():
    clock = ManualClock()
    seen = []
    cb = CircuitBreaker(clock, failures=2, reset_s=1.0, on_change=seen.append)
    cb.record_failure("a")
    cb.record_failure("b")
    cb.record_failure("late")  # while OPEN: no new trip
    assert seen == [CircuitState.OPEN]
    clock.advance(1.0)
    assert cb.acquire("probe") is None
    cb.record_failure("probe")  # the probe failed: open again
    clock.advance(1.0)
    assert cb.acquire("probe2") is None
    cb.record_success("probe2")
    assert seen == [CircuitState.OPEN, CircuitState.OPEN, CircuitState.CLOSED]
