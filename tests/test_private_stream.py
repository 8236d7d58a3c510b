"""Private myOrder/myAsset streams: decoding documented bodies, the sim's endpoints (auth,
events consistent with REST), and the client's connection (auth failure, reconnect)."""
from __future__ import annotations

import dataclasses
import threading
from decimal import Decimal as D
from pathlib import Path

import orjson
import pytest
import websocket

from feeds.private import (AssetEvent, OrderEvent, PrivateStreamProtocol, decode,
                           subscribe_request)
from feeds.protocol import FrameError, StreamRejected
from karb.config import load_config
from karb.exchanges.bithumb.auth import BithumbAuth
from karb.exchanges.factory import make_client
from karb.exchanges.upbit.auth import UpbitAuth
from karb.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce, Venue
from karb.order_stream import OrderStreams, private_url
from karb.sim.cluster import SimCluster
from tests.conftest import wait_until

SIM_YAML = Path(__file__).resolve().parent.parent / "config" / "sim.yaml"

# Upbit myOrder, DEFAULT names, a ``trade`` event. CONSTRUCTED from the field table of
# docs.upbit.com/kr/reference/websocket-myorder ("구독 데이터 명세"; numbers are Double).
UPBIT_TRADE = (b'{"type":"myOrder","code":"KRW-BTC","uuid":"ac2dc2a3-fce9-40a2-a4f6-5987c25c438f",'
               b'"ask_bid":"BID","order_type":"limit","state":"trade",'
               b'"trade_uuid":"68315169-fba4-4175-ade3-aff14a616657","price":140003000.12345678,'
               b'"avg_price":140003000.12345678,"volume":0.00012345,"remaining_volume":0.00087655,'
               b'"executed_volume":0.00012345,"trades_count":1,"reserved_fee":70.0015,'
               b'"remaining_fee":61.36,"paid_fee":8.641,"locked":122800.0,"executed_funds":17283.37036,'
               b'"time_in_force":"ioc","trade_fee":8.641,"is_maker":false,"identifier":"arb-1b",'
               b'"smp_type":null,"trade_timestamp":1727052318148,"order_timestamp":1727052318074,'
               b'"timestamp":1727052318369,"stream_type":"REALTIME"}')
# The same in SIMPLE names (the table's 축약형 column).
UPBIT_DONE_SIMPLE = (b'{"ty":"myOrder","cd":"KRW-BTC","uid":"ac2dc2a3-fce9-40a2-a4f6-5987c25c438f",'
                     b'"ab":"BID","ot":"limit","s":"done","p":140003000,"v":0.001,"rv":0,"ev":0.001,'
                     b'"tc":1,"pf":70.0015,"ef":140003,"tms":1727052318370,"st":"REALTIME"}')
# Bithumb myOrder v2 names: apidocs.bithumb.com "Private v2 마이그레이션 가이드" (renamed fields
# order_id/trade_id/side buy|sell/trade_price/trade_quantity/executed_quantity/executed_amount).
BITHUMB_TRADE = (b'{"type":"myOrder","code":"KRW-BTC","order_id":"C0101000003152350309",'
                 b'"client_order_id":"arb-1s","side":"sell","order_type":"limit","state":"trade",'
                 b'"trade_id":"C0101000000412345678","order_price":139990000,"trade_price":139991000,'
                 b'"order_quantity":0.001,"trade_quantity":0.001,"order_amount":0,"trade_amount":139991,'
                 b'"remaining_quantity":0,"executed_quantity":0.001,"executed_amount":139991,'
                 b'"reserved_fee":0,"remaining_fee":0,"paid_fee":55.9964,"time_in_force":"ioc",'
                 b'"trade_timestamp":1783657882348,"order_timestamp":1783657882340,'
                 b'"timestamp":1783657882349,"stream_type":"REALTIME"}')
# myAsset, from docs.upbit.com/kr/reference/websocket-myasset (Bithumb v2: "동일").
ASSET = (b'{"type":"myAsset","asset_uuid":"e635f223-1609-4969-8fb6-4376937baad6","assets":'
         b'[{"currency":"KRW","balance":1386929.37231066771348207123,"locked":10329.670}],'
         b'"asset_timestamp":1710146517259,"timestamp":1710146517267,"stream_type":"REALTIME"}')


def test_upbit_trade_event_decodes_every_amount_exactly():
    event = decode(UPBIT_TRADE, "upbit", "upbit", 5)
    assert isinstance(event, OrderEvent)
    assert (event.order_id, event.client_id, event.side, event.state) == (
        "ac2dc2a3-fce9-40a2-a4f6-5987c25c438f", "arb-1b", "bid", "trade")
    assert event.trade_price == D("140003000.12345678") and event.trade_volume == D("0.00012345")
    assert event.executed_volume == D("0.00012345") and event.executed_funds == D("17283.37036")
    assert event.paid_fee == D("8.641") and event.trade_fee == D("8.641")
    assert event.trade_id == "68315169-fba4-4175-ade3-aff14a616657" and event.recv_ns == 5


