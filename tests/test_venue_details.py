"""Venue details the sim shows as the venues do, through the project's own clients (issue 13).

Bithumb's cursor-paged ``/v2/orders/pending``, its ``422 order_not_ready``, Upbit's "accepted,
fill later" placement answer, cancelled orders keeping ``remaining_volume``, the venues' error
names, and a sim that serves only once every market has a book. The client side of each is also
tested against documented bodies in ``test_exchanges_upbit.py`` / ``test_exchanges_bithumb.py``.
"""
from __future__ import annotations

import itertools
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
import responses
import yaml

from karb.config import parse_config
from karb.exchanges.bithumb import BithumbClient
from karb.exchanges.errors import OrderNotReady
from karb.exchanges.factory import make_client
from karb.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce, Venue
from karb.recovery import cancel_open_orders
from karb.sim.cluster import SimCluster
from tests.conftest import wait_until
from tests.exchanges_support import BASE, venue_config

pytestmark = pytest.mark.integration
SIM_YAML = Path(__file__).resolve().parent.parent / "config" / "sim.yaml"
MARKETS = ["KRW-BTC", "KRW-XRP"]
D = Decimal
_ids = itertools.count(1)


def sim_config(**sim_changes):
    data = yaml.safe_load(SIM_YAML.read_text())
    data["markets"] = MARKETS
    data["sim"]["markets"] = {m: data["sim"]["markets"][m] for m in MARKETS}
    data["sim"].update(sim_changes)
    data["log"] = {"file": None}
    return parse_config(data)


# Reads lag placement by 0.3 s here (the defaults are 30 / 15 ms, exercised by the engine tests),
# so "read right after placing" is right after even on a loaded machine.
LAG = {"fill_visible_ms": 300, "not_ready_ms": 300}


@pytest.fixture(scope="module")
def sim():
    """Two pending orders per page; reads of a new order lag (``LAG``)."""
    config = sim_config(bithumb_pending_page=2, venues={"upbit": LAG, "bithumb": LAG})
    with SimCluster.from_config(config) as cluster:
        yield cluster, cluster.apply_to(config)


def client(sim, venue):
    cluster, config = sim
    return make_client(venue, config, cluster.credentials(venue))


def order(venue, side, price, volume, tif=TimeInForce.GTC, market="KRW-BTC") -> OrderRequest:
    return OrderRequest(venue=venue, market=market, side=side, order_type=OrderType.LIMIT,
                        client_id=f"vd-{venue.value}-{next(_ids)}-{time.monotonic_ns()}",
                        price=price, volume=volume, tif=tif)


def resting_bids(sim, venue, n):
    cluster, _ = sim
    bids, _ = cluster.exchange(venue).book("KRW-BTC")
    low = bids[-1][0] - 100_000  # far below the book: rests
    return [order(venue, Side.BUY, low - 1000 * i, D("0.001")) for i in range(n)]


# --- 1. Bithumb GET /v2/orders/pending: cursor pages -----------------------------------------

def test_bithumb_pending_served_in_cursor_pages_and_client_follows_them_to_the_end(sim):
    c = client(sim, Venue.BITHUMB)
    placed = [c.place_order(r).order_id for r in resting_bids(sim, Venue.BITHUMB, 5)]
    try:
        first = c._private("GET", "/v2/orders/pending", [("market", "KRW-BTC")])
        assert len(first["orders"]) == 2 and first["has_next"] is True and first["next_key"]

        listed = [o.order_id for o in c.get_open_orders("KRW-BTC")]

        assert sorted(listed) == sorted(placed) and len(listed) == len(set(listed)) == 5
    finally:
        for order_id in placed:
            c.cancel_order(order_id=order_id)
        c.close()
    assert c.get_open_orders("KRW-BTC") == []


def test_bithumb_pending_with_a_cursor_it_never_gave_is_a_bad_request(sim):
    from karb.exchanges.errors import InvalidOrder

    c = client(sim, Venue.BITHUMB)
    with pytest.raises(InvalidOrder) as err:
        c._private("GET", "/v2/orders/pending", [("next_key", "not-a-cursor!")])
    assert err.value.code == "invalid_parameter"
    c.close()


