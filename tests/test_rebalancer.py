"""The rebalance thread's pass against the sim's wallet API (real clients, a ManualClock): plan
mode proposes and never withdraws; auto mode moves the coin back and the drained direction can
trade again. And the backtest with ``rebalance.mode: auto`` moves coin on simulated time."""
from __future__ import annotations

import json
from decimal import Decimal
from types import SimpleNamespace

import pytest
import yaml

from karb.cli import REPO_CONFIG, main
from karb.inventory import Inventory
from karb.journal import Journal
from karb.ledger import Ledger
from karb.model import Venue
from karb.rebalance.config import Destination, RebalanceConfig
from karb.rebalance.plan import Planner
from karb.rebalance.rebalancer import Rebalancer
from karb.rebalance.transfer import TransferExecutor, auto_transfer_refusal
from tests.conftest import wait_until

from tests.wallet_support import xrp_wallet_sim

pytestmark = pytest.mark.integration
XRP = "XRP"
POST = ("POST", "/v1/withdraws/coin")
UP, BT = Venue.UPBIT, Venue.BITHUMB
TOP = SimpleNamespace(view=SimpleNamespace(valid=True, bids=((3199.0, 1e6),), asks=((3201.0, 1e6),)))


class _Board:
    def get(self, venue, market):
        if market != "KRW-XRP":
            raise KeyError(market)
        return TOP


@pytest.fixture()
def world(tmp_path):
    with xrp_wallet_sim() as (cluster, clients, clock, config):
        journal = Journal(tmp_path / "journal.sqlite", clock)
        journal.start()
        yield SimpleNamespace(cluster=cluster, clients=clients, clock=clock, journal=journal, config=config)
        journal.stop()


def _drain_bithumb_xrp(w) -> dict:
    """Move 85 % of Bithumb's XRP to Upbit as trading would (below its 20 % floor); return
    the start balances (the inventory's targets)."""
    start = {v: {c: b.free for c, b in w.cluster.balances(v).items()} for v in Venue}
    moved = start[BT][XRP] * Decimal("0.85")
    w.cluster.exchange(BT).move_funds(w.cluster.credentials(BT).access_key, XRP, -moved)
    w.cluster.exchange(UP).move_funds(w.cluster.credentials(UP).access_key, XRP, moved)
    return start


def _rebalancer(w, mode: str, alerts: list, **extra):
    start = _drain_bithumb_xrp(w)
    ledger = Ledger()
    reload = lambda: [ledger.load(v, w.cluster.balances(v)) for v in Venue]  # noqa: E731
    reload()
    inventory = Inventory(w.config.inventory, ledger)
    inventory.set_targets(start)
    key = w.cluster.credentials(BT).access_key
    config = RebalanceConfig(
        mode=mode, whitelist={"bithumb": {XRP: {XRP: Destination(w.cluster.wallet.deposit_address(BT, key, XRP))}}},
        max_transfer={XRP: Decimal(10**6)}, daily_cap={XRP: Decimal(10**7)}, test_amount={XRP: Decimal(10)},
        arrival_s={XRP: 1800.0}, **extra)
    executor = TransferExecutor(config, w.clients, w.journal, clock=w.clock,
                                disabled_reason=auto_transfer_refusal(mode, "sim"), notify=alerts.append)
    planner = Planner(config, inventory, ["KRW-XRP"], lambda venue, market: Decimal("0.0005"))
    rebalancer = Rebalancer(config, planner, executor, _Board(), w.journal, w.clock, fee_clients=w.clients,
                            notify=alerts.append, on_moved=reload)
    # an hour of trading in which selling XRP on Bithumb earned 50,000 KRW
    w.clock.advance(3600)
    w.journal.commit_now([("INSERT INTO signals (id, market, buy_venue, sell_venue, wall_ns, status, realised_krw) "
                           "VALUES (?,?,?,?,?,?,?)", ("s1", "KRW-XRP", "upbit", "bithumb", w.clock.wall_ns(),
                                                       "filled", "50000"))])
    return rebalancer, inventory, ledger


def _posts(w) -> int:
    return w.cluster.wallet.request_count(None, *POST)


