"""The Placer following a leg by the private order stream first, REST as fallback and check."""
from __future__ import annotations

import dataclasses
import threading
from decimal import Decimal as D
from pathlib import Path

import pytest

from feeds.private import OrderEvent
from karb.clock import SystemClock
from karb.config import load_config
from karb.exchanges.factory import make_client
from karb.journal import Journal
from karb.legs import Leg, LegState
from karb.model import OrderRequest, OrderResult, OrderStatus, OrderType, Side, TimeInForce, Venue
from karb.order_stream import OrderStreams
from karb.placement import Placer
from karb.sim.cluster import SimCluster
from tests.conftest import wait_until
from tests.stub_venue import StubVenue
from tests.trading_fixtures import make_config

UP = Venue.UPBIT
PRICE = D("140000000")


class CountingVenue(StubVenue):
    def __init__(self, venue):
        super().__init__(venue)
        self.lookups = 0
        self.placed = threading.Event()
        self.on_placed = None  # called with the answer before it is returned

    def place_order(self, request, priority=False):
        result = super().place_order(request, priority)
        if self.on_placed is not None:
            self.on_placed(result)
        self.placed.set()
        return result

    def get_order(self, order_id=None, client_id=None):
        self.lookups += 1
        return super().get_order(order_id, client_id)


@pytest.fixture
def rig(tmp_path):
    config = make_config(tmp_path, execution={"stream_fallback_ms": 5000, "fill_timeout_s": 10})
    journal = Journal(config.journal.path)
    journal.start()
    venue = CountingVenue(UP)
    streams = OrderStreams([UP])
    placer = Placer({UP: venue, Venue.BITHUMB: StubVenue(Venue.BITHUMB)}, journal, config.execution,
                    SystemClock(), streams=streams)
    yield placer, venue, streams, journal
    journal.stop()


def leg(client_id="L1", volume="0.01"):
    return Leg("buy", OrderRequest(UP, "KRW-BTC", Side.BUY, OrderType.LIMIT, client_id, price=PRICE,
                                   volume=D(volume), tif=TimeInForce.IOC))


def event(order_id, client_id, state, executed, trade=None, funds=None):
    executed = D(executed)
    return OrderEvent("upbit", "KRW-BTC", order_id, client_id, "bid", "limit", state, executed,
                      D("0.01") - executed, PRICE * executed if funds is None else funds,
                      (PRICE * executed * D("0.0005")), trade_id=trade and trade[0],
                      trade_price=trade and PRICE, trade_volume=trade and D(trade[1]))


def fill_events(result, cid):
    return [event(result.order_id, cid, "wait", 0), event(result.order_id, cid, "trade", "0.01", ("t1", "0.01")),
            event(result.order_id, cid, "done", "0.01")]


def test_fill_seen_on_the_stream_before_the_rest_answer_needs_no_lookup(rig):
    placer, venue, streams, journal = rig
    streams.on_stream(UP, True, "test")
    venue.script = ["ack"]  # REST: OPEN, nothing filled; the fill shows only when looked up
    venue.on_placed = lambda result: [streams.on_order(UP, e) for e in fill_events(result, "L1")]
    done = placer.run("s1", leg())
    assert done.state is LegState.FILLED and done.executed_volume == D("0.01")
    assert venue.lookups == 0 and placer.stream_applied >= 1
    assert [f.trade_id for f in done.fills] == ["t1"]


def test_fill_seen_on_the_stream_while_the_leg_waits(rig):
    placer, venue, streams, journal = rig
    streams.on_stream(UP, True, "test")
    venue.script = ["ack"]

    def push():
        venue.placed.wait(5)
        result = venue.orders["L1"]
        for e in fill_events(result, "L1"):
            streams.on_order(UP, e)

    pusher = threading.Thread(target=push, name="test-push")
    pusher.start()
    done = placer.run("s1", leg())
    pusher.join(5)
    assert done.state is LegState.FILLED and venue.lookups == 0


