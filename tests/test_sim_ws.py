"""The sim's WebSocket servers, driven by raw subscribe messages written from the spec."""
from __future__ import annotations

import dataclasses
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import requests
import websocket

from karb.config import load_config
from karb.model import Venue
from karb.sim.cluster import SimCluster
from karb.sim.frames import orderbook_frame
from karb.sim.grid import from_decimal
from tests.conftest import wait_until

SIM_YAML = Path(__file__).resolve().parent.parent / "config" / "sim.yaml"


def sim_config(**sim_changes):
    config = load_config(SIM_YAML)
    return dataclasses.replace(config, sim=dataclasses.replace(config.sim, **sim_changes))


@pytest.fixture(scope="module")
def cluster():
    with SimCluster.from_config(sim_config(update_hz=20.0)) as running:
        wait_until(lambda: running.market_stats().published > 100, 5, message="first books")
        yield running


def connect(url):
    return websocket.create_connection(url, timeout=3)


def recv_json(ws):
    opcode, data = ws.recv_data()
    return opcode, orjson.loads(data)


@pytest.mark.parametrize("venue", list(Venue))
def test_subscribe_from_spec_gets_binary_snapshot_then_realtime_frames(cluster, venue):
    ws = connect(cluster.endpoints(venue).ws_url)
    try:
        ws.send('[{"ticket":"arb-engine-1"},{"type":"orderbook","codes":["KRW-BTC"]},{"format":"DEFAULT"}]')
        opcode, first = recv_json(ws)
        assert opcode == websocket.ABNF.OPCODE_BINARY
        assert first["type"] == "orderbook" and first["code"] == "KRW-BTC" and first["stream_type"] == "SNAPSHOT"
        assert len(first["orderbook_units"]) == 30
        assert set(first["orderbook_units"][0]) == {"ask_price", "bid_price", "ask_size", "bid_size"}
        _, second = recv_json(ws)
        assert second["stream_type"] == "REALTIME" and second["timestamp"] >= first["timestamp"]
    finally:
        ws.close()


def test_realtime_frame_bytes_equal_the_last_published_book(cluster):
    ws = connect(cluster.endpoints(Venue.UPBIT).ws_url)
    try:
        ws.send('[{"ticket":"t"},{"type":"orderbook","codes":["KRW-ETH"],"is_only_realtime":true}]')
        for _ in range(50):
            _, data = ws.recv_data()
            bids, asks, ts_ms = cluster.exchange(Venue.UPBIT).snapshot("KRW-ETH")
            if orjson.loads(data)["timestamp"] == ts_ms:
                assert data == orderbook_frame("KRW-ETH", bids, asks, ts_ms)
                book = cluster.exchange(Venue.UPBIT).book("KRW-ETH")
                units = orjson.loads(data)["orderbook_units"]
                assert [Decimal(str(u["bid_price"])) for u in units] == [p for p, _ in book[0]]
                return
        pytest.fail("never caught a frame together with its published book")
    finally:
        ws.close()


def test_two_subscribers_receive_identical_bytes(cluster):
    a, b = connect(cluster.endpoints(Venue.BITHUMB).ws_url), connect(cluster.endpoints(Venue.BITHUMB).ws_url)
    try:
        request = '[{"ticket":"x"},{"type":"orderbook","codes":["KRW-SOL"],"isOnlyRealtime":true}]'
        a.send(request)
        b.send(request)
        frames_a = {orjson.loads(d)["timestamp"]: d for d in (a.recv_data()[1] for _ in range(6))}
        frames_b = {orjson.loads(d)["timestamp"]: d for d in (b.recv_data()[1] for _ in range(6))}
        common = set(frames_a) & set(frames_b)
        assert common and all(frames_a[t] == frames_b[t] for t in common)
    finally:
        a.close()
        b.close()


def test_simple_list_format_with_level_count_gives_short_names_and_5_units(cluster):
    ws = connect(cluster.endpoints(Venue.UPBIT).ws_url)
    try:
        ws.send('[{"ticket":"t"},{"type":"orderbook","codes":["KRW-XRP.5","KRW-ADA.7"]},{"format":"SIMPLE_LIST"}]')
        seen = {}
        while len(seen) < 2:
            _, frames = recv_json(ws)
            assert isinstance(frames, list)
            seen[frames[0]["cd"]] = len(frames[0]["obu"])
        assert seen == {"KRW-XRP": 5, "KRW-ADA": 30}  # 7 is not a supported count -> 30
    finally:
        ws.close()


@pytest.mark.parametrize("request_text, name", [
    ('[{"type":"orderbook","codes":["KRW-BTC"]}]', "NO_TICKET"),
    ('{"ticket":"t"}', "WRONG_FORMAT"),
    ('[{"ticket":"t"},{"type":"orderbook"}]', "NO_CODES"),
    ('[{"ticket":"t"}]', "NO_TYPE"),
    ('[{"ticket":"t"},{"type":"orderbook","codes":["KRW-BTC"]},{"format":"XML"}]', "WRONG_FORMAT"),
])
def test_bad_subscribe_gets_the_venue_error(cluster, request_text, name):
    ws = connect(cluster.endpoints(Venue.UPBIT).ws_url)
    try:
        ws.send(request_text)
        _, body = recv_json(ws)
        assert body["error"]["name"] == name
    finally:
        ws.close()