def test_bithumb_pending_as_the_older_bare_list_is_read_too():
    config = sim_config(bithumb_pending_shape="list")
    with SimCluster.from_config(config) as cluster:
        c = make_client(Venue.BITHUMB, cluster.apply_to(config), cluster.credentials(Venue.BITHUMB))
        placed = [c.place_order(r).order_id for r in resting_bids((cluster, None), Venue.BITHUMB, 3)]
        assert isinstance(c._private("GET", "/v2/orders/pending", []), list)
        assert sorted(o.order_id for o in c.get_open_orders("KRW-BTC")) == sorted(placed)
        c.close()


def test_cancel_all_sweep_cancels_orders_on_every_pending_page(sim):
    c = client(sim, Venue.BITHUMB)
    placed = [c.place_order(r).order_id for r in resting_bids(sim, Venue.BITHUMB, 5)]
    incidents = []
    executor = SimpleNamespace(
        clients={Venue.BITHUMB: c}, config=SimpleNamespace(markets=["KRW-BTC"]),
        journal=SimpleNamespace(record_incident=lambda *args: incidents.append(args)))

    assert cancel_open_orders(executor, "kill_switch") == 5  # three pages of two

    assert [(kind, detail) for kind, detail, *_ in incidents] == [("kill_switch", "cancelled 5 open orders")]
    assert all(c.get_order(order_id=i).status is OrderStatus.CANCELLED for i in placed)
    c.close()


@responses.activate
def test_cancel_all_with_a_pending_page_not_understood_journals_a_critical_incident():
    # the caller's side of "shape not understood": an ERROR and a critical incident naming the
    # venue, never "cancelled 0 open orders" at info level
    from karb.secrets import Credentials
    responses.get(f"{BASE}/v2/orders/pending", json={"list": [], "cursor": "x"})
    c = BithumbClient(venue_config(), Credentials("a", "b"))
    incidents = []
    executor = SimpleNamespace(
        clients={Venue.BITHUMB: c}, config=SimpleNamespace(markets=["KRW-BTC"]),
        journal=SimpleNamespace(record_incident=lambda *args: incidents.append(args)))

    assert cancel_open_orders(executor, "shutdown") == 0

    ((kind, detail, _, severity),) = incidents
    assert kind == "shutdown" and severity == "critical"
    assert "could NOT list open orders on bithumb KRW-BTC" in detail and "bad_body" in detail
    c.close()


# --- 2. Bithumb 422 order_not_ready -----------------------------------------------------------

def test_bithumb_sim_answers_order_not_ready_for_a_young_order_and_the_client_rides_it_out(sim):
    cluster, _ = sim
    c = client(sim, Venue.BITHUMB)
    c.NOT_READY_WAIT_S = 0.0  # no retry: see the venue's answer itself
    (request,) = resting_bids(sim, Venue.BITHUMB, 1)
    placed = c.place_order(request)
    with pytest.raises(OrderNotReady) as err:
        c.get_order(order_id=placed.order_id)
    assert err.value.code == "order_not_ready" and err.value.status == 422

    c.NOT_READY_WAIT_S = 2.0
    (second,) = resting_bids(sim, Venue.BITHUMB, 1)
    young = c.place_order(second)
    cancelled = c.cancel_order(order_id=young.order_id)  # read-back comes too soon, retried

    assert cancelled.status is OrderStatus.CANCELLED and cancelled.order_id == young.order_id
    assert wait_until(lambda: c.get_order(order_id=placed.order_id)).status is OrderStatus.OPEN
    c.cancel_order(order_id=placed.order_id)
    c.close()


# --- 4. cancelled orders keep their unfilled remaining_volume --------------------------------

@pytest.mark.parametrize("venue", list(Venue))
def test_cancelled_order_keeps_its_unfilled_remaining_volume(sim, venue):
    cluster, _ = sim
    c = client(sim, venue)
    cluster.faults(venue).clear()
    (request,) = resting_bids(sim, venue, 1)
    placed = c.place_order(request)
    c.cancel_order(order_id=placed.order_id)

    after = wait_until(lambda: (r := c.get_order(order_id=placed.order_id)).is_final and r)

    assert after.status is OrderStatus.CANCELLED
    assert after.remaining_volume == D("0.001") and after.executed_volume == 0
    c.close()


