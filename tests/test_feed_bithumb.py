"""Bithumb legacy orderbookdepth: snapshot + buffered-delta sync, resyncs, checks, bad frames."""
from __future__ import annotations

import threading
import time

import orjson
import pytest
import responses

from feeds import BithumbLegacyBookProtocol, FrameError, LegacySnapshotFetcher
from feeds.bithumb import SnapshotFetchError, legacy_symbol, parse_legacy_orderbook
from karb.book import BookBoard
from tests.conftest import load_json, wait_until

MARKETS = ["KRW-BTC", "KRW-ETH"]
ACK = b'{"status":"0000","resmsg":"Filter Registered Successfully"}'


class StubFetcher:
    """Serves a settable book per market; ``gate`` (when set) holds every fetch until released."""

    def __init__(self) -> None:
        self.books = {m: ([(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0), (102.0, 2.0)], 1_000)
                      for m in MARKETS}
        self.gate: threading.Event | None = None
        self.calls: list[str] = []
        self.fail = 0

    def __call__(self, market):
        self.calls.append(market)
        if self.gate is not None:
            self.gate.wait(5.0)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("venue unreachable")
        bids, asks, ts = self.books[market]
        return list(bids), list(asks), ts


def depth(items: list[tuple[str, str, float, float]], ts_us: int) -> bytes:
    return orjson.dumps({"type": "orderbookdepth", "content": {"list": [
        {"symbol": legacy_symbol(m), "orderType": side, "price": str(price),
         "quantity": str(qty), "total": "1"} for m, side, price, qty in items],
        "datetime": str(ts_us)}})


@pytest.fixture
def rig():
    board = BookBoard(MARKETS)
    fetcher = StubFetcher()
    proto = BithumbLegacyBookProtocol(board.sink("bithumb"), MARKETS, fetcher,
                                      snapshot_check_s=60.0, retry_s=0.05)
    yield board, fetcher, proto
    proto.close()


def settle(proto, predicate, message="condition"):
    """Run the feed thread's periodic work until ``predicate`` holds."""
    return wait_until(lambda: (proto.poll(time.monotonic_ns()), predicate())[1], message=message)


def view(board, market="KRW-BTC"):
    return board.get("bithumb", market).view


def test_subscribe_message_lists_legacy_symbols():
    proto = BithumbLegacyBookProtocol(None, MARKETS, StubFetcher())
    assert orjson.loads(proto.subscribe_messages()[0]) == {
        "type": "orderbookdepth", "symbols": ["BTC_KRW", "ETH_KRW"]}
    proto.close()


def test_sync_applies_snapshot_plus_deltas_buffered_while_fetching(rig):
    board, fetcher, proto = rig
    fetcher.gate = threading.Event()
    proto.on_connected(time.monotonic_ns())
    proto.handle(ACK, 1)
    # fetches run one at a time on the snapshot thread: the first holds the rest behind the gate
    wait_until(lambda: fetcher.calls, message="first fetch started")
    # Arrange: while the snapshot (ts 1000 ms) is in flight, one older and two newer deltas
    proto.handle(depth([("KRW-BTC", "bid", 100.0, 9.0)], 999_000), 2)       # older: ignored
    proto.handle(depth([("KRW-BTC", "ask", 101.0, 0.0),                      # newer: applied
                        ("KRW-BTC", "bid", 99.5, 3.0)], 1_000_500), 3)
    proto.handle(depth([("KRW-BTC", "bid", 99.5, 4.0)], 1_002_000), 4)
    assert not view(board).valid
    # Act
    fetcher.gate.set()
    settle(proto, lambda: view(board).valid and view(board, "KRW-ETH").valid, "synced")
    # Assert
    assert view(board).bids == ((100.0, 1.0), (99.5, 4.0), (99.0, 2.0))
    assert view(board).asks == ((102.0, 2.0),)
    assert view(board).exch_ts_ms == 1_002
    proto.handle(depth([("KRW-BTC", "ask", 101.5, 1.0)], 1_003_000), 5)   # live from now on
    assert view(board).asks == ((101.5, 1.0), (102.0, 2.0))
    board.get("bithumb", "KRW-BTC")._check()


def test_first_delta_without_filter_ack_requests_that_snapshot(rig):
    board, fetcher, proto = rig
    proto.on_connected(time.monotonic_ns() + 10**12)  # grace far away: only the delta asks
    proto.handle(depth([("KRW-ETH", "bid", 99.0, 5.0)], 2_000_000), 1)
    settle(proto, lambda: view(board, "KRW-ETH").valid, "ETH synced")
    assert fetcher.calls == ["KRW-ETH"]
    assert view(board, "KRW-ETH").bids[1] == (99.0, 5.0)


def test_without_ack_or_delta_grace_period_requests_snapshots(rig):
    board, fetcher, proto = rig
    proto.on_connected(time.monotonic_ns())
    settle(proto, lambda: view(board).valid and view(board, "KRW-ETH").valid, "synced by grace")


