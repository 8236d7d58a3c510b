"""What survives a restart: the day's PnL and peak, residuals, failure streak and halts are
rebuilt from the journal; a halt is cleared only by ``karb resume`` (also while running); the
kill file is read before the first strategy pass; Ctrl-C exits 130."""
import os
import signal
from decimal import Decimal as D

import pytest
import yaml

from karb.cli import main
from karb.circuit import CircuitState
from karb.clock import NS_PER_S, ManualClock, SystemClock
from karb.config import parse_config
from karb.engine import Engine
from karb.journal import Journal
from karb.model import Venue
from karb.risk import Risk, TradeOutcome
from tests.trading_fixtures import make_config, make_rules, make_signal


class Books:
    """A journal and a Risk on it, as one run of the engine would have them."""

    def __init__(self, tmp_path, clock=None, **risk):
        self._open(make_config(tmp_path, risk=risk), clock)

    def trade(self, signal_id, realised, residual="0", status=None):
        signal = make_signal(signal_id)
        self.journal.record_intent(signal, (), {})
        status = status or ("filled" if D(realised) > 0 else "flat" if D(residual) == 0 else "residual")
        self.journal.record_result(signal_id, status, {}, D(realised), D(1), D(residual))
        reservation = self.risk.ledger.reserve(signal_id, {})
        bought = D("0.01") + D(residual)
        self.risk.finish(signal, reservation, TradeOutcome(
            "KRW-BTC", status == "filled", bought, D(0), D("0.01"), D(realised) + 1, D(1), D(140_000_000),
            clean=status == "shortfall"))

    def restart(self, clock=None):
        """A new run on the same journal; ``clock`` (both its clocks) stands for the new process."""
        self.journal.stop()
        return Books.__new__(Books)._open(self.config, clock)

    def _open(self, config, clock=None):
        clock = clock or SystemClock()
        self.config, self.clock = config, clock
        self.journal = Journal(config.journal.path, clock)
        self.journal.start()
        self.risk = Risk(config, make_rules(config), clock)
        self.restored = self.risk.rebuild(self.journal)
        return self

    def close(self):
        self.journal.stop()


def test_restart_rebuilds_the_days_pnl_peak_counts_and_residual_from_the_journal(tmp_path):
    books = Books(tmp_path)
    books.trade("a", "5000")
    books.trade("b", "-2000", residual="0.002")
    books.trade("c", "-1000")
    before = books.risk.summary()
    books.journal.flush()
    after = books.restart()
    try:
        s = after.risk.summary()
        assert s["realised_today_krw"] == D(2000) == before["realised_today_krw"]
        assert s["drawdown_krw"] == D(3000) == before["drawdown_krw"]  # peak 5000 kept
        assert (s["trades"], s["successes"], s["failures"]) == (3, 1, 2)
        assert s["residual"] == {"BTC": D("0.002")} == before["residual"]
        assert after.risk.circuit.consecutive_failures == 2
    finally:
        after.close()


def test_restart_rebuilds_the_failure_streak_and_counts_without_counting_shortfalls(tmp_path):
    books = Books(tmp_path, halt_after_failures=3)
    books.trade("a", "-10")
    books.trade("b", "0", status="shortfall")
    books.trade("c", "-10")
    books.trade("d", "15", status="shortfall")
    assert books.risk.circuit.consecutive_failures == 2
    books.journal.flush()
    after = books.restart()
    try:
        s = after.risk.summary()
        assert (s["trades"], s["successes"], s["shortfalls"], s["failures"]) == (4, 0, 2, 2)
        assert after.risk.circuit.consecutive_failures == 2  # the shortfalls neither reset nor add
        after.trade("e", "-10")
        assert "3 consecutive failed trades" in after.risk.blocked()
    finally:
        after.close()


def test_restart_after_a_loss_limit_halt_stays_halted_with_the_limit_still_counted(tmp_path):
    books = Books(tmp_path, daily_loss_limit_krw="3000")
    books.trade("a", "-3500")
    assert "daily realised loss" in books.risk.blocked()
    after = books.restart()
    try:
        assert "daily realised loss" in after.risk.blocked()
        assert after.risk.summary()["realised_today_krw"] == D(-3500)
    finally:
        after.close()