@pytest.mark.parametrize("venue", list(Venue))
def test_partly_filled_ioc_keeps_the_unfilled_part_as_remaining_volume(sim, venue):
    cluster, _ = sim
    c = client(sim, venue)
    cluster.faults(venue).partial_next_ioc(0.5)
    _, asks = cluster.exchange(venue).book("KRW-BTC")
    request = order(venue, Side.BUY, asks[0][0] + 20_000, D("0.002"), TimeInForce.IOC)
    c.place_order(request)

    final = wait_until(lambda: (r := c.get_order(client_id=request.client_id)).is_final and r, 3)

    # the client reads executed_volume, never volume - remaining_volume
    assert final.executed_volume == D("0.001") and final.remaining_volume == D("0.001")
    c.close()


# --- 8. the sim serves only once every market has a book -------------------------------------

def test_first_ws_snapshot_right_after_start_has_levels_for_every_market_on_both_venues():
    import orjson
    import websocket

    config = sim_config()
    with SimCluster.from_config(config) as cluster:  # start() has returned: "serving"
        for venue in Venue:
            ws = websocket.create_connection(cluster.endpoints(venue).ws_url, timeout=3)
            try:
                ws.send(orjson.dumps([{"ticket": "ready-check"}, {"type": "orderbook", "codes": MARKETS},
                                      {"format": "DEFAULT"}]))
                snapshots = {}
                while len(snapshots) < len(MARKETS):
                    frame = orjson.loads(ws.recv_data()[1])
                    if frame.get("stream_type") == "SNAPSHOT":
                        snapshots[frame["code"]] = frame
            finally:
                ws.close()
            for market, frame in snapshots.items():
                units = frame["orderbook_units"]
                assert units and all(u["ask_size"] > 0 and u["bid_size"] > 0 for u in units[:1]), \
                    f"{venue.value} {market} served an empty first snapshot"


def test_book_command_with_sim_prints_levels_every_time(capsys):
    from karb import cli

    for _ in range(3):
        assert cli.main(["book", "KRW-BTC", "--depth", "2", "--sim", "--config", str(SIM_YAML)]) == 0
        out = capsys.readouterr().out
        assert out.count("  ask ") == 4 and out.count("  bid ") == 4, out
        assert "one side empty" not in out


# --- 3. Upbit: placement answers "wait", the fill shows later on GET /v1/order ---------------

def test_upbit_ioc_placement_answers_wait_then_the_fill_shows_on_get_order(sim):
    cluster, _ = sim
    c = client(sim, Venue.UPBIT)
    _, asks = cluster.exchange(Venue.UPBIT).book("KRW-BTC")
    request = order(Venue.UPBIT, Side.BUY, asks[0][0] + 20_000, D("0.001"), TimeInForce.IOC)
    sent = time.monotonic()

    answer = c._private("POST", "/v1/orders", json_body={
        "market": "KRW-BTC", "side": "bid", "volume": "0.001", "price": str(request.price),
        "ord_type": "limit", "time_in_force": "ioc", "identifier": request.client_id})
    first_read = c.get_order(client_id=request.client_id)
    final = wait_until(lambda: (r := c.get_order(client_id=request.client_id)).is_final and r, 3)
    seen = time.monotonic() - sent

    # as the docs' example answer: accepted, nothing traded yet (the venue filled it at once)
    assert answer["state"] == "wait" and answer["trades_count"] == 0 and answer["executed_volume"] == "0"
    assert answer["remaining_volume"] == "0.001" and D(answer["locked"]) > 0
    assert first_read.status is OrderStatus.OPEN and first_read.executed_volume == 0
    assert final.executed_volume == D("0.001") and final.fills and final.status is OrderStatus.DONE
    assert seen >= cluster.sim.venues.upbit.fill_visible_ms / 1000
    c.close()


def test_fill_visible_ms_zero_answers_the_fill_in_the_placement():
    config = sim_config(venues={"upbit": {"fill_visible_ms": 0}})
    with SimCluster.from_config(config) as cluster:
        c = make_client(Venue.UPBIT, cluster.apply_to(config), cluster.credentials(Venue.UPBIT))
        _, asks = cluster.exchange(Venue.UPBIT).book("KRW-BTC")
        result = c.place_order(order(Venue.UPBIT, Side.BUY, asks[0][0] + 20_000, D("0.001"), TimeInForce.IOC))
        assert result.status is OrderStatus.DONE and result.executed_volume == D("0.001")
        c.close()