def test_leg_final_from_an_answer_without_executions_takes_them_from_the_stream(rig):
    placer, venue, streams, journal = rig
    streams.on_stream(UP, True, "test")

    venue.on_placed = lambda result: [streams.on_order(UP, e) for e in fill_events(result, "L1")]
    original = venue.place_order  # answers FILLED, as Upbit's POST does, without its trades
    venue.place_order = lambda request, priority=False: dataclasses.replace(original(request, priority), fills=())
    done = placer.run("s1", leg())
    assert done.state is LegState.FILLED and venue.lookups == 0
    assert [(f.trade_id, f.volume) for f in done.fills] == [("t1", D("0.01"))]
    journal.flush()
    assert [r["trade_id"] for r in journal.query("SELECT trade_id FROM fills")] == ["t1"]


def test_stream_down_falls_back_to_rest_polling(rig):
    placer, venue, streams, journal = rig  # never up
    venue.script = ["ack"]
    done = placer.run("s1", leg())
    assert done.state is LegState.FILLED and venue.lookups == 1 and placer.stream_applied == 0


def test_stream_up_but_silent_asks_rest_after_the_fallback_interval(tmp_path):
    config = make_config(tmp_path, execution={"stream_fallback_ms": 30})
    journal = Journal(config.journal.path)
    journal.start()
    try:
        venue = CountingVenue(UP)
        streams = OrderStreams([UP])
        streams.on_stream(UP, True, "test")
        placer = Placer({UP: venue}, journal, config.execution, SystemClock(), streams=streams)
        venue.script = ["ack"]
        done = placer.run("s1", leg())
        assert done.state is LegState.FILLED and venue.lookups == 1
    finally:
        journal.stop()


def test_stream_going_down_while_a_leg_waits_sends_it_to_rest_at_once(rig):
    placer, venue, streams, journal = rig  # fallback 5 s: only the drop can wake it sooner
    streams.on_stream(UP, True, "test")
    venue.script = ["ack"]

    def drop():
        venue.placed.wait(5)
        streams.on_stream(UP, False, "connection lost")

    dropper = threading.Thread(target=drop, name="test-drop")
    dropper.start()
    done = placer.run("s1", leg())
    dropper.join(5)
    assert done.state is LegState.FILLED and venue.lookups == 1


def test_stream_account_missing_an_execution_is_checked_with_rest_at_once(tmp_path):
    # a fallback far beyond the fill timeout: waiting for it would end in a cancel
    config = make_config(tmp_path, execution={"stream_fallback_ms": 60000, "fill_timeout_s": 1})
    journal = Journal(config.journal.path)
    journal.start()
    try:
        venue = CountingVenue(UP)
        streams = OrderStreams([UP])
        streams.on_stream(UP, True, "test")
        placer = Placer({UP: venue}, journal, config.execution, SystemClock(), streams=streams)
        venue.script = ["ack"]
        venue.on_placed = lambda result: streams.on_order(UP, event(result.order_id, "L1", "done", "0.01"))
        done = placer.run("s1", leg())  # "done" came, its trade event did not: not complete
        assert done.state is LegState.FILLED and venue.lookups == 1 and placer.stream_applied == 0
        assert venue.cancelled == []
        assert [f.trade_id for f in done.fills] == [None]  # REST's executions, not invented ones
    finally:
        journal.stop()


def test_stale_stream_event_never_regresses_a_leg_or_raises_an_incident(rig):
    placer, venue, streams, journal = rig
    streams.on_stream(UP, True, "test")
    the_leg = leg()
    the_leg.mark_sent(1)
    placer.apply("s1", the_leg, OrderResult(UP, "KRW-BTC", "U-9", "L1", Side.BUY, OrderType.LIMIT,
                                            OrderStatus.OPEN, executed_volume=D("0.005"),
                                            executed_funds=PRICE * D("0.005")))
    streams.on_order(UP, event("U-9", "L1", "wait", 0))  # older than what REST said
    assert placer._from_stream("s1", the_leg)
    assert the_leg.state is LegState.PARTIALLY_FILLED and the_leg.executed_volume == D("0.005")
    journal.flush()
    assert journal.query("SELECT * FROM incidents") == []


