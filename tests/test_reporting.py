"""Reports that must tell the truth: balances, feed-down, journal and recorder failures, the
summary's numbers, and the alerter's memory."""
from __future__ import annotations

import errno
import time
from decimal import Decimal as D

import pytest

from feeds import FeedConnection, FrameRecorder, UpbitBookProtocol
from karb.alerts import Alerter, evaluate
from karb.book import BookBoard
from karb.config import parse_config
from karb.engine import Engine
from karb.model import Balance, Venue
from karb.status import EngineSnapshot, FeedStatus
from tests.conftest import wait_until


def _config(tmp_path, **extra):
    return parse_config({
        "markets": ["KRW-BTC"],
        "venues": {v: {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9",
                       "taker_fee": "0.0005", "maker_fee": "0.0005"} for v in ("upbit", "bithumb")},
        "journal": {"path": str(tmp_path / "j.sqlite")},
        "monitor": {"metrics_port": 0},
        "risk": {"kill_switch_file": str(tmp_path / "KILL")},
        **extra,
    })


class _Client:
    def __init__(self, venue):
        self.venue = venue

    def close(self):
        pass


@pytest.fixture
def engine(tmp_path):
    engine = Engine(_config(tmp_path), {v: _Client(v) for v in Venue}, "dry_run")
    yield engine
    engine.market_data.stop(1.0)


# --- 6: reserved amounts counted twice ----------------------------------------------------------

def test_snapshot_with_reserved_krw_shows_the_venue_balance_once(engine):
    ledger = engine.risk.ledger
    ledger.load(Venue.UPBIT, {"KRW": Balance("KRW", D("1000000")), "BTC": Balance("BTC", D("0.5"))})
    assert not isinstance(ledger.reserve("t1", {(Venue.UPBIT, "KRW"): D("400000"),
                                                (Venue.UPBIT, "BTC"): D("0.1")}), str)
    s = engine.snapshot()
    assert s.balances["upbit"]["KRW"] == D("1000000")
    assert s.balances["upbit"]["BTC"] == D("0.5")
    # so the low-balance alert judges the real balance, not free + held
    assert [a.kind for a in evaluate(s, D("1200000"), 60)] == ["low_balance"]


# --- 7: feed down over 60 s ---------------------------------------------------------------------

def test_feed_that_cannot_connect_reports_down_for_s_and_the_feed_down_alert_fires():
    board = BookBoard(["KRW-BTC"])
    feed = FeedConnection("ws://127.0.0.1:9", UpbitBookProtocol(board.sink("upbit"), ["KRW-BTC"]),
                          backoff_initial_s=0.05, backoff_max_s=0.05, connect_timeout_s=0.5)
    feed.start()
    try:
        wait_until(lambda: feed.reconnects >= 1, message="a failed connect")
        now = time.monotonic_ns()
        assert feed.stats(now)["down_for_s"] >= 0.0
        later = feed.stats(now + 61 * 10**9)
    finally:
        feed.stop(2.0)
    assert later["down_for_s"] > 60
    status = FeedStatus(later["state"], down_for_s=later["down_for_s"])
    snap = EngineSnapshot(mode="dry_run", uptime_s=61, feeds={"upbit": status}, markets=[])
    alerter = Alerter(None, low_balance_krw=D(0), feed_down_s=60)
    assert [a.kind for a in alerter.check(snap)] == ["feed_down"]


def test_feed_that_receives_data_is_not_down():
    board = BookBoard(["KRW-BTC"])
    feed = FeedConnection("ws://127.0.0.1:9", UpbitBookProtocol(board.sink("upbit"), ["KRW-BTC"]))
    feed._started_ns = feed.last_message_ns = time.monotonic_ns()  # as if a frame just arrived
    feed.state = "connected"
    assert feed.stats()["down_for_s"] < 1.0


def test_engine_snapshot_carries_the_feeds_down_for_s(engine):
    engine.market_data.connections[Venue.UPBIT]._started_ns = time.monotonic_ns() - 90 * 10**9
    assert engine.snapshot().feeds["upbit"].down_for_s > 60


# --- 5: the recorder dies silently --------------------------------------------------------------

class _FullDisk:
    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        pass

    def close(self):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_recorder_with_write_error_stops_recording_drops_its_queue_and_reports(tmp_path):
    recorder = FrameRecorder(tmp_path / "frames.jsonl.gz", flush_every_s=0.01)
    recorder._file.close()
    recorder._file = _FullDisk()
    recorder.record(1, "upbit", b"{}")
    wait_until(lambda: recorder.error is not None, message="recorder noticed the failure")
    for i in range(1000):  # feed threads keep calling record
        recorder.record(i, "upbit", b"{}")
    assert len(recorder._queue) == 0
    assert "No space left" in recorder.error
    assert recorder.stop(2.0)
    snap = EngineSnapshot(mode="dry_run", uptime_s=1, feeds={}, markets=[],
                          recorder_error=recorder.error)
    assert [a.kind for a in evaluate(snap, D(0), 60)] == ["recorder_failed"]