def test_plan_mode_shows_and_alerts_the_plan_once_and_never_withdraws(world):
    alerts: list = []
    rebalancer, inventory, _ = _rebalancer(world, "plan", alerts)
    for _ in range(3):
        (plan,) = rebalancer.step(world.clock.monotonic_ns())
        world.clock.advance(600)
    assert (plan.asset, plan.from_venue, plan.to_venue, plan.route) == (XRP, UP, BT, "coin")
    assert plan.costs == {"network_fee": Decimal("0.4") * Decimal("3199")}  # the venue's fee, read
    assert plan.worth and "floor" in plan.why
    assert [a.kind for a in alerts] == ["rebalance_plan"]  # once, not once per pass
    assert "worth it" in rebalancer.lines()[0]
    assert _posts(world) == 0 and world.journal.query("SELECT * FROM transfers") == []
    assert inventory.volume_cap("KRW-XRP", UP, BT, 3200.0) == 0  # still drained


def test_the_rebalance_thread_plans_every_check_s_and_stops(world):
    alerts: list = []
    rebalancer, _, _ = _rebalancer(world, "plan", alerts, check_s=0.05)
    rebalancer.start()
    try:
        assert rebalancer._thread.name == "rebalance"
        wait_until(lambda: rebalancer.lines(), timeout=10)
        assert "XRP upbit -> bithumb" in rebalancer.lines()[0]
    finally:
        rebalancer.stop(2.0)
    assert not rebalancer._thread.is_alive()
    assert [a.kind for a in alerts] == ["rebalance_plan"] and _posts(world) == 0


def test_auto_mode_moves_the_coin_back_and_the_drained_direction_can_trade_again(world):
    alerts: list = []
    rebalancer, inventory, ledger = _rebalancer(world, "auto", alerts)
    assert inventory.volume_cap("KRW-XRP", UP, BT, 3200.0) == 0  # selling on Bithumb blocked
    bt0 = ledger.free(BT, XRP)
    (plan,) = rebalancer.step(world.clock.monotonic_ns())
    # 50,000 KRW over the hour the journal covers, times the 1-day horizon
    assert plan.earnings_krw == Decimal(1_200_000) and plan.worth
    assert _posts(world) == 1  # the test transfer to the new address first
    (test,) = rebalancer.sent
    assert test.is_test and test.amount == Decimal(10)
    world.clock.advance(301)
    rebalancer.step(world.clock.monotonic_ns())  # the test arrived; the rest goes now
    assert _posts(world) == 2 and not rebalancer.sent[1].is_test
    assert ledger.free(BT, XRP) == bt0 + 10
    world.clock.advance(301)
    assert rebalancer.step(world.clock.monotonic_ns()) == []  # arrived: nothing low any more
    assert _posts(world) == 2
    assert ledger.free(BT, XRP) == bt0 + 10 + rebalancer.sent[1].amount
    assert not inventory.low(BT, XRP)
    assert inventory.volume_cap("KRW-XRP", UP, BT, 3200.0) > 0  # the drained direction trades again
    assert rebalancer.cost_krw == 2 * Decimal("0.4") * Decimal("3199")
    assert [r["state"] for r in world.journal.query("SELECT state FROM transfers")] == ["arrived", "arrived"]
    assert alerts == []  # auto mode does not page for plans it acts on


def test_backtest_with_auto_rebalancing_moves_coin_and_counts_its_cost(tmp_path):
    data = yaml.safe_load((REPO_CONFIG / "backtest.yaml").read_text())
    markets = ["KRW-XRP", "KRW-MVL", "KRW-SHIB"]
    data["markets"] = markets
    data["sim"]["markets"] = {m: data["sim"]["markets"][m] for m in markets}
    data["log"] = {"file": None}
    data["journal"]["path"] = str(tmp_path / "j.sqlite")
    summaries = {}
    for mode in ("plan", "auto"):
        data["rebalance"]["mode"] = mode
        path = tmp_path / f"{mode}.yaml"
        path.write_text(yaml.safe_dump(data))
        out = tmp_path / mode
        assert main(["backtest", "--config", str(path), "--days", str(1800 / 86400), "--no-oracle",
                     "--out", str(out)]) == 0
        summaries[mode] = json.loads((out / "backtest.json").read_text())["summary"]
    plan, auto = summaries["plan"], summaries["auto"]
    assert plan["transfers"] == 0 and Decimal(plan["rebalance_cost_krw"]) == 0
    assert auto["transfers"] > 0 and Decimal(auto["rebalance_cost_krw"]) > 0
    assert (Decimal(auto["pnl_after_rebalancing_krw"])
            == Decimal(auto["pnl_krw"]) - Decimal(auto["rebalance_cost_krw"]))
