"""Issue 11, acceptance 2: the transfer executor against the sim's withdraw API (real clients,
real sockets, a ManualClock for the venues' confirmations and the journal)."""
from __future__ import annotations

from decimal import Decimal

import pytest
import yaml

from karb.cli import REPO_CONFIG
from karb.exchanges.errors import InsufficientFunds, WalletSuspended
from karb.journal import Journal
from karb.model import Venue
from karb.rebalance.config import Destination, RebalanceConfig
from karb.rebalance.transfer import TransferExecutor, TransferIntent, TransferRefused, auto_transfer_refusal

from tests.wallet_support import xrp_wallet_sim

pytestmark = pytest.mark.integration
XRP = "XRP"
POST = ("POST", "/v1/withdraws/coin")
TO_BITHUMB = TransferIntent(XRP, Decimal("100"), Venue.UPBIT, Venue.BITHUMB, XRP)


@pytest.fixture()
def world(tmp_path):
    with xrp_wallet_sim() as (cluster, clients, clock, _config):
        w = World(cluster, clients, clock, tmp_path / "journal.sqlite")
        yield w
        w.close()


class World:
    def __init__(self, cluster, clients, clock, path):
        self.cluster, self.clients, self.clock, self.path = cluster, clients, clock, path
        self.alerts = []
        self.journals = []
        key = cluster.credentials(Venue.BITHUMB).access_key
        self.bithumb_address = cluster.wallet.deposit_address(Venue.BITHUMB, key, XRP)
        self.config = RebalanceConfig(
            mode="auto", whitelist={"bithumb": {XRP: {XRP: Destination(self.bithumb_address)}}},
            max_transfer={XRP: Decimal("1000")}, daily_cap={XRP: Decimal("1500")},
            test_amount={XRP: Decimal("10")}, arrival_s={XRP: 1800.0})
        self.executor = self.restart()

    def restart(self, config: RebalanceConfig | None = None) -> TransferExecutor:
        """A fresh journal connection and executor on the same file: what a restart sees."""
        for journal in self.journals:
            journal.stop()
        journal = Journal(self.path, self.clock)
        journal.start()
        self.journals = [journal]
        self.executor = TransferExecutor(config or self.config, self.clients, journal, clock=self.clock,
                                         notify=self.alerts.append)
        return self.executor

    def close(self):
        for journal in self.journals:
            journal.stop()

    def posts(self, venue=Venue.UPBIT) -> int:
        return self.cluster.wallet.request_count(venue, *POST)

    def free(self, venue) -> Decimal:
        return self.cluster.balances(venue)[XRP].free

    def rows(self):
        return self.journals[0].query("SELECT * FROM transfers ORDER BY created_wall_ns")

    def deliver(self, transfer):
        """Step the clock past the confirmations, poll, and return the transfer's row."""
        self.clock.advance(301)
        self.executor.poll()
        return self.executor.records.get(transfer.id)

    def prove_address(self):
        test = self.executor.submit(TO_BITHUMB)
        assert test.is_test and test.amount == Decimal("10")
        assert self.deliver(test).state == "arrived"
        self.clock.advance(86_401)  # the test transfer out of the daily window


def test_success_debits_amount_and_fee_credits_after_confirmations_and_journal_says_arrived(world):
    up0, bt0 = world.free(Venue.UPBIT), world.free(Venue.BITHUMB)
    test = world.executor.submit(TO_BITHUMB)  # a new address: the small test transfer first
    assert test.is_test and test.amount == Decimal("10") and test.state == "sent"
    assert world.free(Venue.UPBIT) == up0 - Decimal("10.4")  # amount + fee, at once
    world.clock.advance(299)
    assert world.executor.poll()[0].state == "sent" and world.free(Venue.BITHUMB) == bt0
    assert world.deliver(test).state == "arrived"
    assert world.free(Venue.BITHUMB) == bt0 + Decimal("10")
    real = world.executor.submit(TO_BITHUMB)  # proven now: the whole amount
    assert not real.is_test and real.amount == Decimal("100")
    done = world.deliver(real)
    assert done.state == "arrived" and done.fee == Decimal("0.4") and done.txid
    assert world.free(Venue.UPBIT) == up0 - Decimal("110.8")
    assert world.free(Venue.BITHUMB) == bt0 + Decimal("110")
    assert [(r["state"], r["is_test"]) for r in world.rows()] == [("arrived", 1), ("arrived", 0)]
    assert world.posts() == 2 and world.alerts == []