def test_upbit_simple_format_and_json_list_wrapping_decode():
    event = decode(b"[" + UPBIT_DONE_SIMPLE + b"]", "upbit", "upbit")
    assert (event.state, event.executed_volume, event.executed_funds, event.trade_id) == (
        "done", D("0.001"), D(140003), None)


def test_bithumb_v2_names_decode_to_the_same_event():
    event = decode(BITHUMB_TRADE, "bithumb", "bithumb")
    assert (event.order_id, event.client_id, event.side) == ("C0101000003152350309", "arb-1s", "ask")
    assert (event.trade_price, event.trade_volume, event.executed_volume, event.executed_funds) == (
        D(139991000), D("0.001"), D("0.001"), D(139991))


def test_asset_event_keeps_the_venues_digits():
    event = decode(ASSET, "upbit", "upbit")
    assert isinstance(event, AssetEvent) and event.timestamp_ms == 1710146517259
    assert event.balances == {"KRW": (D("1386929.37231066771348207123"), D("10329.670"))}


def test_status_up_is_a_heartbeat_and_error_frames_reject_the_stream():
    assert decode(b'{"status":"UP"}', "upbit", "upbit") is None
    with pytest.raises(StreamRejected, match="INVALID_AUTH"):
        decode(b'{"error":{"name":"INVALID_AUTH","message":"bad"}}', "upbit", "upbit")


@pytest.mark.parametrize("frame", [
    b"\x00 not json", b"[1,2]", b'{"type":"myOrder","uuid":"x","state":"gone","ask_bid":"BID"}',
    b'{"type":"myOrder","state":"done","ask_bid":"BID","code":"KRW-BTC","order_type":"limit"}',
    b'{"type":"myOrder","uuid":"x","state":"done","ask_bid":"BID","code":"K","order_type":"limit",'
    b'"executed_volume":-1}',
    b'{"type":"myAsset","assets":"none"}', b'{"type":"ticker"}'])
def test_unusable_frames_raise_frame_error(frame):
    with pytest.raises(FrameError):
        decode(frame, "upbit", "upbit")


def test_subscription_names_both_types_and_myasset_takes_no_codes():
    request = orjson.loads(subscribe_request(["KRW-BTC"]))
    assert request[1] == {"type": "myOrder", "codes": ["KRW-BTC"]}
    assert request[2] == {"type": "myAsset"} and request[3] == {"format": "DEFAULT"}
    assert PrivateStreamProtocol(None, "upbit", "upbit").subscribe_messages()[1] == "PING"


def test_private_url_follows_ws_url_and_never_guesses_another_host():
    config = load_config(SIM_YAML)
    assert private_url(config, Venue.UPBIT) == "ws://127.0.0.1:0/websocket/v1/private"
    assert private_url(config, Venue.BITHUMB) == "ws://127.0.0.1:0/websocket/v2/private"
    odd = dataclasses.replace(config.venues.upbit, ws_url="ws://127.0.0.1:9/feed")
    config = dataclasses.replace(config, venues=dataclasses.replace(config.venues, upbit=odd))
    assert private_url(config, Venue.UPBIT) is None


def test_streams_are_built_only_where_on_supported_and_locatable():
    config = load_config(SIM_YAML)
    legacy = dataclasses.replace(config.venues.bithumb, api="legacy")
    odd = dataclasses.replace(config.venues.upbit, ws_url="ws://127.0.0.1:9/feed")
    sign = {v: (lambda: "token") for v in Venue}
    assert OrderStreams.from_config(config, sign).venues == [Venue.UPBIT, Venue.BITHUMB]
    for venues in (dataclasses.replace(config.venues, bithumb=legacy, upbit=odd),
                   dataclasses.replace(config.venues, **{v.value: dataclasses.replace(
                       config.venues[v], private_stream=False) for v in Venue})):
        assert OrderStreams.from_config(dataclasses.replace(config, venues=venues), sign).venues == []


# --- the sim's endpoints ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    config = load_config(SIM_YAML)
    config = dataclasses.replace(config, markets=["KRW-BTC"])
    with SimCluster.from_config(config) as running:
        wait_until(lambda: running.market_stats().published > 20, 5, message="first books")
        yield running


def _config(cluster):
    return cluster.apply_to(dataclasses.replace(load_config(SIM_YAML), markets=["KRW-BTC"]))


def _signer(cluster, venue, **kwargs):
    creds = cluster.credentials(venue)
    if venue is Venue.UPBIT:
        return UpbitAuth(creds.access_key, creds.secret_key, **kwargs)
    return BithumbAuth(creds.access_key, creds.secret_key, **kwargs)


