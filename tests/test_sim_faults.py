"""The sim faults the chaos campaign arms, and the venue truth its control endpoint serves."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import stat
import threading
import time
import uuid
from contextlib import redirect_stdout
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import requests
import websocket

from karb.cli import build_parser
from karb.commands import sim as sim_command
from karb.config import load_config, parse_config
from karb.exchanges.errors import InvalidOrder, OrderNotFound, OrderStateUnknown
from karb.exchanges.factory import make_client
from karb.model import OrderRequest, OrderType, Side, TimeInForce, Venue
from karb.sim.cluster import SimCluster
from tests.conftest import wait_until

SIM_YAML = Path(__file__).resolve().parent.parent / "config" / "sim.yaml"
D = Decimal


@pytest.fixture(scope="module")
def cluster():
    config = load_config(SIM_YAML)
    config = dataclasses.replace(config, sim=dataclasses.replace(config.sim, update_hz=20.0))
    with SimCluster.from_config(config) as running:
        wait_until(lambda: running.market_stats().published > 100, 5, message="first books")
        yield running


@pytest.fixture(autouse=True)
def _clear_faults(cluster):
    yield
    for venue in Venue:
        cluster.faults(venue).clear()


def client(cluster, venue, read_timeout_s=2.0):
    config = cluster.apply_to(load_config(SIM_YAML))
    vcfg = dataclasses.replace(config.venues[venue], read_timeout_s=read_timeout_s)
    config = dataclasses.replace(config, venues=dataclasses.replace(config.venues, **{venue.value: vcfg}))
    return make_client(venue, config, cluster.credentials(venue))


def ioc_buy(cluster, venue, client_id=None):
    """An IOC buy of 0.001 BTC priced 1% through the best ask: it fills whole at once, even
    if the sim's market moved between reading the book and placing (a loaded machine)."""
    _, asks = cluster.exchange(venue).book("KRW-BTC")
    return OrderRequest(venue, "KRW-BTC", Side.BUY, OrderType.LIMIT, client_id or f"t-{uuid.uuid4().hex[:16]}",
                        price=asks[0][0] + 1_400_000, volume=D("0.001"), tif=TimeInForce.IOC)


@pytest.mark.parametrize("venue", list(Venue))
def test_slow_registration_fills_the_order_but_look_ups_say_not_found_for_the_window(cluster, venue):
    c = client(cluster, venue)
    cluster.faults(venue).slow_registration(0.8)
    request = ioc_buy(cluster, venue)
    placed_at = time.monotonic()
    c.place_order(request)
    with pytest.raises(OrderNotFound):
        c.get_order(client_id=request.client_id)
    with pytest.raises(OrderNotFound):
        c.cancel_order(client_id=request.client_id)
    assert all(o.client_id != request.client_id for o in c.get_open_orders("KRW-BTC"))
    truth = requests.get(f"{cluster.control_url()}/orders/{venue.value}", timeout=3).json()
    (order,) = [o for o in truth["orders"] if o["identifier"] == request.client_id]
    assert order["state"] in ("done", "cancel") and D(order["executed_volume"]) == D("0.001")
    found = wait_until(lambda: _lookup(c, request.client_id), 3, interval=0.05, message="registration")
    assert time.monotonic() - placed_at >= 0.8
    assert found.executed_volume == D("0.001")
    c.close()


def _lookup(c, client_id):
    try:
        return c.get_order(client_id=client_id)
    except OrderNotFound:
        return None


@pytest.mark.parametrize("venue", list(Venue))
def test_lose_answer_places_and_fills_the_order_then_hangs_up(cluster, venue):
    c = client(cluster, venue)
    cluster.faults(venue).lose_answer()
    request = ioc_buy(cluster, venue)
    with pytest.raises(OrderStateUnknown):
        c.place_order(request)
    # the venue shows the fill shortly after accepting the order (sim.venues.*.fill_visible_ms)
    found = wait_until(lambda: (r := c.get_order(client_id=request.client_id)).is_final and r, 3,
                       interval=0.02, message="the fill")
    assert found.executed_volume == D("0.001")
    c.place_order(ioc_buy(cluster, venue))  # one answer lost, the next one comes back
    c.close()


def test_delay_orders_holds_the_order_at_the_venue_past_the_clients_timeout(cluster):
    c = client(cluster, Venue.BITHUMB, read_timeout_s=0.3)
    cluster.faults(Venue.BITHUMB).delay_orders(1.0)
    request = ioc_buy(cluster, Venue.BITHUMB)
    with pytest.raises(OrderStateUnknown):
        c.place_order(request)
    with pytest.raises(OrderNotFound):  # the venue has not taken it in yet
        c.get_order(client_id=request.client_id)
    found = wait_until(lambda: (r := _lookup(c, request.client_id)) and r.is_final and r, 3, interval=0.05,
                       message="the held order")
    assert found.executed_volume == D("0.001")
    c.close()


