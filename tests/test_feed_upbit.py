"""Upbit / Bithumb 2.0 orderbook decoding: spec samples, the real SIMPLE capture, bad frames."""
from __future__ import annotations

import ast

import orjson
import pytest

from feeds import FrameError, UpbitBookProtocol
from feeds.upbit import exchange_ms
from karb.book import BookBoard
from tests.conftest import DATA, load_json


class RecordingSink:
    def __init__(self) -> None:
        self.snapshots: list[tuple] = []
        self.resets: list[tuple] = []

    def on_snapshot(self, market, bids, asks, exch_ts_ms, recv_ns):
        self.snapshots.append((market, list(bids), list(asks), exch_ts_ms, recv_ns))
        return True

    def on_delta(self, market, changes, exch_ts_ms, recv_ns):
        raise AssertionError("a snapshot feed never sends deltas")

    def on_reset(self, market, reason):
        self.resets.append((market, reason))


def _capture_frames() -> list[bytes]:
    frames = []
    for line in (DATA / "spec/captures/cryptofeed_UPBIT.ws.62.0").read_text().splitlines():
        _, sep, rest = line.partition(": b'")
        if sep:
            frames.append(ast.literal_eval("b'" + rest))
    return frames


def test_subscribe_message_asks_for_orderbook_codes_with_level_suffix_and_format():
    proto = UpbitBookProtocol(RecordingSink(), ["KRW-BTC", "KRW-ETH"], levels=30, fmt="SIMPLE")
    (message,) = proto.subscribe_messages()
    ticket, book_type, fmt = orjson.loads(message)
    assert ticket["ticket"].startswith("karb-")
    assert book_type == {"type": "orderbook", "codes": ["KRW-BTC.30", "KRW-ETH.30"]}
    assert fmt == {"format": "SIMPLE"}


def test_subscribe_message_for_bithumb_v2_sends_plain_codes():
    proto = UpbitBookProtocol(RecordingSink(), ["KRW-BTC"], venue="bithumb", level_suffix=False)
    assert orjson.loads(proto.subscribe_messages()[0])[1]["codes"] == ["KRW-BTC"]


def test_default_sample_decodes_to_best_first_levels():
    sample = load_json("spec/ws_samples.json")["upbit"]["orderbook_DEFAULT_constructed"]["message"]
    sink = RecordingSink()
    UpbitBookProtocol(sink, ["KRW-BTC"]).handle(orjson.dumps(sample), 42)
    assert sink.snapshots == [("KRW-BTC", [(58130000.0, 0.12134219), (58126000.0, 0.0345)],
                               [(58131000.0, 0.0173), (58132000.0, 0.5)], 1704067200123, 42)]


def test_bithumb_v2_sample_with_microsecond_string_timestamp_decodes_to_ms():
    sample = load_json("spec/ws_samples.json")["bithumb_v2_ws"]["orderbook_lib_comment"]["message"]
    sink = RecordingSink()
    UpbitBookProtocol(sink, ["KRW-BTC"], venue="bithumb").handle(orjson.dumps(sample).decode(), 1)
    assert sink.snapshots[0][1:4] == ([(95339000, 0.0024)], [(95340000, 0.0007)], 1783657882348)


@pytest.mark.parametrize("value, expected", [(1704067200123, 1704067200123),
                                             ("1783657882348968", 1783657882348),
                                             (1704067200123.0, 1704067200123)])
def test_exchange_ms_with_ms_or_us_returns_ms(value, expected):
    assert exchange_ms(value) == expected


def test_real_simple_capture_keeps_every_book_equal_to_its_last_frame():
    frames = [orjson.loads(f) for f in _capture_frames()]
    markets = sorted({f["cd"] for f in frames if f["ty"] == "orderbook"})
    board = BookBoard(markets)
    proto = UpbitBookProtocol(board.sink("upbit"), markets, fmt="SIMPLE")
    last: dict[str, dict] = {}
    trades = 0
    for i, frame in enumerate(frames):
        try:
            proto.handle(orjson.dumps(frame), i)
            last[frame["cd"]] = frame
        except FrameError as exc:  # only orderbook is subscribed; the capture also has trades
            assert exc.markets == () and frame["ty"] == "trade"
            trades += 1
    assert sum(1 for f in frames if f["ty"] == "orderbook") == 145 and trades == len(frames) - 145
    for market, frame in last.items():
        book = board.get("upbit", market)
        assert book.view.valid and book.view.exch_ts_ms == frame["tms"]
        assert book.view.bids == tuple((u["bp"], u["bs"]) for u in frame["obu"] if u["bs"])
        assert book.view.asks == tuple((u["ap"], u["as"]) for u in frame["obu"] if u["as"])
        book._check()


