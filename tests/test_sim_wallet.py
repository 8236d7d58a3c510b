"""The sim's deposit and withdrawal API (karb.sim.wallet) through the real clients, on a ManualClock."""
from __future__ import annotations

from decimal import Decimal

import pytest

from karb.exchanges.errors import InsufficientFunds, InvalidOrder, OrderNotFound, WalletSuspended
from karb.model import Venue

from tests.wallet_support import xrp_wallet_sim

pytestmark = pytest.mark.integration
ASSET = "XRP"


@pytest.fixture()
def sim():
    with xrp_wallet_sim(minimum="10") as (cluster, clients, clock, _config):
        yield cluster, clients, clock


def _free(cluster, venue, asset=ASSET) -> Decimal:
    return cluster.balances(venue)[asset].free


def _address(clients, venue) -> str:
    address, _memo = clients[venue].get_deposit_address(ASSET, ASSET)
    return address


@pytest.mark.parametrize("sender", [Venue.UPBIT, Venue.BITHUMB])
def test_withdrawal_debits_amount_and_fee_then_credits_other_venue_after_confirmations(sim, sender):
    cluster, clients, clock = sim
    receiver = sender.other
    start_out, start_in = _free(cluster, sender), _free(cluster, receiver)
    w = clients[sender].withdraw_coin(ASSET, ASSET, Decimal("100"), _address(clients, receiver))
    assert w.state == "WAITING" and w.fee == Decimal("0.4") and w.amount == Decimal("100")
    assert _free(cluster, sender) == start_out - Decimal("100.4")  # at once, fee included
    clock.advance(299)
    assert clients[sender].get_withdraw(uuid=w.uuid).state == "PROCESSING"
    (pending,) = clients[receiver].get_deposits(ASSET)
    assert not pending.is_credited and _free(cluster, receiver) == start_in
    clock.advance(1)
    done = clients[sender].get_withdraw(uuid=w.uuid)
    assert done.is_done and done.txid
    (deposit,) = clients[receiver].get_deposits(ASSET, txids=[done.txid])
    assert deposit.is_credited and deposit.amount == Decimal("100")
    assert _free(cluster, receiver) == start_in + Decimal("100")
    assert clients[sender].get_withdraw(txid=done.txid).uuid == w.uuid
    assert [x.uuid for x in clients[sender].get_withdraws(ASSET)] == [w.uuid]


def test_withdrawal_refusals_carry_the_venues_codes_and_move_nothing(sim):
    cluster, clients, clock = sim
    upbit, start = clients[Venue.UPBIT], _free(cluster, Venue.UPBIT)
    target = _address(clients, Venue.BITHUMB)
    with pytest.raises(InvalidOrder) as bad_address:
        upbit.withdraw_coin(ASSET, ASSET, Decimal("100"), "rSomewhereElse")
    assert bad_address.value.code == "withdraw_address_not_registerd"
    with pytest.raises(InsufficientFunds):
        upbit.withdraw_coin(ASSET, ASSET, start, target)  # the fee does not fit
    with pytest.raises(InvalidOrder):
        upbit.withdraw_coin(ASSET, ASSET, Decimal("5"), target)  # under the minimum
    cluster.wallet.suspend(Venue.UPBIT, ASSET)
    with pytest.raises(WalletSuspended):
        upbit.withdraw_coin(ASSET, ASSET, Decimal("100"), target)
    status = {s.currency: s for s in upbit.get_wallet_status()}[ASSET]
    assert status.wallet_state == "deposit_only" and not status.can_withdraw and status.can_deposit
    chance = upbit.get_withdraw_chance(ASSET, ASSET)
    assert not chance.can_withdraw and chance.fee == Decimal("0.4") and chance.minimum == Decimal("10")
    assert _free(cluster, Venue.UPBIT) == start and upbit.get_withdraws(ASSET) == []
    with pytest.raises(OrderNotFound):
        upbit.get_withdraw(uuid="00000000-0000-0000-0000-000000000000")


def test_lost_transfer_completes_on_the_sender_and_never_arrives(sim):
    cluster, clients, clock = sim
    start_in = _free(cluster, Venue.BITHUMB)
    cluster.wallet.lose_next_transfer()
    w = clients[Venue.UPBIT].withdraw_coin(ASSET, ASSET, Decimal("50"), _address(clients, Venue.BITHUMB))
    clock.advance(3600)
    assert clients[Venue.UPBIT].get_withdraw(uuid=w.uuid).is_done
    assert clients[Venue.BITHUMB].get_deposits(ASSET) == []
    assert _free(cluster, Venue.BITHUMB) == start_in