def test_insufficient_balance_raises_the_typed_error_and_journals_failed(world):
    world.prove_address()
    up0 = world.free(Venue.UPBIT)
    config = RebalanceConfig(**{**world.config.__dict__, "max_transfer": {XRP: up0 * 2},
                                "daily_cap": {XRP: up0 * 3}})
    executor = world.restart(config)
    with pytest.raises(InsufficientFunds) as refused:
        executor.submit(TransferIntent(XRP, up0, Venue.UPBIT, Venue.BITHUMB, XRP))  # the fee does not fit
    assert refused.value.code == "insufficient_funds_withdraw"
    assert world.rows()[-1]["state"] == "failed" and "insufficient" in world.rows()[-1]["error"]
    assert world.free(Venue.UPBIT) == up0 and executor.poll() == []  # nothing open, nothing moved
    assert [a.kind for a in world.alerts] == ["transfer_failed"]


def test_address_not_whitelisted_is_refused_before_any_request(world):
    to_upbit = TransferIntent(XRP, Decimal("100"), Venue.BITHUMB, Venue.UPBIT, XRP)
    other_network = TransferIntent(XRP, Decimal("100"), Venue.UPBIT, Venue.BITHUMB, "XRP-ERC20")
    for intent in (to_upbit, other_network):
        with pytest.raises(TransferRefused) as refused:
            world.executor.submit(intent)
        assert refused.value.reason == "not_whitelisted"
    assert world.cluster.wallet.request_count() == 0  # neither venue saw any wallet request
    assert world.rows() == []


def test_suspended_network_is_refused_by_the_venue_and_journalled_failed(world):
    world.cluster.wallet.suspend(Venue.UPBIT, XRP, "deposit_only")
    up0 = world.free(Venue.UPBIT)
    with pytest.raises(WalletSuspended):
        world.executor.submit(TO_BITHUMB)
    assert [r["state"] for r in world.rows()] == ["failed"] and world.free(Venue.UPBIT) == up0
    world.cluster.wallet.suspend(Venue.UPBIT, XRP, "working")
    assert world.executor.submit(TO_BITHUMB).state == "sent"  # a failed one blocks nothing


def test_lost_answer_is_looked_up_never_sent_twice(world):
    world.cluster.faults(Venue.UPBIT).lose_answer(1)  # processed, then the connection is cut
    up0 = world.free(Venue.UPBIT)
    t = world.executor.submit(TO_BITHUMB)
    (venue_side,) = world.cluster.wallet.withdrawals(Venue.UPBIT, world.cluster.credentials(Venue.UPBIT).access_key)
    assert t.state == "sent" and t.withdraw_uuid == venue_side.uuid  # found by the look-up
    assert [a.kind for a in world.alerts] == ["transfer_unknown"]
    with pytest.raises(TransferRefused) as refused:
        world.executor.submit(TO_BITHUMB)  # the asset has a transfer open
    assert refused.value.reason == "open"
    assert world.deliver(t).state == "arrived"
    assert world.posts() == 1 and world.free(Venue.UPBIT) == up0 - Decimal("10.4")


def test_a_withdrawal_journalled_but_unanswered_before_a_crash_is_looked_up_not_resent(world):
    world.executor.submit(TO_BITHUMB)  # one real withdrawal, so the look-up has something to skip
    world.deliver(world.executor.records.open_transfers()[0])
    from karb.rebalance.records import Transfer
    crashed = Transfer("tr-crashed", XRP, Decimal("100"), Venue.UPBIT, Venue.BITHUMB, XRP, world.bithumb_address,
                       None, False, "intent", None, None, None, None, False, world.clock.wall_ns(), None)
    world.executor.records.add(crashed)  # the row a crash left before the request went out
    executor = world.restart()
    (t,) = executor.poll()
    assert t.state == "unknown" and world.posts() == 1  # not found, and not sent again
    with pytest.raises(TransferRefused):
        executor.submit(TO_BITHUMB)


def test_lost_transfer_alerts_blocks_the_asset_and_the_block_survives_a_restart(world):
    world.prove_address()
    world.cluster.wallet.lose_next_transfer()
    t = world.executor.submit(TO_BITHUMB)
    world.clock.advance(1800)
    assert world.executor.poll()[0].state == "withdrawn" and world.alerts == []  # not late yet
    world.clock.advance(1)
    (late,) = world.executor.poll()
    assert late.overdue and late.id == t.id
    (alert,) = world.alerts
    assert alert.kind == "transfer_overdue" and alert.key == XRP and alert.severity == "critical"
    executor = world.restart()
    assert XRP in executor.blocked_assets()
    with pytest.raises(TransferRefused) as refused:
        executor.submit(TO_BITHUMB)
    assert refused.value.reason == "blocked" and world.posts() == 2
    executor.poll()
    assert len(world.alerts) == 1  # alerted once, not on every poll
    executor.clear_block(XRP, "checked both venues: lost on chain")
    assert world.restart().blocked_assets() == {}
    assert world.rows()[-1]["state"] == "abandoned"
    assert world.executor.submit(TO_BITHUMB).state == "sent"