def test_engine_snapshot_reports_a_failed_recorder(tmp_path):
    config = _config(tmp_path, feed={"record_path": str(tmp_path / "rec.jsonl.gz")})
    engine = Engine(config, {v: _Client(v) for v in Venue}, "dry_run")
    recorder = engine.market_data._recorder
    try:
        recorder._file.close()
        recorder._file = _FullDisk()
        recorder.record(1, "upbit", b"{}")
        wait_until(lambda: recorder.error is not None, message="recorder noticed the failure")
        assert "No space left" in engine.snapshot().recorder_error
    finally:
        engine.market_data.stop(1.0)


# --- 8: disk full, no alert ---------------------------------------------------------------------

def test_journal_refusing_writes_raises_one_journal_error_alert_per_episode(engine):
    alerter = Alerter(None, low_balance_krw=D(0), feed_down_s=60)
    assert engine.snapshot().journal_errors == 0
    engine.journal.errors += 3  # what failed commits do
    first = engine.snapshot()
    assert first.journal_errors == 3 and first.journal_failing
    assert [a.kind for a in alerter.check(first)] == ["journal_error"]
    engine.journal.errors += 50
    assert alerter.check(engine.snapshot()) == []  # the same episode: no second page


# --- 10: Alerter.fired grows forever ------------------------------------------------------------

def test_alerter_fired_list_stays_bounded_over_a_long_run():
    alerter = Alerter(None, low_balance_krw=D("1000"), feed_down_s=60)
    low = EngineSnapshot(mode="dry_run", uptime_s=1, feeds={}, markets=[],
                         balances={"upbit": {"KRW": D("1")}})
    ok = EngineSnapshot(mode="dry_run", uptime_s=1, feeds={}, markets=[])
    for _ in range(5000):
        alerter.check(low)
        alerter.check(ok)
    assert len(alerter.fired) <= 1000
    assert alerter.fired[-1].kind == "low_balance"


# --- 11: 21 decimals of won ---------------------------------------------------------------------

def test_summary_shows_krw_in_whole_won_and_coins_without_trailing_zeros(engine):
    engine.risk.ledger.load(Venue.UPBIT, {
        "KRW": Balance("KRW", D("1234567.891234567890123456789")),
        "BTC": Balance("BTC", D("0.50000000000000000000")),
        "XRP": Balance("XRP", D("12000")),
    })
    text = engine.summary()
    line = next(line for line in text.splitlines() if line.strip().startswith("upbit:"))
    assert "KRW 1,234,568" in line
    assert "BTC 0.5" in line and "BTC 0.50" not in line
    assert "XRP 12000" in line and "E+" not in line


# --- 3: a lagging venue looks fresh on the panel --------------------------------------------------

def test_snapshot_book_age_includes_the_venues_own_lag(engine, monkeypatch):
    import karb.book
    wall = [1_700_000_000_000 * 10**6]
    monkeypatch.setattr(karb.book, "_wall_ns", lambda: wall[0])
    book = engine.board.get(Venue.UPBIT, "KRW-BTC")
    now = time.monotonic_ns()
    book.apply_snapshot([(100.0, 1.0)], [(101.0, 1.0)], 1_700_000_000_000, now)
    wall[0] += 5 * 10**9
    book.apply_snapshot([(100.0, 1.0)], [(101.0, 1.0)], 1_700_000_000_001, time.monotonic_ns())
    age_ms = engine.snapshot().markets[0].book_age_ms["upbit"]
    assert age_ms > 4_900


def test_feed_stats_count_the_books_future_frames(engine):
    book = engine.board.get(Venue.BITHUMB, "KRW-BTC")
    book.apply_snapshot([(100.0, 1.0)], [(101.0, 1.0)], time.time_ns() // 10**6 + 3_600_000, 1)
    assert engine.market_data.stats()["bithumb"]["future_frames"] == 1
    assert engine.market_data.stats()["upbit"]["future_frames"] == 0


def test_journal_episode_clears_after_a_quiet_minute_and_a_new_failure_alerts_again():
    from karb.engine import JOURNAL_CLEAR_S, _ErrorWatch
    watch = _ErrorWatch(JOURNAL_CLEAR_S)
    t = 10**12
    assert not watch.failing(0, t)
    assert watch.failing(1, t)
    assert watch.failing(1, t + int(JOURNAL_CLEAR_S * 1e9))
    assert not watch.failing(1, t + int(JOURNAL_CLEAR_S * 1e9) + 1)
    assert watch.failing(2, t + int(2 * JOURNAL_CLEAR_S * 1e9))
