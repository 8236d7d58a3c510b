"""Inventory bands checked exactly on a signal, and the exact cap sized against the same check."""
from decimal import Decimal as D

from karb.inventory import Inventory
from karb.ledger import Ledger
from karb.model import Venue
from tests.trading_fixtures import balances, make_config, make_signal

STEP = D("0.00000001")
FEE_BT, FEE_UP = D("0.0004"), D("0.0005")


def _inventory(bands, up, bt):
    ledger = Ledger()
    ledger.load(Venue.UPBIT, balances(**up))
    ledger.load(Venue.BITHUMB, balances(**bt))
    return Inventory(make_config(inventory={"bands": bands}).inventory, ledger)


def test_check_with_balance_below_its_band_allows_a_trade_that_raises_it():
    # Bithumb holds 0.5 BTC under a 1 BTC minimum: buying there restores it, selling there not
    inv = _inventory({"bithumb": {"BTC": {"min": "1"}}}, up=dict(KRW=10**8, BTC=1),
                     bt=dict(KRW=10**8, BTC="0.5"))
    buy_bithumb = make_signal(buy_venue=Venue.BITHUMB)
    assert inv.check(buy_bithumb, FEE_BT, FEE_UP) is None
    reason = inv.check(make_signal(buy_venue=Venue.UPBIT), FEE_UP, FEE_BT)
    assert reason and "bithumb BTC would end at 0.49" in reason


def test_exact_cap_with_krw_band_charges_the_fee_at_the_buy_limit():
    # 2,000,000 KRW above the band, at 140,100,000 x 1.0004 per BTC
    inv = _inventory({"bithumb": {"KRW": {"min": "8000000"}}}, up=dict(KRW=0, BTC=1),
                     bt=dict(KRW=10_000_000, BTC=0))
    cap = inv.exact_cap("KRW-BTC", Venue.BITHUMB, Venue.UPBIT, D(140_100_000), D(140_700_000),
                        FEE_BT, FEE_UP, STEP)
    assert cap == D("0.01426980")
    at = make_signal(volume=str(cap), buy_price="140100000", sell_price="140700000")
    over = make_signal(volume=str(cap + STEP), buy_price="140100000", sell_price="140700000")
    assert inv.check(at, FEE_BT, FEE_UP) is None
    assert inv.check(over, FEE_BT, FEE_UP) is not None


def test_exact_cap_without_a_band_in_the_way_is_none():
    inv = _inventory({"upbit": {"KRW": {"min": "5"}}}, up=dict(KRW=0, BTC=1), bt=dict(KRW=0, BTC=0))
    # selling on Upbit only raises its KRW: a minimum cannot be crossed
    assert inv.exact_cap("KRW-BTC", Venue.BITHUMB, Venue.UPBIT, D(1), D(1), FEE_BT, FEE_UP, STEP) is None