def test_events_out_of_order_keep_the_newest_account(rig):
    _, _, streams, _ = rig
    cid, oid = "L2", "U-7"
    streams.on_order(UP, event(oid, cid, "done", "0.01"))
    streams.on_order(UP, event(oid, cid, "trade", "0.004", ("t1", "0.004")))
    assert streams.result(UP, oid, cid, OrderType.LIMIT) is None  # an execution still missing
    streams.on_order(UP, event(oid, cid, "wait", 0))
    streams.on_order(UP, event(oid, cid, "trade", "0.01", ("t2", "0.006")))
    streams.on_order(UP, event(oid, cid, "trade", "0.01", ("t2", "0.006")))  # a duplicate
    result = streams.result(UP, None, cid, OrderType.LIMIT)
    assert result.status is OrderStatus.DONE and result.executed_volume == D("0.01")
    assert sorted(f.trade_id for f in result.fills) == ["t1", "t2"]
    assert streams.stale >= 2


class LostAnswerVenue(CountingVenue):
    """Places (and fills) the order, then the answer is lost; look-ups fail meanwhile."""

    def __init__(self, venue, streams=None):
        super().__init__(venue)
        self.streams = streams
        self.script = ["timeout"]
        self.down.set()

    def place_order(self, request, priority=False):
        try:
            return super().place_order(request, priority)
        finally:
            if self.streams is not None:  # the stream heard of it all the same
                for e in fill_events(self.orders[request.client_id], request.client_id):
                    self.streams.on_order(UP, e)


@pytest.mark.parametrize("stream_told", [True, False])
def test_answer_lost_order_is_found_by_its_streams_account_never_concluded_absent(rig, stream_told):
    placer, _, streams, journal = rig
    streams.on_stream(UP, True, "test")
    venue = LostAnswerVenue(UP, streams if stream_told else None)
    placer.clients = {UP: venue}
    placer.config = dataclasses.replace(placer.config, lookup_attempts=2, poll_interval_ms=1)
    done = placer.run("s1", leg())
    if stream_told:
        assert done.state is LegState.FILLED and done.executed_volume == D("0.01")
    else:  # silence proves nothing: still possibly placed, looked up by the leg-resolver
        assert done.state is LegState.UNKNOWN
    assert venue.placed_count("L1") == 1 and len(venue.placements) == 1


# --- against the sim ---------------------------------------------------------------------------

SIM_YAML = Path(__file__).resolve().parent.parent / "config" / "sim.yaml"


@pytest.mark.parametrize("venue", list(Venue))
def test_sim_leg_is_followed_by_its_stream_without_polling(tmp_path, venue):
    config = dataclasses.replace(load_config(SIM_YAML), markets=["KRW-BTC"])
    with SimCluster.from_config(config) as cluster:
        wait_until(lambda: cluster.market_stats().published > 20, 5, message="books")
        config = cluster.apply_to(config)
        clients = {v: make_client(v, config, cluster.credentials(v)) for v in Venue}
        streams = OrderStreams.from_config(config, {v: c.stream_token for v, c in clients.items()})
        journal = Journal(str(tmp_path / "j.sqlite"))
        journal.start()
        streams.start()
        try:
            wait_until(lambda: streams.is_up(venue), 5, message="stream up")
            placer = Placer(clients, journal, config.execution, SystemClock(), streams=streams)
            bids, asks = cluster.exchange(venue).book("KRW-BTC")
            the_leg = Leg("sell", OrderRequest(venue, "KRW-BTC", Side.SELL, OrderType.LIMIT, f"sim-{venue.value}",
                                               price=bids[0][0], volume=D("0.001"), tif=TimeInForce.IOC))
            placer.run("s1", the_leg)
            assert the_leg.state is LegState.FILLED and placer.rest_refreshes == 0
            rest = clients[venue].get_order(order_id=the_leg.order_id)
            assert (the_leg.executed_volume, the_leg.executed_funds, the_leg.paid_fee) == (
                rest.executed_volume, rest.executed_funds, rest.paid_fee)
        finally:
            streams.stop()
            journal.stop()
            for client in clients.values():
                client.close()