def test_daily_cap_is_counted_from_the_journal_across_a_restart(world):
    world.prove_address()
    config = RebalanceConfig(**{**world.config.__dict__, "daily_cap": {XRP: Decimal("150")}})
    executor = world.restart(config)
    world.deliver(executor.submit(TO_BITHUMB))
    executor = world.restart(config)
    with pytest.raises(TransferRefused) as refused:
        executor.submit(TO_BITHUMB)  # 100 + 100 > 150 within 24 h
    assert refused.value.reason == "daily_cap" and world.posts() == 2
    assert executor.submit(TransferIntent(XRP, Decimal("50"), Venue.UPBIT, Venue.BITHUMB, XRP)).state == "sent"
    world.deliver(executor.records.open_transfers()[0])
    world.clock.advance(86_400)
    assert executor.submit(TO_BITHUMB).state == "sent"  # the window moved on


def test_caps_and_mode_refuse_before_any_request(world):
    world.prove_address()
    posts = world.posts()
    with pytest.raises(TransferRefused) as over:
        world.executor.submit(TransferIntent(XRP, Decimal("1001"), Venue.UPBIT, Venue.BITHUMB, XRP))
    assert over.value.reason == "over_cap"
    no_cap = RebalanceConfig(**{**world.config.__dict__, "max_transfer": {}})
    with pytest.raises(TransferRefused) as missing:
        world.restart(no_cap).submit(TO_BITHUMB)
    assert missing.value.reason == "no_cap"
    reason = auto_transfer_refusal("auto", "dry_run")  # mode: live without --live resolves to dry_run
    disabled = TransferExecutor(world.config, world.clients, world.journals[0], clock=world.clock,
                                disabled_reason=reason)
    with pytest.raises(TransferRefused) as off:
        disabled.submit(TO_BITHUMB)
    assert off.value.reason == "disabled" and "--live" in str(off.value)
    assert world.posts() == posts


def test_auto_transfer_needs_auto_mode_and_a_live_or_sim_run():
    assert auto_transfer_refusal("plan", "live") is not None
    assert auto_transfer_refusal("plan", "sim") is not None
    assert auto_transfer_refusal("auto", "dry_run") is not None
    assert auto_transfer_refusal("auto", "sim") is None
    assert auto_transfer_refusal("auto", "live") is None


def test_karb_transfers_lists_the_block_and_clear_unblocks_for_the_next_start(tmp_path, capsys):
    from karb.cli import main
    from karb.clock import SystemClock
    from karb.rebalance.records import Transfer, TransferRecords
    journal_path = tmp_path / "journal.sqlite"
    config_path = tmp_path / "config.yaml"
    data = yaml.safe_load((REPO_CONFIG / "default.yaml").read_text())
    data["journal"] = {"path": str(journal_path)}
    data["log"] = {"file": None}
    config_path.write_text(yaml.safe_dump(data))
    journal = Journal(journal_path)
    journal.start()
    records = TransferRecords(journal, SystemClock())
    records.add(Transfer("tr-1", XRP, Decimal("100"), Venue.UPBIT, Venue.BITHUMB, XRP, "rX", None, False,
                         "withdrawn", "u-1", "tx-1", Decimal("0.4"), None, True, 1, None))
    records.block(XRP, "transfer tr-1 not arrived after 1800 s")
    journal.stop()
    assert main(["transfers", "--config", str(config_path)]) == 0
    listed = capsys.readouterr().out
    assert "BLOCKED XRP: transfer tr-1 not arrived" in listed and "open tr-1: 100 XRP upbit -> bithumb" in listed
    assert main(["transfers", "--config", str(config_path), "--clear", "xrp", "--reason", "found on chain"]) == 0
    assert "XRP: unblocked; 1 open transfer(s) closed as abandoned" in capsys.readouterr().out
    assert main(["transfers", "--config", str(config_path)]) == 0
    assert "no transfer open, no asset blocked" in capsys.readouterr().out
