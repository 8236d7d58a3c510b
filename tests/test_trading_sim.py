"""The trading core against the loopback sim: real clients, real feeds, forced dislocations.

Each test wires SimCluster + MarketData + BookBoard + Strategy + Executor (real REST clients,
mode live against the sim's paper accounts), forces Bithumb cheap for KRW-BTC, and checks the
journal, the ledger and the sim's own accounts against each other, to the last decimal.
"""
from decimal import Decimal as D

import pytest

from karb.book import BookBoard
from karb.clock import SystemClock
from karb.config import parse_config
from karb.exchanges.factory import make_client
from karb.execution import Executor
from karb.inventory import Inventory
from karb.journal import Journal
from karb.market_data import MarketData
from karb.model import OrderRequest, OrderType, Side, Venue
from karb.risk import Risk
from karb.rules import RulesBook
from karb.sim.cluster import SimCluster
from karb.strategy import Strategy
from tests.conftest import wait_until

pytestmark = pytest.mark.integration
MARKET = "KRW-BTC"
UP, BT = Venue.UPBIT, Venue.BITHUMB


def _config(tmp_path):
    return parse_config({
        "mode": "live",
        "markets": [MARKET],
        "venues": {
            "upbit": {"rest_url": "http://127.0.0.1:0", "ws_url": "ws://127.0.0.1:0",
                      "taker_fee": "0.0005", "maker_fee": "0.0005", "read_timeout_s": 0.5},
            "bithumb": {"rest_url": "http://127.0.0.1:0", "ws_url": "ws://127.0.0.1:0",
                        "taker_fee": "0.0004", "maker_fee": "0.0004", "read_timeout_s": 0.5},
        },
        "strategy": {"threshold_bps": 25, "cooldown_ms": 60_000, "max_skew_ms": 1000},
        "risk": {"max_trade_krw": "3000000", "kill_switch_file": str(tmp_path / "KILL")},
        "execution": {"fill_timeout_s": 2.0, "poll_interval_ms": 10},
        "journal": {"path": str(tmp_path / "journal.sqlite")},
        "sim": {"seed": 11, "gaps_per_min": 0, "premium_vol_bps": 0.5, "update_hz": 20,
                "markets": {MARKET: {"price": "140000000"}}},
    })


class SimRig:
    def __init__(self, tmp_path):
        base = _config(tmp_path)
        self.cluster = SimCluster.from_config(base).start()
        self.config = self.cluster.apply_to(base)
        self.clock = SystemClock()
        self.clients = {v: make_client(v, self.config, self.cluster.credentials(v)) for v in Venue}
        fees = {v: (self.config.venues[v].taker_fee, self.config.venues[v].maker_fee) for v in Venue}
        self.rules = RulesBook.fallback([MARKET], fees)
        for v in Venue:
            self.rules.update(v, self.clients[v].get_market_info([MARKET]))
        self.start_balances = {v: self.cluster.balances(v) for v in Venue}
        self.risk = Risk(self.config, self.rules, self.clock)
        for v in Venue:
            self.risk.ledger.load(v, self.clients[v].get_balances())
        self.board = BookBoard([MARKET])
        self.market_data = MarketData(self.config, self.board)
        self.journal = Journal(self.config.journal.path)
        self.executor = Executor(self.clients, self.rules, self.risk, self.journal, self.config,
                                 self.clock)
        self.strategy = Strategy(self.board, self.rules, self.risk,
                                 Inventory(self.config.inventory, self.risk.ledger), self.config,
                                 self.clock, self.executor.submit)

    def start(self):
        self.journal.start()
        self.market_data.start()
        self.executor.start()
        self.risk.kill.start()
        wait_until(lambda: all(self.board.get(v, MARKET).view.valid for v in Venue), 10.0,
                   message="both sim books")
        self.strategy.start()
        return self

    def trade_once(self, timeout=10.0):
        """Force Bithumb cheap (buy there, sell on Upbit) and wait for one booked trade."""
        self.cluster.dislocate(MARKET, BT, bps=80, seconds=1.5)
        wait_until(lambda: self.executor.stats()["trades"] >= 1, timeout, message="one trade")
        assert self.executor.wait_idle(timeout)
        self.journal.flush()

    def orders(self):
        return self.journal.query("SELECT * FROM orders ORDER BY created_wall_ns, client_id")

    def incidents(self, kind):
        return self.journal.query("SELECT * FROM incidents WHERE kind=?", (kind,))

    def assert_books_agree(self):
        """Sim accounts moved by exactly what the journal says, and the ledger agrees."""
        delta = {(v, c): D(0) for v in Venue for c in ("KRW", "BTC")}
        for o in self.orders():
            v = Venue(o["venue"])
            vol, funds, fee = D(o["executed_volume"]), D(o["executed_funds"]), D(o["paid_fee"])
            sign = 1 if o["side"] == "buy" else -1
            delta[(v, "BTC")] += sign * vol
            delta[(v, "KRW")] -= sign * funds + fee
        for v in Venue:
            now = self.cluster.balances(v)
            for c in ("KRW", "BTC"):
                assert now[c].total - self.start_balances[v][c].total == delta[(v, c)], (v, c)
                assert self.risk.ledger.free(v, c) == now[c].free, (v, c)

    def stop(self):
        self.strategy.stop()
        self.executor.stop(5.0)
        self.risk.kill.stop()
        self.market_data.stop(3.0)
        self.journal.stop()
        for c in self.clients.values():
            c.close()
        self.cluster.stop()