@pytest.mark.parametrize("venue", list(Venue))
def test_placer_follows_an_acknowledged_ioc_to_its_fill_by_polling(sim, venue):
    from karb.clock import SystemClock
    from karb.config import ExecutionConfig
    from karb.legs import Leg, LegState
    from karb.placement import Placer

    cluster, _ = sim
    c = client(sim, venue)
    journal = SimpleNamespace(record_order=lambda *a: None, record_fills=lambda *a: None,
                              record_incident=lambda *a: incidents.append(a))
    incidents = []
    placer = Placer({venue: c}, journal, ExecutionConfig(), SystemClock())
    _, asks = cluster.exchange(venue).book("KRW-BTC")
    leg = Leg("buy", order(venue, Side.BUY, asks[0][0] + 20_000, D("0.001"), TimeInForce.IOC))

    placer.run("sig-1", leg)

    assert leg.state is LegState.FILLED and leg.executed_volume == D("0.001") and leg.fills
    assert LegState.ACKNOWLEDGED in [state for state, _ in leg.history]  # acknowledged, then filled
    assert incidents == []
    c.close()


# --- 5. error names as each venue documents them ----------------------------------------------

def test_upbit_sim_rejections_carry_upbit_names_and_map_to_typed_errors(sim):
    from karb.exchanges.errors import InvalidOrder, RateLimited, VenueUnavailable

    cluster, _ = sim
    c = client(sim, Venue.UPBIT)
    bids, _ = cluster.exchange(Venue.UPBIT).book("KRW-BTC")
    low = bids[-1][0] - 100_000
    with pytest.raises(InvalidOrder) as over:  # ~ 10 x 130M KRW: above the 1e9 KRW maximum
        c.place_order(order(Venue.UPBIT, Side.BUY, low, D("10")))
    with pytest.raises(InvalidOrder) as market:
        c.place_order(order(Venue.UPBIT, Side.BUY, D("100"), D("100"), market="KRW-NOPE"))
    cluster.faults(Venue.UPBIT).rest_error(403)
    with pytest.raises(VenueUnavailable) as offline:  # maintenance: not placed, not "unknown"
        c.place_order(order(Venue.UPBIT, Side.BUY, low, D("0.001")))
    cluster.faults(Venue.UPBIT).rest_error(429)
    with pytest.raises(RateLimited) as limited:
        c.place_order(order(Venue.UPBIT, Side.BUY, low, D("0.001")))

    assert over.value.code == "over_krw_funds_bid" and market.value.code == "notfoundmarket"
    assert (offline.value.code, offline.value.status) == ("market_offline", 403)
    assert limited.value.venue_message == "Too many API requests."
    cluster.faults(Venue.UPBIT).clear()
    c.close()


def test_bithumb_sim_rejections_carry_bithumb_names(sim):
    from karb.exchanges.errors import AuthError, InvalidOrder

    cluster, _ = sim
    c = client(sim, Venue.BITHUMB)
    bids, _ = cluster.exchange(Venue.BITHUMB).book("KRW-BTC")
    with pytest.raises(InvalidOrder) as market:
        c.place_order(order(Venue.BITHUMB, Side.BUY, D("100"), D("100"), market="KRW-NOPE"))
    with pytest.raises(InvalidOrder) as tick:
        c.place_order(order(Venue.BITHUMB, Side.BUY, bids[0][0] + 1, D("0.001")))
    cluster.faults(Venue.BITHUMB).rest_error(403)
    with pytest.raises(AuthError) as blocked:
        c.get_balances()

    assert market.value.code == "currency does not have a valid value"
    assert tick.value.code == "invalid_price_bid" and blocked.value.code == "blocked_member_id"
    cluster.faults(Venue.BITHUMB).clear()
    c.close()


# --- 6. Upbit's order limit 12/s; 7. fee fallbacks and the start-up fee line -----------------

def test_defaults_follow_the_venues_order_limit_and_fee_schedules():
    from karb.cli import REPO_CONFIG
    from karb.config import RateLimitConfig, load_config

    config = load_config(REPO_CONFIG / "default.yaml")

    assert RateLimitConfig().order_per_s == 12  # Upbit since 2026-08-21 (was 8)
    assert config.venues.upbit.rate_limits.order_per_s == 12
    assert (config.venues.upbit.taker_fee, config.venues.upbit.maker_fee) == (D("0.0005"), D("0.0005"))
    assert (config.venues.bithumb.taker_fee, config.venues.bithumb.maker_fee) == (D("0.0004"), D("0.0004"))