def test_control_endpoint_serves_accounts_orders_and_placement_attempts(cluster):
    url = cluster.control_url()
    c = client(cluster, Venue.UPBIT)
    request = ioc_buy(cluster, Venue.UPBIT)
    c.place_order(request)
    with pytest.raises(InvalidOrder):  # the venue refuses a reused identifier ...
        c.place_order(ioc_buy(cluster, Venue.UPBIT, client_id=request.client_id))
    truth = requests.get(f"{url}/orders/upbit", timeout=3).json()
    assert truth["attempts"][request.client_id] == 2  # ... but the attempt is counted
    (order,) = [o for o in truth["orders"] if o["identifier"] == request.client_id]
    assert order["side"] == "bid" and D(order["volume"]) == D("0.001") and order["state"] in ("done", "cancel")
    assert D(order["executed_funds"]) > 0 and D(order["paid_fee"]) > 0
    assert abs(order["created_ns"] - time.time_ns()) < 10e9 and order["uuid"]
    accounts = requests.get(f"{url}/accounts", timeout=3).json()
    totals = {ccy: D(b["free"]) + D(b["locked"]) for ccy, b in accounts["upbit"].items()}
    venue_view = {ccy: b.total for ccy, b in cluster.balances(Venue.UPBIT).items()}
    assert totals == venue_view and D(accounts["upbit"]["KRW"]["start"]) == D("50000000")
    assert requests.get(f"{url}/orders/nowhere", timeout=3).status_code == 400
    c.close()


@pytest.mark.parametrize("action, body", [
    ("slow_registration", {"seconds": 1, "count": 2}), ("lose_answer", {"count": 1}),
    ("delay_orders", {"seconds": 1, "count": 1}), ("garbage_frames", {"count": 1}),
    ("future_frames", {"count": 1, "seconds": 60}),
])
def test_control_endpoint_arms_the_campaign_faults(cluster, action, body):
    response = requests.post(f"{cluster.control_url()}/faults/bithumb/{action}", json=body, timeout=3)
    assert response.json() == {"ok": True}


def _subscribed(cluster, venue):
    ws = websocket.create_connection(cluster.endpoints(venue).ws_url, timeout=3)
    ws.send('[{"ticket":"t"},{"type":"orderbook","codes":["KRW-BTC"],"is_only_realtime":true}]')
    orjson.loads(ws.recv_data()[1])
    return ws


def test_garbage_frames_reach_subscribers_and_real_frames_follow(cluster):
    ws = _subscribed(cluster, Venue.UPBIT)
    try:
        cluster.faults(Venue.UPBIT).garbage_frames(3)
        bad, good = 0, 0
        deadline = time.monotonic() + 5
        while (bad < 3 or not good) and time.monotonic() < deadline:
            data = ws.recv_data()[1]
            try:
                frame = orjson.loads(data)
                usable = isinstance(frame, dict) and isinstance(frame.get("orderbook_units"), list) \
                    and all(isinstance(u.get("ask_price"), (int, float)) for u in frame["orderbook_units"])
            except orjson.JSONDecodeError:
                usable = False
            bad, good = bad + (not usable), good + usable
        assert bad == 3 and good
    finally:
        ws.close()


def test_future_frames_stamp_the_next_book_frames_ahead(cluster):
    ws = _subscribed(cluster, Venue.UPBIT)
    try:
        cluster.faults(Venue.UPBIT).future_frames(count=2, seconds=3600)
        stamps = []
        while len(stamps) < 6:
            frame = orjson.loads(ws.recv_data()[1])
            stamps.append(frame["timestamp"] - time.time() * 1000)
        ahead = [s > 3_500_000 for s in stamps]
        assert ahead.count(True) == 2 and not any(ahead[ahead.index(True) + 2:])
    finally:
        ws.close()


def test_scheduled_faults_accept_the_campaign_actions():
    data = {"markets": ["KRW-BTC"], "venues": {v: {"rest_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1",
                                                    "taker_fee": "0.0005", "maker_fee": "0.0005"}
                                               for v in ("upbit", "bithumb")},
            "sim": {"markets": {"KRW-BTC": {"price": "140000000"}},
                    "faults": [{"at_s": 0, "action": "slow_registration", "seconds": 2, "count": 1},
                               {"at_s": 0, "action": "future_frames", "seconds": 60, "count": 1}]}}
    config = parse_config(data)
    with SimCluster.from_config(config) as running:
        for fault in config.sim.faults:
            running.apply_fault(fault)
        assert running.faults(Venue.UPBIT).take_slow_registration() == 2.0


def test_sim_command_writes_its_urls_and_paper_keys_to_an_info_file(tmp_path):
    info_path = tmp_path / "sim.json"
    args = build_parser().parse_args(["sim", "--seed", "3", "--info", str(info_path)])
    stop, out, result = threading.Event(), io.StringIO(), []

    def serve():
        with redirect_stdout(out):
            result.append(sim_command.run(args, stop))

    thread = threading.Thread(target=serve, name="test-sim-info")
    thread.start()
    try:
        wait_until(info_path.exists, 10, message="the info file")
        assert stat.S_IMODE(os.stat(info_path).st_mode) == 0o600
        info = json.loads(info_path.read_text())
        assert info["venues"]["upbit"]["access_key"] in out.getvalue()
        assert requests.get(f"{info['control_url']}/status", timeout=3).status_code == 200
        markets = requests.get(f"{info['venues']['bithumb']['rest_url']}/v1/market/all", timeout=3).json()
        assert {m["market"] for m in markets} == set(info["markets"])
    finally:
        stop.set()
        thread.join(10)
    assert result == [0]
