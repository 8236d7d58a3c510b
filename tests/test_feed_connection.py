"""FeedConnection against a loopback stub server: flow, bad frames, reconnects, clean stop."""
from __future__ import annotations

import socket
import threading

import orjson

from feeds import FeedConnection, UpbitBookProtocol
from karb.book import BookBoard
from tests.conftest import wait_until
from tests.feed_stub_server import StubWsServer

MARKETS = ["KRW-BTC", "KRW-ETH"]


def frame(market: str, bid: float, ask: float, ts: int = 1, size: object = 1.0) -> bytes:
    units = [{"ask_price": ask + i, "bid_price": bid - i, "ask_size": size, "bid_size": 1.0}
             for i in range(3)]
    return orjson.dumps({"type": "orderbook", "code": market, "timestamp": ts,
                         "orderbook_units": units, "stream_type": "REALTIME"})


def make_feed(url: str, board: BookBoard, **overrides) -> FeedConnection:
    options = dict(watchdog_s=5.0, ping_interval_s=0.2, backoff_initial_s=0.02, backoff_max_s=0.1)
    options.update(overrides)
    return FeedConnection(url, UpbitBookProtocol(board.sink("upbit"), MARKETS), **options)


def feed_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("feed-")]


def test_feed_with_snapshots_for_two_markets_updates_both_books():
    board = BookBoard(MARKETS)
    with StubWsServer() as server:
        feed = make_feed(server.url, board)
        feed.start()
        try:
            wait_until(lambda: server.open_connections == 1, message="subscription")
            server.send(frame("KRW-BTC", 100.0, 101.0, ts=5))
            server.send(frame("KRW-ETH", 10.0, 11.0, ts=6).decode())  # text frames work too
            wait_until(lambda: board.get("upbit", "KRW-ETH").view.valid, message="ETH book")
            btc = board.get("upbit", "KRW-BTC").view
            assert btc.valid and btc.best_bid == 100.0 and btc.best_ask == 101.0
            assert btc.exch_ts_ms == 5
            stats = feed.stats()
            assert stats["state"] == "connected" and stats["messages"] == 2
            assert stats["bytes"] > 200 and stats["decode_errors"] == 0
            assert stats["last_message_age_s"] < 5
        finally:
            assert feed.stop(5.0)
    assert "feed-upbit" not in feed_threads()


def test_feed_with_every_kind_of_bad_frame_keeps_running_and_other_markets_current():
    board = BookBoard(MARKETS)
    bad_frames = [
        b"{not json",                                                  # malformed JSON
        frame("KRW-BTC", 100.0, 101.0)[:40],                           # truncated bytes
        b'{"type":"orderbook","code":"KRW-BTC","timestamp":2}',        # missing field
        frame("KRW-XRP", 1.0, 2.0),                                    # unknown code
        frame("KRW-BTC", 100.0, 101.0, size="lots"),                   # wrong type
        frame("KRW-BTC", 100.0, 101.0, size=-1.0),                     # negative value
        frame("KRW-BTC", 102.0, 101.0),                                # crossed
        b'{"type":"orderbook","code":"KRW-BTC","timestamp":2,"orderbook_units":[[1]]}',
        b'{"error":{"name":"INVALID_PARAM","message":"?"}}',          # venue error message
        b"\x00\x01\x02",                                               # binary garbage
    ]
    with StubWsServer() as server:
        feed = make_feed(server.url, board)
        feed.start()
        try:
            wait_until(lambda: server.open_connections == 1, message="subscription")
            server.send(frame("KRW-BTC", 100.0, 101.0, ts=1))
            wait_until(lambda: board.get("upbit", "KRW-BTC").view.valid, message="BTC book")
            for i, bad in enumerate(bad_frames):
                server.send(bad)
                server.send(frame("KRW-ETH", 10.0, 11.0, ts=10 + i))  # the other market goes on
            wait_until(lambda: board.get("upbit", "KRW-ETH").view.exch_ts_ms == 10 + len(bad_frames) - 1,
                       message="ETH after the bad frames")
            assert feed.alive and feed.stats()["state"] == "connected"
            assert feed.stats()["decode_errors"] == 7  # wrong type/negative/crossed: book-level
            assert not board.get("upbit", "KRW-BTC").view.valid
            assert board.get("upbit", "KRW-ETH").view.valid
            server.send(frame("KRW-BTC", 100.0, 101.0, ts=50))  # the next good snapshot heals it
            wait_until(lambda: board.get("upbit", "KRW-BTC").view.valid, message="BTC healed")
            assert server.connections_made == 1
        finally:
            assert feed.stop(5.0)