@pytest.fixture
def rig(tmp_path):
    r = SimRig(tmp_path)
    try:
        yield r
    finally:
        r.stop()


def test_dislocation_produces_two_filled_legs_that_match_the_sim_accounts(rig):
    rig.start().trade_once()
    (signal,) = rig.journal.query("SELECT * FROM signals")
    assert signal["status"] == "filled" and (signal["buy_venue"], signal["sell_venue"]) == ("bithumb", "upbit")
    buy, sell = rig.orders()
    assert (buy["state"], sell["state"]) == ("filled", "filled")
    assert D(buy["executed_volume"]) == D(sell["executed_volume"]) == D(signal["volume"])
    rig.assert_books_agree()
    realised = (D(sell["executed_funds"]) - D(buy["executed_funds"])
                - D(buy["paid_fee"]) - D(sell["paid_fee"]))
    assert D(signal["realised_krw"]) == realised == rig.risk.summary()["realised_pnl_krw"]
    assert realised > 0
    assert signal["sent_ns"] >= signal["submit_ns"] >= signal["signal_ns"] >= signal["recv_ns"]


def test_rejected_sell_leg_ends_flat_with_the_incident_journalled(rig):
    rig.cluster.faults(UP).reject_next_order()
    rig.start().trade_once()
    states = [(o["role"], o["venue"], o["state"]) for o in rig.orders()]
    assert states[:2] == [("buy", "bithumb", "filled"), ("sell", "upbit", "rejected")]
    assert rig.risk.residual("BTC") * D(140_000_000) <= rig.config.execution.residual_tolerance_krw
    assert rig.incidents("leg_rejected") and rig.incidents("unwind_step")
    rig.assert_books_agree()


def test_partially_filled_sell_leg_ends_flat_with_the_incident_journalled(rig):
    rig.cluster.faults(UP).partial_next_ioc(0.5)
    rig.start().trade_once()
    orders = rig.orders()
    sell = next(o for o in orders if o["role"] == "sell")
    assert sell["state"] == "cancelled" and D(sell["executed_volume"]) > 0
    assert rig.risk.residual("BTC") * D(140_000_000) <= rig.config.execution.residual_tolerance_krw
    assert rig.incidents("leg_cancelled") and len(orders) >= 3
    rig.assert_books_agree()


def test_placement_timeout_is_looked_up_and_produces_no_duplicate_order(rig):
    rig.start()  # (start warms every leg thread's connections with a ticker call)
    rig.cluster.faults(UP).delay_rest(1.5)  # the sell's answer comes after the 0.5 s read timeout
    rig.trade_once()
    access = rig.cluster.credentials(UP).access_key
    sim_orders = rig.cluster.exchange(UP).orders(access)
    assert len(sim_orders) == 1 and sim_orders[0].identifier.endswith("s")
    assert sim_orders[0].state == "done"
    (sell,) = [o for o in rig.orders() if o["venue"] == "upbit"]
    assert sell["state"] == "filled"
    assert rig.executor.stats()["lookups"] >= 1
    rig.assert_books_agree()


def test_kill_switch_cancels_open_orders_sends_no_new_legs_and_keeps_running(rig):
    # Arrange: an order resting far below the market on Upbit
    rig.start()
    resting = rig.clients[UP].place_order(OrderRequest(
        UP, MARKET, Side.BUY, OrderType.LIMIT, "manual-rest", price=D(100_000_000), volume=D("0.001")))
    assert not resting.is_final
    # Act: the operator runs `karb kill` (it creates the file)
    (rig.config.risk.kill_switch_file and open(rig.config.risk.kill_switch_file, "w").close())
    wait_until(lambda: rig.clients[UP].get_open_orders(MARKET) == [], 5.0, message="orders cancelled")
    evaluations = rig.strategy.stats()["evaluations"]
    rig.cluster.dislocate(MARKET, BT, bps=80, seconds=1.0)
    wait_until(lambda: rig.strategy.stats()["skipped"].get("blocked", 0) > 0, 5.0,
               message="signals blocked by the kill switch")
    # Assert
    assert rig.executor.stats()["trades"] == 0 and rig.journal.query("SELECT * FROM signals") == []
    access = rig.cluster.credentials(BT).access_key
    assert rig.cluster.exchange(BT).orders(access) == []
    assert rig.strategy._thread.is_alive() and rig.strategy.stats()["evaluations"] > evaluations
    assert rig.risk.summary()["state"] == "killed"