def _cross(cluster, venue, side, client_id, volume="0.001"):
    bids, asks = cluster.exchange(venue).book("KRW-BTC")
    # the deepest level: the book may move before the order arrives; it still fills from the top
    price = asks[-1][0] if side is Side.BUY else bids[-1][0]
    return OrderRequest(venue, "KRW-BTC", side, OrderType.LIMIT, price=price, volume=D(volume),
                        tif=TimeInForce.IOC, client_id=client_id)


@pytest.mark.parametrize("venue", list(Venue))
@pytest.mark.parametrize("token", ["missing", "bad_signature", "stale"])
def test_sim_refuses_a_bad_token_with_the_venue_error_and_closes(cluster, venue, token):
    url = cluster.endpoints(venue).private_ws_url
    header = {}
    if token == "bad_signature":
        header = {"Authorization": "Bearer " + _signer(cluster, venue).token()[:-4] + "AAAA"}
    elif token == "stale":
        if venue is Venue.UPBIT:
            pytest.skip("Upbit's JWT carries no timestamp")
        header = {"Authorization": "Bearer " + _signer(cluster, venue, clock_ms=lambda: 1).token()}
    ws = websocket.create_connection(url, timeout=3, header=header)
    try:
        _, data = ws.recv_data()
        assert orjson.loads(data)["error"]["name"] == "INVALID_AUTH"
        opcode, _ = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
    finally:
        ws.close()


@pytest.mark.parametrize("venue", list(Venue))
def test_sim_pushes_every_state_change_with_the_ids_and_amounts_rest_reports(cluster, venue):
    config = _config(cluster)
    client = make_client(venue, config, cluster.credentials(venue))
    ws = websocket.create_connection(config.venues[venue].private_ws_url, timeout=3,
                                     header={"Authorization": f"Bearer {client.stream_token()}"})
    try:
        ws.send('[{"ticket":"t"},{"type":"myOrder","codes":["KRW-BTC"]},{"type":"myAsset"}]')
        hub = cluster.private_hub(venue)  # the venue sends no ack: order only once it subscribed
        assert wait_until(lambda: any(c.orders is not None and c.assets
                                      for clients in hub._by_key.values() for c in clients))
        request = _cross(cluster, venue, Side.BUY, f"ps-{venue.value}-1")
        placed = client.place_order(request)
        flavour = "upbit" if venue is Venue.UPBIT else "bithumb"
        orders, assets = [], []
        while not orders or orders[-1].state not in ("done", "cancel"):
            event = decode(ws.recv_data()[1], venue.value, flavour)
            (orders if isinstance(event, OrderEvent) else assets).append(event)
        rest = client.get_order(order_id=placed.order_id)  # the stream is never ahead of a read
        assert [e.state for e in orders] == ["wait"] + ["trade"] * len(rest.fills) + ["done"]
        assert {e.order_id for e in orders} == {rest.order_id}
        assert {e.client_id for e in orders} == {request.client_id}
        last = orders[-1]
        assert rest.status is OrderStatus.DONE
        assert (last.executed_volume, last.executed_funds, last.paid_fee) == (
            rest.executed_volume, rest.executed_funds, rest.paid_fee)
        assert [(e.trade_id, e.trade_price, e.trade_volume) for e in orders if e.state == "trade"] == [
            (f.trade_id, f.price, f.volume) for f in rest.fills]
        balances = client.get_balances()
        latest = {}
        for event in assets:
            latest.update(event.balances)
        assert latest["BTC"] == (balances["BTC"].free, balances["BTC"].locked)
    finally:
        ws.close()
        client.close()


def test_sim_answers_myasset_with_codes_wrong_format(cluster):
    client = make_client(Venue.UPBIT, _config(cluster), cluster.credentials(Venue.UPBIT))
    ws = websocket.create_connection(cluster.endpoints(Venue.UPBIT).private_ws_url, timeout=3,
                                     header={"Authorization": f"Bearer {client.stream_token()}"})
    try:
        ws.send('[{"ticket":"t"},{"type":"myAsset","codes":["KRW-BTC"]}]')
        assert orjson.loads(ws.recv_data()[1])["error"]["name"] == "WRONG_FORMAT"
    finally:
        ws.close()
        client.close()


# --- the engine's stream client --------------------------------------------------------------

def _streams(cluster, config=None, signers=None):
    config = config or _config(cluster)
    clients = {v: make_client(v, config, cluster.credentials(v)) for v in Venue}
    streams = OrderStreams.from_config(config, signers or {v: c.stream_token for v, c in clients.items()})
    return streams, clients


