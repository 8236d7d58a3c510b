"""Inventory bands checked exactly on a signal, and the exact cap sized against the same check."""
import math
from decimal import Decimal as D

import pytest

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


def _started(up, bt, **inventory):
    """Inventory whose targets are where these balances started."""
    ledger = Ledger()
    ledger.load(Venue.UPBIT, balances(**up))
    ledger.load(Venue.BITHUMB, balances(**bt))
    inv = Inventory(make_config(inventory=inventory).inventory, ledger)
    inv.set_targets({Venue.UPBIT: {k: D(str(v)) for k, v in up.items()},
                     Venue.BITHUMB: {k: D(str(v)) for k, v in bt.items()}})
    return inv, ledger


def test_threshold_at_target_is_the_base_and_rises_smoothly_as_the_drained_side_falls():
    inv, ledger = _started(dict(KRW=10_000_000, BTC=1), dict(KRW=10_000_000, BTC=1), skew_bps=10)
    assert inv.threshold_bps("KRW-BTC", Venue.UPBIT, 20) == 20
    # Upbit 0.6 BTC of 2 (target 1, default floor 0.2): p = (1 - 0.6) / (1 - 0.2) = 0.5
    ledger.load(Venue.UPBIT, balances(KRW=10_000_000, BTC="0.6"))
    ledger.load(Venue.BITHUMB, balances(KRW=10_000_000, BTC="1.4"))
    assert inv.threshold_bps("KRW-BTC", Venue.UPBIT, 20) == pytest.approx(30.0)
    # the other direction refills Upbit: Bithumb's coin is above target (p = -0.5)
    assert inv.threshold_bps("KRW-BTC", Venue.BITHUMB, 20) == pytest.approx(15.0)
    # 80 % of the way to the floor: 4 x skew; at the floor: never
    ledger.load(Venue.UPBIT, balances(KRW=10_000_000, BTC="0.36"))
    ledger.load(Venue.BITHUMB, balances(KRW=10_000_000, BTC="1.64"))
    assert inv.threshold_bps("KRW-BTC", Venue.UPBIT, 20) == pytest.approx(60.0)
    ledger.load(Venue.UPBIT, balances(KRW=10_000_000, BTC="0.2"))
    ledger.load(Venue.BITHUMB, balances(KRW=10_000_000, BTC="1.8"))
    assert inv.threshold_bps("KRW-BTC", Venue.UPBIT, 20) == math.inf


def test_threshold_follows_a_fill_at_once_though_pressure_is_cached_between_changes():
    from karb.model import Side
    inv, ledger = _started(dict(KRW=10_000_000, BTC=1), dict(KRW=10_000_000, BTC=1), skew_bps=10)
    assert inv.threshold_bps("KRW-BTC", Venue.UPBIT, 20) == 20
    # 0.4 BTC leave Upbit for no KRW (only the coin side moves): of 1.6 BTC, target 0.8, floor
    # 0.2, have 0.6: p = 0.2 / 0.6 = 1/3 -> +10 * (1/3) / (2/3) = +5 bps
    reservation = ledger.reserve("t1", {(Venue.UPBIT, "BTC"): D("0.4")})
    ledger.apply_fill(reservation, Venue.UPBIT, "KRW-BTC", Side.SELL, D("0.4"), D(0), D(0))
    assert inv.threshold_bps("KRW-BTC", Venue.UPBIT, 20) == pytest.approx(25.0)


def test_threshold_counts_the_krw_drained_on_the_buy_venue():
    inv, ledger = _started(dict(KRW=10_000_000, BTC=1), dict(KRW=10_000_000, BTC=1), skew_bps=10)
    # selling on Upbit buys on Bithumb: Bithumb's KRW half-way to its floor (6M of 20M)
    ledger.load(Venue.BITHUMB, balances(KRW=6_000_000, BTC=1))
    ledger.load(Venue.UPBIT, balances(KRW=14_000_000, BTC=1))
    assert inv.threshold_bps("KRW-BTC", Venue.UPBIT, 20) == pytest.approx(30.0)
    assert inv.threshold_bps("KRW-BTC", Venue.BITHUMB, 20) == pytest.approx(15.0)


def test_threshold_relief_stops_at_zero_and_at_twice_the_skew():
    inv, ledger = _started(dict(KRW=10_000_000, BTC=1), dict(KRW=10_000_000, BTC=1), skew_bps=10)
    ledger.load(Venue.UPBIT, balances(KRW=0, BTC=2))
    ledger.load(Venue.BITHUMB, balances(KRW=20_000_000, BTC=0))
    assert inv.max_relief_bps == 20
    assert inv.threshold_bps("KRW-BTC", Venue.UPBIT, 30) == pytest.approx(10.0)
    assert inv.threshold_bps("KRW-BTC", Venue.UPBIT, 5) == 0.0


def test_default_bands_keep_a_floor_share_of_the_start_amount():
    inv, ledger = _started(dict(KRW=10**9, BTC=1), dict(KRW=10**9, BTC=1), floor_share=0.25)
    # selling 0.8 BTC on Upbit would leave 0.2, under the 0.25 floor
    reason = inv.check(make_signal(buy_venue=Venue.BITHUMB, volume="0.8"), FEE_BT, FEE_UP)
    assert reason and "upbit BTC would end at 0.2" in reason
    assert inv.check(make_signal(buy_venue=Venue.BITHUMB, volume="0.75"), FEE_BT, FEE_UP) is None


def test_configured_band_wins_over_the_default_floor():
    ledger = Ledger()
    for v in Venue:
        ledger.load(v, balances(KRW=10**9, BTC=1))
    inv = Inventory(make_config(inventory={"bands": {"upbit": {"BTC": {"min": "0.9"}}}}).inventory, ledger)
    inv.set_targets({v: {"BTC": D(1), "KRW": D(10**9)} for v in Venue})
    assert inv.check(make_signal(buy_venue=Venue.BITHUMB, volume="0.2"), FEE_BT, FEE_UP) is not None
    assert inv.check(make_signal(buy_venue=Venue.BITHUMB, volume="0.1"), FEE_BT, FEE_UP) is None


def test_shares_and_low_sides():
    inv, ledger = _started(dict(KRW=10_000_000, BTC=1), dict(KRW=10_000_000, BTC=1))
    ledger.load(Venue.UPBIT, balances(KRW=10_000_000, BTC="0.4"))
    ledger.load(Venue.BITHUMB, balances(KRW=10_000_000, BTC="1.6"))
    assert inv.shares(["BTC"]) == {"BTC": {"upbit": pytest.approx(0.2), "bithumb": pytest.approx(0.8)}}
    assert inv.low(Venue.UPBIT, "BTC") and not inv.low(Venue.BITHUMB, "BTC")


def test_without_targets_the_threshold_is_the_base():
    inv = _inventory({}, up=dict(KRW=10**8, BTC="0.01"), bt=dict(KRW=10**8, BTC=1))
    assert inv.threshold_bps("KRW-BTC", Venue.UPBIT, 20) == 20