def test_bithumb_withdrawal_body_has_no_transaction_type_and_deposits_use_bithumb_states(sim):
    cluster, clients, clock = sim
    body = clients[Venue.BITHUMB]._withdraw_body(ASSET, ASSET, Decimal("1"), "a", None, "default")
    assert "transaction_type" not in body
    clients[Venue.BITHUMB].withdraw_coin(ASSET, ASSET, Decimal("20"), _address(clients, Venue.UPBIT),
                                         extra={"exchange_name": "Upbit"})
    clock.advance(300)
    (upbit_side,) = clients[Venue.UPBIT].get_deposits(ASSET)
    assert upbit_side.state == "ACCEPTED"
    cluster.wallet.lose_next_transfer(0)
    clients[Venue.UPBIT].withdraw_coin(ASSET, ASSET, Decimal("20"), _address(clients, Venue.BITHUMB))
    (bithumb_side,) = clients[Venue.BITHUMB].get_deposits(ASSET)
    assert bithumb_side.state == "DEPOSIT_PROCESSING"


def test_control_endpoint_suspends_a_wallet_and_loses_the_next_transfer(sim):
    import requests
    cluster, clients, clock = sim
    url = cluster.control_url()
    assert requests.post(f"{url}/wallet/bithumb/suspend", json={"asset": ASSET, "state": "paused"}).ok
    assert cluster.wallet.wallet_state(Venue.BITHUMB, ASSET) == "paused"
    assert requests.post(f"{url}/wallet/bithumb/suspend", json={"asset": ASSET, "state": "nope"}).status_code == 400
    assert requests.post(f"{url}/wallet/lose_transfer", json={"count": 1}).ok
    cluster.wallet.suspend(Venue.BITHUMB, ASSET, "working")
    clients[Venue.UPBIT].withdraw_coin(ASSET, ASSET, Decimal("20"), _address(clients, Venue.BITHUMB))
    clock.advance(600)
    assert clients[Venue.BITHUMB].get_deposits(ASSET) == []


def test_a_deposit_waits_while_the_receiving_wallet_is_suspended(sim):
    cluster, clients, clock = sim
    start_in = _free(cluster, Venue.BITHUMB)
    cluster.wallet.suspend(Venue.BITHUMB, ASSET, "withdraw_only")  # deposits stopped
    clients[Venue.UPBIT].withdraw_coin(ASSET, ASSET, Decimal("20"), _address(clients, Venue.BITHUMB))
    clock.advance(600)
    assert not clients[Venue.BITHUMB].get_deposits(ASSET)[0].is_credited
    cluster.wallet.suspend(Venue.BITHUMB, ASSET, "working")
    assert clients[Venue.BITHUMB].get_deposits(ASSET)[0].is_credited
    assert _free(cluster, Venue.BITHUMB) == start_in + Decimal("20")


def test_address_lists_name_the_other_venues_deposit_address_as_registered(sim):
    cluster, clients, clock = sim
    upbit = clients[Venue.UPBIT]
    registered = upbit._private("GET", "/v1/withdraws/coin_addresses")
    assert {"currency": ASSET, "net_type": ASSET, "network_name": ASSET, "secondary_address": None,
            "withdraw_address": _address(clients, Venue.BITHUMB)} in registered
    (own,) = upbit._private("GET", "/v1/deposits/coin_addresses")
    assert own["deposit_address"] == _address(clients, Venue.UPBIT)
    cluster.wallet.register_address(Venue.UPBIT, cluster.credentials(Venue.UPBIT).access_key, ASSET, ASSET,
                                    "rColdStorage")
    w = upbit.withdraw_coin(ASSET, ASSET, Decimal("30"), "rColdStorage")  # registered: allowed, arrives nowhere
    assert upbit._private("GET", "/v1/withdraw", [("currency", ASSET)])["uuid"] == w.uuid  # the latest
    with pytest.raises(InvalidOrder):
        upbit._private("GET", "/v1/withdraw")  # uuid, txid or currency is required