def test_stream_threads_connect_see_fills_and_reconnect_after_a_drop(cluster):
    streams, clients = _streams(cluster)
    streams.start()
    try:
        assert set(streams.feed_stats()) == {"upbit-private", "bithumb-private"}
        names = {t.name for t in threading.enumerate()}
        assert {"feed-upbit-private", "feed-bithumb-private"} <= names
        wait_until(lambda: all(streams.is_up(v) for v in Venue), 5, message="streams up")
        placed = clients[Venue.BITHUMB].place_order(_cross(cluster, Venue.BITHUMB, Side.SELL, "ps-r-1"))
        def final():
            result = streams.result(Venue.BITHUMB, placed.order_id, None, OrderType.LIMIT)
            return result is not None and result.status is not OrderStatus.OPEN

        wait_until(final, 3, message="the fill on the stream")
        result = streams.result(Venue.BITHUMB, None, "ps-r-1", OrderType.LIMIT)
        rest = clients[Venue.BITHUMB].get_order(order_id=placed.order_id)
        assert (result.status, result.executed_volume, result.executed_funds, result.fills) == (
            rest.status, rest.executed_volume, rest.executed_funds, rest.fills)
        epoch = streams.mark(Venue.UPBIT, None, None)[0]
        cluster.faults(Venue.UPBIT).drop_ws()
        wait_until(lambda: streams.mark(Venue.UPBIT, None, None)[0] >= epoch + 2 and streams.is_up(Venue.UPBIT),
                   10, message="reconnected")
        assert streams.stats()["upbit"]["reconnects"] >= 1
    finally:
        streams.stop()
        for client in clients.values():
            client.close()


def test_stream_with_rejected_keys_never_comes_up_backs_off_and_logs_no_secret(cluster):
    from loguru import logger

    secret = "wrong-secret-0123456789"
    bad = UpbitAuth(cluster.credentials(Venue.UPBIT).access_key, secret)
    tokens: list[str] = []

    def sign():
        tokens.append(bad.token())
        return tokens[-1]

    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    streams, clients = _streams(cluster, signers={Venue.UPBIT: sign})
    assert streams.venues == [Venue.UPBIT]
    streams.start()
    try:
        wait_until(lambda: streams.stats()["upbit"]["reconnects"] >= 2, 10, message="retries")
        assert not streams.is_up(Venue.UPBIT)
        assert streams.stats()["upbit"]["state"] in ("backoff", "connecting", "connected")
    finally:
        streams.stop()
        logger.remove(sink)
        for client in clients.values():
            client.close()
    text = "\n".join(lines)
    assert "INVALID_AUTH" in text  # the venue's refusal is reported...
    assert secret not in text and not any(t in text or t.split(".")[2] in text for t in tokens)  # ...not the keys


def test_quiet_stream_is_kept_alive_by_ping_text_and_unsignable_connects_are_retried(cluster):
    config = _config(cluster)
    config = dataclasses.replace(config, feed=dataclasses.replace(config.feed, ping_interval_s=0.1))
    client = make_client(Venue.UPBIT, config, cluster.credentials(Venue.UPBIT))

    def no_keys():
        raise RuntimeError("no keys loaded")

    streams = OrderStreams.from_config(config, {Venue.UPBIT: client.stream_token, Venue.BITHUMB: no_keys})
    streams.start()
    try:
        # nothing trades: only the {"status":"UP"} answers to the PINGs arrive, and they count
        wait_until(lambda: streams.stats()["upbit"]["messages"] >= 4, 5, message="UP answers")
        assert streams.is_up(Venue.UPBIT) and streams.stats()["upbit"]["reconnects"] == 0
        wait_until(lambda: streams.stats()["bithumb"]["reconnects"] >= 2, 5, message="retries")
        assert not streams.is_up(Venue.BITHUMB)
        assert {t.name for t in threading.enumerate()} >= {"feed-bithumb-private"}  # still trying
    finally:
        streams.stop()
        client.close()


def test_engine_follows_legs_and_balances_by_its_streams_and_shows_them(cluster, tmp_path):
    from karb.config import JournalConfig
    from karb.engine import Engine

    config = _config(cluster)
    config = dataclasses.replace(config, journal=JournalConfig(str(tmp_path / "j.sqlite")),
                                 risk=dataclasses.replace(config.risk, kill_switch_file=str(tmp_path / "KILL")),
                                 monitor=dataclasses.replace(config.monitor, metrics_port=0))
    clients = {v: make_client(v, config, cluster.credentials(v)) for v in Venue}
    try:
        engine = Engine(config, clients, "sim")
        assert engine.streams is not None and engine.streams.venues == [Venue.UPBIT, Venue.BITHUMB]
        assert engine.executor.placer.streams is engine.streams
        assert engine.balance_sync.streams is engine.streams
        assert {"upbit", "bithumb", "upbit-private", "bithumb-private"} == set(engine.snapshot().feeds)
        assert Engine(config, clients, "dry_run").streams is None  # paper fills: nothing to follow
    finally:
        for client in clients.values():
            client.close()