def test_feed_after_forced_disconnect_reconnects_and_resubscribes():
    board = BookBoard(MARKETS)
    with StubWsServer(on_connect=[frame("KRW-BTC", 100.0, 101.0, ts=1)]) as server:
        feed = make_feed(server.url, board)
        feed.start()
        try:
            wait_until(lambda: board.get("upbit", "KRW-BTC").view.valid, message="first snapshot")
            first_version = board.get("upbit", "KRW-BTC").view.version
            server.drop()
            wait_until(lambda: server.connections_made == 2, message="reconnect")
            wait_until(lambda: board.get("upbit", "KRW-BTC").view.valid, message="valid again")
            view = board.get("upbit", "KRW-BTC").view
            assert view.version >= first_version + 2  # went invalid, then a fresh snapshot
            assert feed.stats()["reconnects"] >= 1
            first, second = (orjson.loads(s) for s in server.subscriptions[:2])
            assert first[1:] == second[1:] and first[0] != second[0]  # same request, new ticket
        finally:
            assert feed.stop(5.0)


def test_feed_after_silent_stall_reconnects_by_watchdog():
    board = BookBoard(MARKETS)
    seen_invalid = threading.Event()

    with StubWsServer(on_connect=[frame("KRW-BTC", 100.0, 101.0, ts=1)]) as server:
        feed = make_feed(server.url, board, watchdog_s=0.4)
        feed.start()
        try:
            wait_until(lambda: board.get("upbit", "KRW-BTC").view.valid, message="first snapshot")
            version = board.get("upbit", "KRW-BTC").view.version

            def went_invalid():  # the server answers pings but sends no data from now on
                view = board.get("upbit", "KRW-BTC").view
                if not view.valid:
                    seen_invalid.set()
                return view.version > version + 1 and view.valid

            wait_until(went_invalid, timeout=5.0, message="watchdog reconnect with fresh data")
            assert server.connections_made >= 2 and feed.stats()["reconnects"] >= 1
        finally:
            assert feed.stop(5.0)


def test_feed_with_unreachable_venue_backs_off_and_stops_promptly():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    board = BookBoard(MARKETS)
    feed = make_feed(f"ws://127.0.0.1:{port}/websocket/v1", board)
    feed.start()
    wait_until(lambda: feed.stats()["reconnects"] >= 3, message="retries")
    assert feed.stats()["state"] in ("connecting", "backoff")
    assert not board.get("upbit", "KRW-BTC").view.valid
    assert feed.stop(2.0)
    assert feed.stats()["state"] == "stopped" and not feed.alive


def test_feed_answers_venue_pings_and_reconnects_after_a_venue_close():
    board = BookBoard(MARKETS)
    with StubWsServer() as server:
        feed = make_feed(server.url, board, ping_interval_s=30.0)
        feed.start()
        try:
            wait_until(lambda: server.open_connections == 1, message="subscription")
            server.send(frame("KRW-BTC", 100.0, 101.0, ts=5))
            pongs = server.ping()
            assert pongs and all(pong.wait(5.0) for pong in pongs), "no pong for the venue's ping"
            wait_until(lambda: board.get("upbit", "KRW-BTC").view.valid, message="BTC book")
            server.close_all()
            wait_until(lambda: server.connections_made == 2, message="reconnect after close")
            assert feed.reconnects >= 1 and not board.get("upbit", "KRW-BTC").view.valid
        finally:
            assert feed.stop(5.0)
