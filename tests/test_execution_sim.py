"""Execution against the loopback sim with `execution.leg_type: market` (real clients): a market
buy spends funds, so it buys a hair more or less than the signal's volume; the trade must still
count as a success by value and the books must match the sim's accounts."""
import dataclasses
from decimal import Decimal as D

import pytest

import tests.test_trading_sim as sim_tests

pytestmark = pytest.mark.integration


@pytest.fixture
def market_rig(tmp_path, monkeypatch):
    base = sim_tests._config

    def market_config(path):
        config = base(path)
        return dataclasses.replace(
            config, execution=dataclasses.replace(config.execution, leg_type="market"))

    monkeypatch.setattr(sim_tests, "_config", market_config)
    r = sim_tests.SimRig(tmp_path)
    try:
        yield r
    finally:
        r.stop()


def test_market_leg_type_trade_against_the_sim_succeeds_by_value(market_rig):
    rig = market_rig
    rig.start().trade_once()
    (signal,) = rig.journal.query("SELECT * FROM signals")
    buy, sell = rig.orders()[:2]
    assert (buy["order_type"], sell["order_type"]) != ("limit", "limit")
    assert signal["status"] == "filled", (buy, sell)
    summary = rig.risk.summary()
    assert summary["successes"] == 1 and summary["failures"] == 0
    residual = rig.risk.residual("BTC")
    assert abs(residual) * D(signal["buy_price"]) <= rig.config.execution.residual_tolerance_krw
    assert residual == D(buy["executed_volume"]) - D(sell["executed_volume"])
    rig.assert_books_agree()