def _config_file(tmp_path):
    data = {"markets": ["KRW-BTC"],
            "venues": {v: {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9",
                           "taker_fee": "0.0005", "maker_fee": "0.0005"}
                       for v in ("upbit", "bithumb")},
            "journal": {"path": str(tmp_path / "journal.sqlite")},
            "risk": {"kill_switch_file": str(tmp_path / "KILL")}}
    path = tmp_path / "karb.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_halt_survives_restart_until_karb_resume_clears_it(tmp_path, capsys):
    path = _config_file(tmp_path)
    books = Books(tmp_path)
    books.risk.halt("drawdown 300000 KRW reached the limit")
    after = books.restart()
    assert "drawdown" in after.risk.blocked()
    after.close()
    assert main(["resume", "--config", str(path), "--reason", "checked the venue"]) == 0
    assert "halt cleared (drawdown" in capsys.readouterr().out
    again = after.restart()
    try:
        assert again.risk.blocked() is None and again.restored["halt"] is None
    finally:
        again.close()


def test_karb_resume_while_the_engine_runs_clears_the_halt_within_a_poll(tmp_path):
    path = _config_file(tmp_path)
    books = Books(tmp_path)
    try:
        books.risk.halt("10 consecutive failed trades")
        assert books.risk.poll_resume() is False and books.risk.blocked()
        assert main(["resume", "--config", str(path)]) == 0
        assert books.risk.poll_resume() is True
        assert books.risk.blocked() is None
        books.risk.halt("again")  # a later halt needs a later resume
        assert books.risk.poll_resume() is False and "again" in books.risk.blocked()
    finally:
        books.close()


def test_second_halt_raised_while_halted_is_journalled_and_not_cleared_by_resume_of_the_first(
        tmp_path, capsys):
    path = _config_file(tmp_path)
    books = Books(tmp_path)
    try:
        books.risk.halt("daily realised loss reached the limit")
        # the leg-resolver gives up on an order that may still fill (executor._give_up)
        books.risk.halt("unresolved order s9s on upbit (unknown)")
        reasons = [r["reason"] for r in books.journal.query(
            "SELECT reason FROM risk_events WHERE kind='halt' ORDER BY id")]
        assert any("unresolved order" in reason for reason in reasons), reasons
        for shown in (books.risk.blocked(), books.risk.summary()["halt_reason"]):
            assert "daily realised loss" in shown and "unresolved order s9s" in shown
        # the operator is shown both halts and the resume clears exactly those
        assert main(["resume", "--config", str(path), "--reason", "checked both"]) == 0
        out = capsys.readouterr().out
        assert "daily realised loss" in out and "unresolved order s9s" in out
        # a halt raised after the resume request was written (before the engine saw it)
        books.risk.halt("one-legged trade t7 left 0.01 BTC")
        assert books.risk.poll_resume() is True
        assert "one-legged trade t7" in books.risk.blocked()
        assert "daily realised loss" not in books.risk.blocked()
        assert "unresolved order" not in books.risk.blocked()
        books = books.restart()
        assert [h["reason"] for h in books.journal.active_halts()] == ["one-legged trade t7 left 0.01 BTC"]
        assert "one-legged trade t7" in books.risk.blocked()
    finally:
        books.close()


def test_karb_resume_does_not_clear_a_halt_journalled_after_it_listed_the_halts(tmp_path):
    books = Books(tmp_path)
    try:
        books.risk.halt("drawdown 300000 KRW reached the limit")
        shown = books.journal.active_halts()  # what `karb resume` printed
        books.risk.halt("unresolved order s9s on upbit (unknown)")  # meanwhile, in the engine
        books.journal.record_resume("checked the drawdown", shown)
        assert books.risk.poll_resume() is True
        assert "unresolved order s9s" in books.risk.blocked()
        assert [h["reason"] for h in books.journal.active_halts()] == [
            "unresolved order s9s on upbit (unknown)"]
    finally:
        books.close()