def test_upbit_sim_order_group_allows_12_per_second_and_says_so_in_remaining_req():
    import requests as http

    from karb.exchanges.upbit.auth import UpbitAuth

    config = sim_config()
    with SimCluster.from_config(config) as cluster:  # no other traffic on this account
        creds = cluster.credentials(Venue.UPBIT)
        url = f"{cluster.endpoints(Venue.UPBIT).rest_url}/v1/orders"
        bids, _ = cluster.exchange(Venue.UPBIT).book("KRW-BTC")
        low = str(bids[-1][0] - 200_000)
        auth = UpbitAuth(creds.access_key, creds.secret_key)
        with http.Session() as session:
            wait_until(lambda: time.monotonic() % 1 < 0.3, 2, interval=0.01, message="a fresh second")
            answers = [session.post(url, json={"market": "KRW-BTC", "side": "bid", "volume": "0.001",
                                               "price": low, "ord_type": "limit",
                                               "identifier": f"rl-{i}-{time.time_ns()}"}, auth=auth, timeout=3)
                       for i in range(12)]

    assert [a.status_code for a in answers] == [201] * 12
    assert answers[0].headers["Remaining-Req"] == "group=order; min=1800; sec=11"


def test_start_up_fee_line_says_which_fee_each_venues_answer_gave():
    from loguru import logger

    from karb.engine import Engine
    from karb.exchanges.errors import VenueUnavailable
    from karb.rules import MarketInfo, RulesBook, describe_fees

    upbit = [MarketInfo("KRW-BTC", taker_fee=D("0.0005")), MarketInfo("KRW-XRP", taker_fee=D("0.0005"))]
    assert describe_fees(Venue.UPBIT, upbit, D("0.0005")) == \
        "upbit fees from the venue's answer: taker 0.05% on 2/2 markets"
    partial = [MarketInfo("KRW-BTC", taker_fee=D("0.0004")), MarketInfo("KRW-XRP")]
    line = describe_fees(Venue.BITHUMB, partial, D("0.0025"))
    assert "taker 0.04% on 1/2 markets" in line and "config fallback 0.25% for KRW-XRP" in line
    assert "trading charges the larger config fallback 0.25%" in line
    assert "gave no fee" in describe_fees(Venue.BITHUMB, [MarketInfo("KRW-BTC")], D("0.0004"))

    class Down:
        def get_market_info(self, markets):
            raise VenueUnavailable(Venue.BITHUMB, "maintenance", "market_offline", 403)

    class Up:
        def get_market_info(self, markets):
            return upbit

    config = sim_config()
    engine = SimpleNamespace(venue_clients={Venue.UPBIT: Up(), Venue.BITHUMB: Down()}, config=config,
                             rules=RulesBook.fallback(MARKETS, {v: (D("0.0005"), D("0.0005")) for v in Venue}))
    lines = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    try:
        Engine._refresh_rules(engine)
    finally:
        logger.remove(sink)

    assert "upbit fees from the venue's answer: taker 0.05% on 2/2 markets" in lines
    (down,) = [line for line in lines if line.startswith("bithumb")]
    assert "market_offline" in down and "config fallback fee: taker 0.0004" in down


@pytest.mark.parametrize("venue", list(Venue))
def test_placer_follows_an_acknowledged_ioc_that_cannot_fill_to_its_cancel(sim, venue):
    from karb.clock import SystemClock
    from karb.config import ExecutionConfig
    from karb.legs import Leg, LegState
    from karb.placement import Placer

    cluster, _ = sim
    c = client(sim, venue)
    journal = SimpleNamespace(record_order=lambda *a: None, record_fills=lambda *a: None,
                              record_incident=lambda *a: None)
    bids, _ = cluster.exchange(venue).book("KRW-BTC")
    leg = Leg("buy", order(venue, Side.BUY, bids[-1][0] - 100_000, D("0.001"), TimeInForce.IOC))

    Placer({venue: c}, journal, ExecutionConfig(), SystemClock()).run("sig-2", leg)

    # accepted first, then the venue's final answer: nothing filled, the IOC's rest cancelled
    assert [s for s, _ in leg.history] == [LegState.NEW, LegState.SENT, LegState.ACKNOWLEDGED,
                                           LegState.CANCELLED]
    assert leg.executed_volume == 0
    c.close()