@pytest.mark.parametrize("frame, markets", [
    (b'{"type":"orderbook","code":"KRW-BTC","timestamp":1,"orderbook_un', None),
    (b"\xff\xfe not json", None),
    (b"[1, 2, 3]", ()),
    (b'{"type":"orderbook","code":"KRW-DOGE","timestamp":1,"orderbook_units":[]}', ()),
    (b'{"type":"orderbook","code":"KRW-BTC","orderbook_units":[]}', ("KRW-BTC",)),
    (b'{"type":"orderbook","code":"KRW-BTC","timestamp":1,"orderbook_units":[{"ask_price":1}]}',
     ("KRW-BTC",)),
    (b'{"type":"orderbook","code":"KRW-BTC","timestamp":1,"orderbook_units":7}', ("KRW-BTC",)),
    (b'{"type":"orderbook","code":"KRW-BTC","timestamp":"soon","orderbook_units":[]}', ("KRW-BTC",)),
    (b'{"type":"ticker","code":"KRW-BTC"}', ()),
    (b'{"error":{"name":"WRONG_FORMAT","message":"bad request"}}', ()),
])
def test_bad_frame_raises_frame_error_naming_affected_markets(frame, markets):
    proto = UpbitBookProtocol(RecordingSink(), ["KRW-BTC"])
    with pytest.raises(FrameError) as info:
        proto.handle(frame, 1)
    assert info.value.markets == markets


def test_status_up_is_accepted_silently():
    sink = RecordingSink()
    UpbitBookProtocol(sink, ["KRW-BTC"]).handle(b'{"status":"UP"}', 1)
    assert sink.snapshots == [] and sink.resets == []


def test_bad_frame_and_disconnect_reset_the_right_books():
    sink = RecordingSink()
    proto = UpbitBookProtocol(sink, ["KRW-BTC"])
    proto.on_bad_frame(("KRW-BTC",))
    proto.on_bad_frame(None)
    proto.on_disconnected("connection lost")
    assert sink.resets == [("KRW-BTC", "bad frame"), (None, "connection lost")]


def test_unknown_format_is_refused_at_construction():
    with pytest.raises(ValueError):
        UpbitBookProtocol(RecordingSink(), ["KRW-BTC"], fmt="JSON_LIST")


def test_frame_stamped_an_hour_ahead_is_a_bad_frame_for_its_market():
    import time
    sink = RecordingSink()
    proto = UpbitBookProtocol(sink, ["KRW-BTC"])
    ahead = time.time_ns() // 1_000_000 + 3_600_000
    frame = (b'{"type":"orderbook","code":"KRW-BTC","timestamp":%d,"orderbook_units":'
             b'[{"ask_price":101.0,"bid_price":100.0,"ask_size":1.0,"bid_size":1.0}]}' % ahead)
    with pytest.raises(FrameError) as info:
        proto.handle(frame, 1)
    assert info.value.markets == ("KRW-BTC",) and "ahead" in info.value.reason
    assert sink.snapshots == []


def test_a_string_where_a_number_belongs_still_makes_the_book_invalid():
    # The typed fast path is strict; such a frame takes the general path, as before issue 12.
    board = BookBoard(["KRW-BTC"])
    proto = UpbitBookProtocol(board.sink("upbit"), ["KRW-BTC"])
    good = {"type": "orderbook", "code": "KRW-BTC", "timestamp": 5, "orderbook_units": [
        {"ask_price": 101, "bid_price": 100, "ask_size": 1.5, "bid_size": 2}]}
    proto.handle(orjson.dumps(good), 1)
    book = board.get("upbit", "KRW-BTC")
    assert book.view.valid and book.view.bids == ((100.0, 2.0),) and book.view.asks == ((101.0, 1.5),)
    good["timestamp"], good["orderbook_units"][0]["bid_price"] = 6, "100"
    proto.handle(orjson.dumps(good), 2)
    assert not book.view.valid and "non-numeric" in book.reason