def test_a_halt_already_active_is_not_journalled_again_on_every_check(tmp_path):
    books = Books(tmp_path, max_stale_s=1.0)
    try:
        for now_s in range(0, 10):  # market data stale on every strategy pass for 9 s
            books.risk.note_market_data(False, now_s * NS_PER_S)
        halts = books.journal.query("SELECT reason FROM risk_events WHERE kind='halt'")
        assert len(halts) == 1 and "market data stale" in halts[0]["reason"]
    finally:
        books.close()


def test_breaker_opened_by_five_failures_in_the_window_is_still_open_after_a_restart(tmp_path):
    books = Books(tmp_path)
    for n, realised in enumerate(["-1", "-1", "-1", "-1", "5000", "-1"]):
        books.trade(f"t{n}", realised)
    assert books.risk.circuit.state is CircuitState.OPEN  # 5 failures within 300 s
    books.journal.flush()
    books = books.restart()
    try:
        assert books.risk.circuit.state is CircuitState.OPEN, books.restored
    finally:
        books.close()


def _clock_after(clock, seconds):
    """The clocks of a new process ``seconds`` of wall time later (a monotonic origin of its own)."""
    return ManualClock(monotonic_ns=7 * NS_PER_S, wall_ns=clock.wall_ns() + int(seconds * NS_PER_S))


def test_breaker_open_at_a_restart_turns_half_open_reset_s_after_it_opened_not_after_the_start(tmp_path):
    clock = ManualClock(wall_ns=1_750_042_800 * NS_PER_S)  # 12:00 KST
    books = Books(tmp_path, clock)
    for n in range(5):
        books.trade(f"t{n}", "-1")
        clock.advance(1.0)
    assert books.risk.circuit.state is CircuitState.OPEN  # opened 1 s ago
    books = books.restart(_clock_after(clock, 19.0))  # 20 s after it opened (reset 30 s)
    try:
        assert books.risk.circuit.state is CircuitState.OPEN, books.restored
        books.clock.advance(9.0)
        assert books.risk.circuit.state is CircuitState.OPEN
        books.clock.advance(1.0)
        assert books.risk.circuit.state is CircuitState.HALF_OPEN
        books = books.restart(_clock_after(books.clock, 60.0))  # the probe never ran
        assert books.risk.circuit.state is CircuitState.HALF_OPEN, books.restored
        # long after the failures left the window, the journalled trip still says HALF_OPEN
        books = books.restart(_clock_after(books.clock, 600.0))
        assert books.risk.circuit.state is CircuitState.HALF_OPEN, books.restored
        assert books.risk.circuit.acquire("probe") is None
        assert books.risk.circuit.blocked()  # one probe at a time
    finally:
        books.close()


def test_failures_older_than_the_window_are_not_restamped_as_now_at_a_restart(tmp_path):
    clock = ManualClock(wall_ns=1_750_042_800 * NS_PER_S)  # 12:00 KST
    books = Books(tmp_path, clock)
    for n in range(4):
        books.trade(f"old{n}", "-1")
    clock.advance(400.0)  # the window is 300 s
    books.trade("new", "-1")
    assert books.risk.circuit.state is CircuitState.CLOSED
    books = books.restart(_clock_after(clock, 5.0))
    try:
        assert books.risk.circuit.state is CircuitState.CLOSED, books.restored
        assert books.risk.circuit.consecutive_failures == 5  # halt_after_failures still counts them
        # the one recent failure is in the window with its real time: 4 more open it now
        for n in range(4):
            books.trade(f"more{n}", "-1")
        assert books.risk.circuit.state is CircuitState.OPEN
    finally:
        books.close()


