"""MarketData against the loopback sim (karb.sim): exact books, drops, stalls, clean stop."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
import yaml

from karb.book import BookBoard
from karb.cli import REPO_CONFIG
from karb.config import parse_config
from karb.market_data import MarketData
from karb.model import Venue
from karb.sim.cluster import SimCluster
from tests.conftest import wait_until

pytestmark = pytest.mark.integration
MARKETS = ["KRW-BTC", "KRW-XRP"]


def sim_config(upbit_format="DEFAULT", bithumb_ws_api="v2", **feed):
    data = yaml.safe_load((REPO_CONFIG / "sim.yaml").read_text())
    data["markets"] = MARKETS
    data["sim"]["markets"] = {m: data["sim"]["markets"][m] for m in MARKETS}
    data["sim"]["update_hz"] = 40
    data["venues"]["upbit"]["ws_format"] = upbit_format
    data["venues"]["bithumb"]["ws_api"] = bithumb_ws_api
    data["feed"] = {"watchdog_s": 1.0, "ping_interval_s": 0.2, "backoff_initial_s": 0.1,
                    "backoff_max_s": 0.3, "snapshot_check_s": 0.5, **feed}
    data["log"] = {"file": None}
    return parse_config(data)


@contextmanager
def running(config):
    with SimCluster.from_config(config).start() as cluster:
        config = cluster.apply_to(config)
        board = BookBoard(config.markets, depth=15)
        market_data = MarketData(config, board)
        market_data.start()
        try:
            yield cluster, board, market_data
        finally:
            assert market_data.stop(5.0)
    assert [t.name for t in threading.enumerate() if t.name.startswith("feed-")] == []


class InvalidWatcher:
    """Notes every invalid view of one book, waking on each board change."""

    def __init__(self, board: BookBoard, venue: Venue, market: str) -> None:
        self.book = board.get(venue, market)
        self.board = board
        self.invalid_seen = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-watcher", daemon=True)
        self._thread.start()

    def _run(self):
        seq = self.board.seq
        while not self._stop.is_set():
            seq = self.board.wait_for_change(seq, 0.05)
            if not self.book.view.valid:
                self.invalid_seen.set()

    def close(self):
        self._stop.set()
        self._thread.join(2.0)


def sim_levels(cluster, venue, market, depth=15):
    bids, asks, ts_ms = cluster.exchange(venue).snapshot(market)
    return (tuple((p / 1e8, s / 1e8) for p, s in bids[:depth]),
            tuple((p / 1e8, s / 1e8) for p, s in asks[:depth]), ts_ms)


def assert_books_match(cluster, board, venue):
    """Freeze the venue's publisher, let the feed drain, then compare exactly."""
    lock = cluster.hubs(venue)[0].publish_lock
    with lock:
        for market in MARKETS:
            bids, asks, ts_ms = sim_levels(cluster, venue, market)
            book = board.get(venue, market)
            wait_until(lambda: book.view.valid and book.view.exch_ts_ms >= ts_ms and
                       (book.view.bids, book.view.asks) == (bids, asks),
                       timeout=5.0, message=f"{venue.value} {market} equal to the sim")
            book._check()


@pytest.mark.parametrize("upbit_format, bithumb_ws_api", [("DEFAULT", "v2"), ("SIMPLE", "legacy")])
def test_books_on_both_venues_match_sim_after_many_messages(upbit_format, bithumb_ws_api):
    with running(sim_config(upbit_format, bithumb_ws_api)) as (cluster, board, market_data):
        wait_until(lambda: all(s["messages"] >= 60 for s in market_data.stats().values()),
                   timeout=15.0, message="60 messages per venue")
        for venue in Venue:
            assert_books_match(cluster, board, venue)
        stats = market_data.stats()
        assert all(s["decode_errors"] == 0 and s["state"] == "connected" for s in stats.values())
        if bithumb_ws_api == "legacy":
            assert stats["bithumb"]["snapshots"] >= 2 and stats["bithumb"]["fetch_errors"] == 0


@pytest.mark.parametrize("bithumb_ws_api", ["v2", "legacy"])
def test_feed_after_forced_disconnect_reconnects_and_book_comes_back_fresh(bithumb_ws_api):
    with running(sim_config(bithumb_ws_api=bithumb_ws_api)) as (cluster, board, market_data):
        book = board.get(Venue.BITHUMB, "KRW-BTC")
        wait_until(lambda: book.view.valid, timeout=10.0, message="first valid book")
        watcher = InvalidWatcher(board, Venue.BITHUMB, "KRW-BTC")
        try:
            before = book.view.exch_ts_ms
            cluster.faults(Venue.BITHUMB).drop_ws()
            wait_until(watcher.invalid_seen.is_set, timeout=5.0, message="book invalid after drop")
            wait_until(lambda: book.view.valid and book.view.exch_ts_ms > before, timeout=10.0,
                       message="valid again with fresh data")
        finally:
            watcher.close()
        assert market_data.stats()["bithumb"]["reconnects"] >= 1
        assert_books_match(cluster, board, Venue.BITHUMB)


def test_feed_after_silent_stall_reconnects_by_watchdog_with_fresh_data():
    with running(sim_config()) as (cluster, board, market_data):
        book = board.get(Venue.UPBIT, "KRW-XRP")
        wait_until(lambda: book.view.valid, timeout=10.0, message="first valid book")
        watcher = InvalidWatcher(board, Venue.UPBIT, "KRW-XRP")
        try:
            cluster.faults(Venue.UPBIT).stall_ws(1.5)  # sockets open, pongs answered, no data
            wait_until(watcher.invalid_seen.is_set, timeout=5.0, message="book invalid after stall")
            assert market_data.stats()["upbit"]["reconnects"] >= 1
            cluster.faults(Venue.UPBIT).clear()  # end the stall: publishing resumes
            before = book.view.exch_ts_ms
            wait_until(lambda: book.view.valid and book.view.exch_ts_ms > before, timeout=10.0,
                       message="fresh data after the stall")
        finally:
            watcher.close()
        assert_books_match(cluster, board, Venue.UPBIT)


def test_market_data_stats_report_each_venue():
    with running(sim_config()) as (_, _, market_data):
        wait_until(lambda: all(s["messages"] > 10 for s in market_data.stats().values()),
                   timeout=10.0, message="messages on both venues")
        stats = market_data.stats()
        assert set(stats) == {"upbit", "bithumb"}
        for venue_stats in stats.values():
            assert venue_stats["bytes"] > 0 and venue_stats["last_message_age_s"] < 5.0
            assert set(venue_stats) >= {"state", "messages", "bytes", "reconnects", "decode_errors",
                                        "last_message_age_s", "msgs_per_s"}


def test_market_data_with_record_path_writes_frames_of_both_venues(tmp_path):
    from feeds.recorder import read_recording
    from karb.sim.replay import ReplaySource

    path = tmp_path / "frames.jsonl.gz"
    with running(sim_config(record_path=str(path))) as (_, _, market_data):
        wait_until(lambda: all(s["messages"] > 5 for s in market_data.stats().values()),
                   timeout=10.0, message="messages on both venues")
    venues = {venue for _, venue, _ in read_recording(path)}
    assert venues == {"upbit", "bithumb"}
    replayed = list(ReplaySource(str(path), MARKETS).events())  # the sim reads what we wrote
    assert {event.venue for event in replayed} == {Venue.UPBIT, Venue.BITHUMB}