def test_failed_fetch_is_retried(rig):
    board, fetcher, proto = rig
    fetcher.fail = 2
    proto.on_connected(time.monotonic_ns())
    proto.handle(ACK, 1)
    settle(proto, lambda: view(board).valid and view(board, "KRW-ETH").valid, "synced after retries")
    assert proto.fetch_errors == 2 and len(fetcher.calls) == 4


def synced(rig):
    board, fetcher, proto = rig
    proto.on_connected(time.monotonic_ns())
    proto.handle(ACK, 1)
    settle(proto, lambda: view(board).valid and view(board, "KRW-ETH").valid, "synced")
    return board, fetcher, proto


def test_delta_with_bad_level_resyncs_only_that_market(rig):
    board, fetcher, proto = synced(rig)
    frame = orjson.loads(depth([("KRW-BTC", "bid", 99.5, 1.0), ("KRW-ETH", "bid", 99.5, 1.0)], 2_000_000))
    frame["content"]["list"][0]["price"] = "a lot"
    calls = len(fetcher.calls)
    with pytest.raises(FrameError) as info:
        proto.handle(orjson.dumps(frame), 2)
    proto.on_bad_frame(info.value.markets)  # what the connection does next
    assert info.value.markets == ("KRW-BTC",)
    assert not view(board).valid
    assert view(board, "KRW-ETH").bids[0] == (100.0, 1.0) and view(board, "KRW-ETH").bids[1] == (99.5, 1.0)
    settle(proto, lambda: view(board).valid, "BTC resynced")
    assert fetcher.calls[calls:] == ["KRW-BTC"]


@pytest.mark.parametrize("frame, markets", [
    (b'{"type":"orderbookdepth","content":{"list":[{"sym', None),
    (b'{"type":"orderbookdepth","content":{"list":[]}}', None),
    (b'{"type":"orderbookdepth","content":{"list":[], "datetime":"x"}}', None),
    (b"[]", None),
    (depth([("KRW-XRP", "bid", 1.0, 1.0)], 5), ()),
    (b'{"type":"transaction","content":{"list":[]}}', ()),
    (b'{"status":"5100","resmsg":"Invalid Filter Syntax"}', ()),
])
def test_bad_frame_raises_frame_error_with_affected_markets(rig, frame, markets):
    _, _, proto = rig
    with pytest.raises(FrameError) as info:
        proto.handle(frame, 1)
    assert info.value.markets == markets


def test_unreadable_frame_resyncs_every_market(rig):
    board, fetcher, proto = synced(rig)
    proto.on_bad_frame(None)
    assert not view(board).valid and not view(board, "KRW-ETH").valid
    settle(proto, lambda: view(board).valid and view(board, "KRW-ETH").valid, "all resynced")


def test_crossing_delta_invalidates_and_resyncs_from_rest(rig):
    board, fetcher, proto = synced(rig)
    proto.handle(depth([("KRW-BTC", "bid", 101.0, 1.0)], 2_000_000), 2)  # crosses the 101 ask
    assert not view(board).valid
    fetcher.books["KRW-BTC"] = ([(100.0, 3.0)], [(100.5, 3.0)], 2_001)
    settle(proto, lambda: view(board).valid, "resynced")
    assert view(board).bids == ((100.0, 3.0),) and view(board).asks == ((100.5, 3.0),)


def test_periodic_check_repairs_book_after_a_lost_delta():
    board = BookBoard(MARKETS)
    fetcher = StubFetcher()
    proto = BithumbLegacyBookProtocol(board.sink("bithumb"), MARKETS, fetcher,
                                      snapshot_check_s=0.05, retry_s=0.05)
    try:
        synced((board, fetcher, proto))
        # the venue removed the 99.0 bid but its delta never reached us
        fetcher.books["KRW-BTC"] = ([(100.0, 1.0)], [(101.0, 1.0), (102.0, 2.0)], 5_000)
        assert view(board).bids == ((100.0, 1.0), (99.0, 2.0))
        settle(proto, lambda: view(board).bids == ((100.0, 1.0),), "check repaired the book")
        assert view(board).valid and proto.snapshots >= 3
    finally:
        proto.close()


def test_snapshot_fetched_before_a_reconnect_is_ignored(rig):
    board, fetcher, proto = rig
    fetcher.gate = threading.Event()
    proto.on_connected(time.monotonic_ns())
    proto.handle(ACK, 1)
    wait_until(lambda: fetcher.calls, message="first fetch started")
    proto.on_disconnected("connection lost")
    fetcher.gate.set()
    wait_until(lambda: len(proto._results) == 2, message="stale results back")
    proto.poll(time.monotonic_ns())
    assert not view(board).valid and proto.snapshots == 0


def test_parse_legacy_orderbook_reads_spec_shape():
    body = {"status": "0000", "data": {"timestamp": "1417142049868", "payment_currency": "KRW",
                                       "order_currency": "BTC",
                                       "bids": [{"quantity": "6.1189306", "price": "504000"}],
                                       "asks": [{"quantity": "2.5", "price": "505000"}]}}
    assert parse_legacy_orderbook("KRW-BTC", body) == (
        [(504000.0, 6.1189306)], [(505000.0, 2.5)], 1417142049868)