def test_breaker_closed_by_its_probe_stays_closed_after_a_restart(tmp_path):
    clock = ManualClock(wall_ns=1_750_042_800 * NS_PER_S)  # 12:00 KST
    books = Books(tmp_path, clock)
    for n in range(5):
        books.trade(f"t{n}", "-1")
    clock.advance(31.0)
    assert books.risk.circuit.acquire("probe") is None  # half-open: the probe
    books.trade("probe", "5000")
    assert books.risk.circuit.state is CircuitState.CLOSED
    books = books.restart(_clock_after(clock, 5.0))
    try:
        assert books.risk.circuit.state is CircuitState.CLOSED, books.restored
        books.trade("after", "-1")  # the failures before the close were forgiven by the probe
        assert books.risk.circuit.state is CircuitState.CLOSED
    finally:
        books.close()


class ListedClient:
    """A venue that lists KRW-BTC and nothing else: enough for a dry-run engine's start."""

    def __init__(self, venue):
        self.venue = venue

    def get_markets(self):
        return ["KRW-BTC"]

    def get_market_info(self, markets):
        return []

    def close(self):
        pass


def _engine_config(tmp_path):
    return parse_config({
        "markets": ["KRW-BTC"],
        "venues": {v: {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9",
                           "taker_fee": "0.0005", "maker_fee": "0.0005"}
                   for v in ("upbit", "bithumb")},
        "journal": {"path": str(tmp_path / "j.sqlite")},
        "monitor": {"metrics_port": 0},
        "risk": {"kill_switch_file": str(tmp_path / "KILL")},
    })


def test_engine_start_with_kill_file_present_blocks_the_first_strategy_pass(tmp_path):
    (tmp_path / "KILL").write_text("karb kill\n", encoding="utf-8")
    engine = Engine(_engine_config(tmp_path), {v: ListedClient(v) for v in Venue}, "dry_run")
    seen = []
    start_strategy = engine.strategy.start

    def spy():
        seen.append(engine.risk.blocked())  # what the strategy's first pass would be told
        start_strategy()

    engine.strategy.start = spy
    try:
        engine.start()
        assert seen and seen[0] and "kill switch" in seen[0]
        assert "kill switch" in engine.executor.submit(make_signal("first"))
    finally:
        engine.stop(timeout_s=3)


def test_engine_start_with_a_journalled_halt_is_halted_before_the_strategy_starts(tmp_path):
    config = _engine_config(tmp_path)
    journal = Journal(config.journal.path)
    journal.start()
    journal.record_risk_event("halt", "daily realised loss reached the limit")
    journal.stop()
    engine = Engine(config, {v: ListedClient(v) for v in Venue}, "dry_run")
    try:
        engine.start()
        assert "daily realised loss" in engine.risk.blocked()
        assert "daily realised loss" in engine.summary()
    finally:
        engine.stop(timeout_s=3)


class _Killed:
    value = "active"


class FakeEngine:
    """Just enough of an Engine for ``_run_until_stopped``; ``start`` sends ``signum`` to us."""

    def __init__(self, signum):
        self.signum = signum
        self.risk = type("R", (), {"state": _Killed(), "kill": type("K", (), {
            "install_signal_handler": staticmethod(lambda s: None)})()})()

    def start(self):
        os.kill(os.getpid(), self.signum)

    def stop(self):
        pass

    def summary(self):
        return "summary"


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_run_stopped_by_ctrl_c_exits_130_and_by_sigterm_exits_0(signum, code, capsys):
    from karb.commands.run import _run_until_stopped

    assert _run_until_stopped(FakeEngine(signum), duration=5.0) == code


def test_engine_journals_the_legacy_client_order_id_as_soon_as_the_venue_answers(tmp_path):
    class Legacy(ListedClient):
        on_order_id = None

    clients = {Venue.UPBIT: ListedClient(Venue.UPBIT), Venue.BITHUMB: Legacy(Venue.BITHUMB)}
    engine = Engine(_engine_config(tmp_path), clients, "sim")
    engine.journal.start()
    try:
        signal = make_signal("x")
        engine.journal.record_intent(signal, engine.executor._legs(signal), {})
        clients[Venue.BITHUMB].on_order_id("xb", "C0101000000001")  # no flush: committed now
        rows = engine.journal.query("SELECT order_id FROM orders WHERE client_id = 'xb'")
        assert rows == [{"order_id": "C0101000000001"}]
    finally:
        engine.journal.stop()
