"""The rebalance: config section (one line naming the key) and the wallet answers' vocabulary."""
from __future__ import annotations

from decimal import Decimal

import pytest
import yaml

from karb.cli import REPO_CONFIG
from karb.config import parse_config
from karb.exchanges.wallet import parse_deposit, parse_wallet_status, parse_withdrawal
from karb.model import Venue
from karb.schema import ConfigError


def _config(rebalance: dict):
    data = yaml.safe_load((REPO_CONFIG / "default.yaml").read_text())
    data["rebalance"] = rebalance
    return parse_config(data)


def test_rebalance_defaults_to_plan_mode_and_sends_nowhere():
    config = _config({}).rebalance
    assert config.mode == "plan" and config.whitelist == {} and config.max_transfer == {}
    assert config.destination(Venue.BITHUMB, "XRP", "XRP") is None
    assert config.arrival_for("XRP") == 3600.0


def test_rebalance_keys_are_read_with_exact_amounts():
    config = _config({"mode": "auto", "whitelist": {"upbit": {"XRP": {"XRP": {"address": "rAbc",
                                                                               "secondary_address": "77"}}}},
                      "max_transfer": {"XRP": "500.5"}, "daily_cap": {"XRP": 2000},
                      "test_amount": {"XRP": "20"}, "arrival_s": {"XRP": 900}}).rebalance
    assert config.destination(Venue.UPBIT, "XRP", "XRP").secondary_address == "77"
    assert config.max_transfer["XRP"] == Decimal("500.5") and config.arrival_for("XRP") == 900.0


@pytest.mark.parametrize("rebalance, key", [
    ({"mode": "always"}, "rebalance.mode"),
    ({"whitelist": {"binance": {}}}, "rebalance.whitelist.binance"),
    ({"whitelist": {"upbit": {"XRP": {"XRP": {"address": " "}}}}}, "rebalance.whitelist.upbit.XRP.XRP.address"),
    ({"whitelist": {"upbit": {"XRP": {"XRP": {}}}}}, "rebalance.whitelist.upbit.XRP.XRP.address"),
    ({"max_transfer": {"XRP": "0"}}, "rebalance.max_transfer.XRP"),
    ({"daily_cap": {"XRP": "-1"}}, "rebalance.daily_cap.XRP"),
    ({"test_amount": {"XRP": "50"}, "max_transfer": {"XRP": "10"}}, "rebalance.test_amount.XRP"),
    ({"arrival_s": {"XRP": 0}}, "rebalance.arrival_s.XRP"),
    ({"auto": True}, "rebalance.auto"),
])
def test_bad_rebalance_config_names_the_key(rebalance, key):
    with pytest.raises(ConfigError) as error:
        _config(rebalance)
    assert str(error.value).startswith(key)


def test_withdrawal_states_are_read_in_either_vocabulary():
    body = {"uuid": "u", "currency": "XRP", "net_type": "XRP", "amount": "1.5", "fee": "0.4", "state": "DONE"}
    assert parse_withdrawal(Venue.UPBIT, body).is_done
    assert parse_withdrawal(Venue.UPBIT, {**body, "state": "done"}).is_done  # older answers
    for failed in ("FAILED", "CANCELLED", "canceled", "REJECTED"):
        w = parse_withdrawal(Venue.UPBIT, {**body, "state": failed})
        assert w.is_failed and not w.is_done
    waiting = parse_withdrawal(Venue.BITHUMB, {**body, "state": "submitting", "fee": None})
    assert not waiting.is_done and not waiting.is_failed and waiting.fee == 0
    deposit = {"uuid": "d", "currency": "XRP", "amount": "1", "state": "DEPOSIT_ACCEPTED", "txid": "t"}
    assert parse_deposit(Venue.BITHUMB, deposit).is_credited
    assert not parse_deposit(Venue.UPBIT, {**deposit, "state": "PROCESSING"}).is_credited
    (status,) = parse_wallet_status([{"currency": "XRP", "net_type": "XRP", "wallet_state": "working",
                                      "block_state": "inactive"}])
    assert not status.can_withdraw and not status.can_deposit  # a stopped chain moves nothing