@pytest.mark.parametrize("body", [
    load_json("spec/rest_samples.json")["bithumb_legacy"]["error"]["body"],
    {"status": "0000", "data": {"bids": []}},
    {"status": "0000", "data": {"timestamp": "1", "bids": [{"price": "x", "quantity": "1"}],
                                "asks": []}},
    ["not", "an", "object"],
])
def test_parse_legacy_orderbook_with_unusable_body_raises(body):
    with pytest.raises(SnapshotFetchError):
        parse_legacy_orderbook("KRW-BTC", body)


@responses.activate
def test_legacy_snapshot_fetcher_gets_public_orderbook():
    responses.get("http://127.0.0.1:9/public/orderbook/BTC_KRW?count=30", json={
        "status": "0000", "data": {"timestamp": "7", "bids": [{"price": "1", "quantity": "2"}],
                                   "asks": [{"price": "3", "quantity": "4"}]}})
    fetch = LegacySnapshotFetcher("http://127.0.0.1:9/")
    assert fetch("KRW-BTC") == ([(1.0, 2.0)], [(3.0, 4.0)], 7)
    fetch.close()


@responses.activate
def test_legacy_snapshot_fetcher_with_html_error_page_raises():
    responses.get("http://127.0.0.1:9/public/orderbook/BTC_KRW", body="<html>502</html>", status=502)
    with pytest.raises(SnapshotFetchError):
        LegacySnapshotFetcher("http://127.0.0.1:9")("KRW-BTC")


def test_delta_stamped_an_hour_ahead_is_dropped_and_resyncs_that_market(rig):
    board, fetcher, proto = synced(rig)
    ahead_us = (time.time_ns() // 1_000 + 3_600_000_000)
    calls = len(fetcher.calls)
    with pytest.raises(FrameError) as info:
        proto.handle(depth([("KRW-BTC", "bid", 99.5, 7.0)], ahead_us), 2)
    proto.on_bad_frame(info.value.markets)  # what the connection does next
    assert info.value.markets == ("KRW-BTC",) and "ahead" in info.value.reason
    settle(proto, lambda: view(board).valid, "BTC resynced")
    assert len(fetcher.calls) == calls + 1
    assert (99.5, 7.0) not in view(board).bids
    # later, current deltas apply again: the book is not frozen behind the future stamp
    now_us = time.time_ns() // 1_000
    proto.handle(depth([("KRW-BTC", "bid", 99.7, 3.0)], now_us), 3)
    assert (99.7, 3.0) in view(board).bids


def test_phantom_level_after_a_lost_delta_lives_at_most_5_s_by_default_and_is_counted():
    from karb.config import FeedConfig
    board = BookBoard(MARKETS)
    fetcher = StubFetcher()
    # the engine's default check interval bounds how long a phantom level can live
    assert FeedConfig().snapshot_check_s <= 5.0
    assert BithumbLegacyBookProtocol(None, MARKETS, fetcher)._check_ns <= 5 * 10**9
    proto = BithumbLegacyBookProtocol(board.sink("bithumb"), MARKETS, fetcher,
                                      snapshot_check_s=0.05, retry_s=0.05)
    try:
        synced((board, fetcher, proto))
        book = board.get("bithumb", "KRW-BTC")
        fetcher.books["KRW-BTC"] = ([(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0), (102.0, 2.0), (103.0, 1.0)], 2_000)
        proto.handle(depth([("KRW-BTC", "ask", 103.0, 1.0)], 2_000_000), 2)  # delta-kept now
        settle(proto, lambda: proto.snapshots >= 3, "a clean check")
        assert book.repairs == 0  # a check that finds the book right is not a repair
        # the venue removed the 99.0 bid but its delta never reached us
        fetcher.books["KRW-BTC"] = ([(100.0, 1.0)], [(101.0, 1.0), (102.0, 2.0), (103.0, 1.0)], 5_000)
        settle(proto, lambda: view(board).bids == ((100.0, 1.0),), "check repaired the book")
        assert book.repairs == 1
    finally:
        proto.close()


def test_levels_take_the_content_symbol_by_default_but_a_null_symbol_is_unknown(rig):
    board, _, proto = synced(rig)
    frame = {"type": "orderbookdepth", "content": {"symbol": "BTC_KRW", "datetime": "2000000", "list": [
        {"orderType": "bid", "price": 99.5, "quantity": "2"},                 # numbers work too
        {"symbol": None, "orderType": "bid", "price": "99.4", "quantity": "1"}]}}
    with pytest.raises(FrameError, match="unknown symbol None") as info:
        proto.handle(orjson.dumps(frame), 2)
    assert info.value.markets == ()  # no book it concerned: nothing to resync
    assert view(board).valid and (99.5, 2.0) in view(board).bids
    assert all(price != 99.4 for price, _ in view(board).bids)
    del frame["content"]["list"][1]
    frame["content"]["list"][0]["quantity"] = "3"
    proto.handle(orjson.dumps(frame), 3)  # the well-formed frame takes the typed fast path
    assert (99.5, 3.0) in view(board).bids