def test_text_ping_gets_status_up(cluster):
    ws = connect(cluster.endpoints(Venue.BITHUMB).ws_url)
    try:
        ws.send("PING")
        assert recv_json(ws)[1] == {"status": "UP"}
    finally:
        ws.close()


def test_legacy_pubwss_deltas_on_a_rest_snapshot_rebuild_the_published_book(cluster):
    ep = cluster.endpoints(Venue.BITHUMB)
    ws = connect(ep.legacy_ws_url)
    try:
        assert orjson.loads(ws.recv()) == {"status": "0000", "resmsg": "Connected Successfully"}
        ws.send('{"type":"orderbookdepth","symbols":["BTC_KRW"]}')
        assert orjson.loads(ws.recv())["resmsg"] == "Filter Registered Successfully"
        first = orjson.loads(ws.recv())  # deltas flow; take the snapshot after the first one
        snap = requests.get(f"{ep.rest_url}/public/orderbook/BTC_KRW", timeout=3).json()["data"]
        book = {"bid": {from_decimal(Decimal(x["price"])): from_decimal(Decimal(x["quantity"])) for x in snap["bids"]},
                "ask": {from_decimal(Decimal(x["price"])): from_decimal(Decimal(x["quantity"])) for x in snap["asks"]}}
        snap_us = int(snap["timestamp"]) * 1000
        assert int(first["content"]["datetime"]) <= snap_us
        for _ in range(60):
            message = orjson.loads(ws.recv())
            stamp = int(message["content"]["datetime"])
            if stamp <= snap_us:
                continue
            for item in message["content"]["list"]:
                side, price = book[item["orderType"]], from_decimal(Decimal(item["price"]))
                quantity = from_decimal(Decimal(item["quantity"]))
                if quantity:
                    side[price] = quantity
                else:
                    side.pop(price, None)
            bids, asks, ts_ms = cluster.exchange(Venue.BITHUMB).snapshot("KRW-BTC")
            if ts_ms * 1000 == stamp:
                assert sorted(book["bid"].items(), reverse=True) == list(bids)
                assert sorted(book["ask"].items()) == list(asks)
                return
        pytest.fail("never caught a delta together with its published book")
    finally:
        ws.close()


def test_legacy_bad_filter_gets_5100(cluster):
    ws = connect(cluster.endpoints(Venue.BITHUMB).legacy_ws_url)
    try:
        ws.recv()
        ws.send('{"type":"orderbook","symbols":"BTC_KRW"}')
        assert orjson.loads(ws.recv()) == {"status": "5100", "resmsg": "Invalid Filter Syntax"}
    finally:
        ws.close()


def test_drop_ws_cuts_connections_and_a_new_one_works(cluster):
    url = cluster.endpoints(Venue.UPBIT).ws_url
    ws = connect(url)
    ws.send('[{"ticket":"t"},{"type":"orderbook","codes":["KRW-BTC"]}]')
    ws.recv_data()
    cluster.faults(Venue.UPBIT).drop_ws()
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        for _ in range(100):
            ws.recv_data()
    ws.close()
    again = connect(url)
    again.send('[{"ticket":"t"},{"type":"orderbook","codes":["KRW-BTC"]}]')
    assert recv_json(again)[1]["code"] == "KRW-BTC"
    again.close()


def test_stall_ws_keeps_the_socket_but_sends_nothing_for_the_stall(cluster):
    ws = connect(cluster.endpoints(Venue.BITHUMB).ws_url)
    try:
        ws.send('[{"ticket":"t"},{"type":"orderbook","codes":["KRW-BTC"],"is_only_realtime":true}]')
        ws.recv_data()
        cluster.faults(Venue.BITHUMB).stall_ws(1.0)
        ws.settimeout(0.1)
        while True:  # drain what was queued before the stall
            try:
                ws.recv_data()
            except websocket.WebSocketTimeoutException:
                break
        ws.settimeout(0.6)
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws.recv_data()
        ws.settimeout(3)
        assert recv_json(ws)[1]["code"] == "KRW-BTC"  # resumes after the stall
    finally:
        ws.close()


def test_idle_connection_is_closed_after_the_idle_timeout():
    with SimCluster.from_config(sim_config(idle_timeout_s=0.3)) as running:
        ws = connect(running.endpoints(Venue.UPBIT).ws_url)
        started = time.monotonic()
        opcode = None
        while opcode != websocket.ABNF.OPCODE_CLOSE and time.monotonic() - started < 3:
            opcode, _ = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        ws.close()


def test_unknown_ws_path_is_refused(cluster):
    url = cluster.endpoints(Venue.UPBIT).ws_url.replace("/websocket/v1", "/nope")
    with pytest.raises(websocket.WebSocketBadStatusException):
        connect(url)
