"""Legacy Bithumb after a restart: the venue order id journalled when the venue answered lets
recovery ask the venue about the order (and cancel it) instead of calling it "never placed"."""
from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
import yaml

from karb.cli import REPO_CONFIG
from karb.clock import SystemClock
from karb.config import parse_config
from karb.exchanges.bithumb.legacy import BithumbLegacyClient, MAX_REMEMBERED
from karb.exchanges.factory import make_client
from karb.execution import Executor
from karb.journal import Journal
from karb.model import OrderType, Side, TimeInForce, Venue
from karb.risk import Risk
from karb.rules import MarketRules, RulesBook
from karb.sim.cluster import SimCluster
from tests.conftest import wait_until
from tests.test_exchanges_bithumb_legacy import limit, make_client as make_stub_client
from tests.trading_fixtures import make_signal

pytestmark = pytest.mark.integration
MARKET = "KRW-XRP"
UP, BT = Venue.UPBIT, Venue.BITHUMB


@pytest.fixture
def sim(tmp_path):
    data = yaml.safe_load((REPO_CONFIG / "sim.yaml").read_text())
    data["markets"] = [MARKET]
    data["sim"]["markets"] = {MARKET: data["sim"]["markets"][MARKET]}
    data["log"] = {"file": None}
    data["journal"] = {"path": str(tmp_path / "journal.sqlite")}
    data["risk"] = {**data.get("risk", {}), "kill_switch_file": str(tmp_path / "KILL")}
    data["execution"] = {**data.get("execution", {}), "not_found_window_s": 0}
    config = parse_config(data)
    with SimCluster.from_config(config).start() as cluster:
        config = cluster.apply_to(config)
        bithumb = dataclasses.replace(config.venues.bithumb, api="legacy")
        yield cluster, dataclasses.replace(config, venues=dataclasses.replace(config.venues, bithumb=bithumb))


def _executor(cluster, config, journal):
    clients = {v: make_client(v, config, cluster.credentials(v)) for v in Venue}
    fees = {v: (config.venues[v].taker_fee, config.venues[v].maker_fee) for v in Venue}
    rules = RulesBook.fallback([MARKET], fees)
    risk = Risk(config, rules, SystemClock())
    for v in Venue:
        risk.ledger.load(v, clients[v].get_balances())
    return Executor(clients, rules, risk, journal, config, SystemClock())


def test_legacy_restart_with_order_left_resting_asks_the_venue_and_cancels_it(sim):
    cluster, config = sim
    journal = Journal(config.journal.path)
    journal.start()
    first = _executor(cluster, config, journal)
    legacy = first.clients[BT]
    assert isinstance(legacy, BithumbLegacyClient)
    legacy.on_order_id = journal.record_order_id  # as the engine wires it
    bid = wait_until(lambda: (v := legacy.get_orderbook(MARKET)).bids and v.bids[0][0], 10.0)
    price = MarketRules(BT, MARKET).round_buy_price(Decimal(repr(bid)) * Decimal("0.8"))
    signal = make_signal("old", volume="10", buy_price=str(price), sell_price=str(price * 2),
                         market=MARKET)
    buy, sell = first._legs(signal)
    journal.record_intent(signal, (buy, sell), {})
    # the IOC emulation sent a plain limit; the run was killed before its cancel went out
    placed = legacy.place_order(dataclasses.replace(buy.request, tif=TimeInForce.GTC))
    for client in first.clients.values():
        client.close()
    # restart: a new process, a new legacy client that never saw the order
    second = _executor(cluster, config, journal)
    try:
        second.start()
        journal.flush()
        row = journal.query("SELECT * FROM orders WHERE client_id = 'oldb'")[0]
        assert row["state"] == "cancelled" and row["order_id"] == placed.order_id
        assert "never placed" not in (row["error"] or "")
        assert second.clients[BT].get_open_orders(MARKET) == []
        assert journal.query("SELECT status FROM signals")[0]["status"] == "flat"
    finally:
        second.stop(5.0)
        for client in second.clients.values():
            client.close()
        journal.stop()


def test_legacy_client_id_maps_are_bounded():
    client = make_stub_client()
    try:
        for n in range(MAX_REMEMBERED + 50):
            client._remember(f"o{n}", "KRW-BTC", Side.BUY, OrderType.LIMIT, f"c{n}")
            client.seed_order(limit(client_id=f"t{n}"), None, 0.0)
        assert len(client._known) == len(client._by_client) == MAX_REMEMBERED
        assert len(client._timed_out) == MAX_REMEMBERED
        assert "c0" not in client._by_client and f"c{MAX_REMEMBERED + 49}" in client._by_client
    finally:
        client.close()
