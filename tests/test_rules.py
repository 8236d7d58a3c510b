"""Market rules: tick bands and their edges, exact rounding direction, volume flooring."""
from decimal import Decimal as D

import pytest

from karb.model import Venue
from karb.rules import (
    MarketInfo,
    MarketRules,
    RulesBook,
    round_down,
    round_up,
    table_tick,
    to_legacy_symbol,
    to_upbit_symbol,
)

# (price, expected tick) at, just below and inside every band of the fallback tables.
UPBIT_CASES = [
    ("3000000", "1000"), ("2000000", "1000"), ("1999999", "1000"), ("1000000", "1000"),
    ("999999", "500"), ("500000", "500"), ("499999", "100"), ("100000", "100"),
    ("99999", "50"), ("50000", "50"), ("49999", "10"), ("10000", "10"),
    ("9999", "5"), ("5000", "5"), ("4999", "1"), ("1000", "1"), ("999", "1"), ("100", "1"),
    ("99.9", "0.1"), ("10", "0.1"), ("9.999", "0.001"), ("1", "0.001"),
    ("0.9999", "0.0001"), ("0.1", "0.0001"), ("0.09999", "0.00001"), ("0.01", "0.00001"),
    ("0.009999", "0.000001"), ("0.001", "0.000001"), ("0.0009999", "0.0000001"),
    ("0.0001", "0.0000001"), ("0.00009999", "0.00000001"),
]
BITHUMB_CASES = [
    ("150000000", "1000"), ("1000000", "1000"), ("999999", "500"), ("500000", "500"),
    ("499999", "100"), ("100000", "100"), ("99999", "50"), ("50000", "50"), ("49999", "10"),
    ("10000", "10"), ("9999", "5"), ("5000", "5"), ("4999", "1"), ("1000", "1"), ("100", "1"),
    ("99.99", "0.01"), ("1", "0.01"), ("0.9999", "0.0001"), ("0.0012", "0.0001"),
]


@pytest.mark.parametrize("price,tick", UPBIT_CASES)
def test_table_tick_upbit_with_band_edges_returns_band_tick(price, tick):
    assert table_tick(Venue.UPBIT, D(price)) == D(tick)


@pytest.mark.parametrize("price,tick", BITHUMB_CASES)
def test_table_tick_bithumb_with_band_edges_returns_band_tick(price, tick):
    assert table_tick(Venue.BITHUMB, D(price)) == D(tick)


def test_table_tick_with_non_positive_price_raises():
    with pytest.raises(ValueError):
        table_tick(Venue.UPBIT, D("0"))


@pytest.mark.parametrize(
    "price,buy,sell",
    [
        ("140123456.7", "140123000", "140124000"),  # 1,000 band
        ("999999", "999500", "1000000"),  # rounding up lands on the next band's grid
        ("5003.2", "5000", "5005"),
        ("123.45", "123", "124"),
        ("0.0123456", "0.01234", "0.01235"),
        ("140000000", "140000000", "140000000"),  # already on tick: unchanged
    ],
)
def test_round_prices_with_off_grid_price_rounds_buy_down_sell_up(price, buy, sell):
    rules = MarketRules(Venue.UPBIT, "KRW-X")
    assert rules.round_buy_price(D(price)) == D(buy)
    assert rules.round_sell_price(D(price)) == D(sell)
    assert rules.is_on_tick(rules.round_buy_price(D(price)))
    assert rules.is_on_tick(rules.round_sell_price(D(price)))


def test_floor_volume_with_excess_precision_truncates_never_rounds_up():
    rules = MarketRules(Venue.UPBIT, "KRW-BTC")
    assert rules.floor_volume(D("0.123456789")) == D("0.12345678")
    assert rules.floor_volume(D("0.999999999")) == D("0.99999999")
    assert rules.floor_volume(D("1")) == D("1")


def test_round_helpers_with_exact_multiples_are_identity():
    assert round_down(D("10.5"), D("0.5")) == D("10.5")
    assert round_up(D("10.5"), D("0.5")) == D("10.5")
    assert round_up(D("10.51"), D("0.5")) == D("11.0")


def test_check_limit_order_with_each_rule_broken_names_the_rule():
    rules = MarketRules(Venue.UPBIT, "KRW-BTC", min_total=D("5000"))
    assert rules.check_limit_order(D("140000000"), D("0.001")) is None
    assert "tick" in rules.check_limit_order(D("140000500"), D("0.001"))
    assert "decimals" in rules.check_limit_order(D("140000000"), D("0.000000001"))
    assert "minimum" in rules.check_limit_order(D("140000000"), D("0.00003"))
    assert "positive" in rules.check_limit_order(D("0"), D("1"))


def test_with_info_with_venue_tick_differing_from_table_overrides_only_that_band():
    # Upbit USDT/KRW trades on 0.5 in the 1,000-5,000 band instead of the table's 1.
    rules = MarketRules(Venue.UPBIT, "KRW-USDT").with_info(
        MarketInfo("KRW-USDT", tick_size=D("0.5"), ref_price=D("1400"), min_total=D("5000"),
                   taker_fee=D("0.0005"), maker_fee=D("0.0005"))
    )
    assert rules.tick_for(D("1400")) == D("0.5")
    assert rules.tick_for(D("4999")) == D("0.5")
    assert rules.tick_for(D("5000")) == D("5")  # other band: table
    assert rules.round_buy_price(D("1400.7")) == D("1400.5")
    assert rules.taker_fee == D("0.0005")


def test_with_info_with_tick_equal_to_table_keeps_no_override():
    rules = MarketRules(Venue.BITHUMB, "KRW-BTC").with_info(
        MarketInfo("KRW-BTC", tick_size=D("1000"), ref_price=D("140000000"))
    )
    assert rules.tick_override is None


def test_rules_book_update_with_partial_info_keeps_known_fields():
    book = RulesBook.fallback(["KRW-BTC"], {Venue.UPBIT: (D("0.0005"), D("0.0005")),
                                            Venue.BITHUMB: (D("0.0004"), D("0.0004"))})
    book.update(Venue.BITHUMB, [MarketInfo("KRW-BTC", min_total=D("1000"))])
    rules = book.get(Venue.BITHUMB, "KRW-BTC")
    assert rules.min_total == D("1000")
    assert rules.taker_fee == D("0.0004")
    with pytest.raises(KeyError, match="KRW-ETH"):
        book.get(Venue.UPBIT, "KRW-ETH")


def test_symbol_mapping_round_trips():
    assert to_legacy_symbol("KRW-BTC") == "BTC_KRW"
    assert to_upbit_symbol("BTC_KRW") == "KRW-BTC"
    assert to_upbit_symbol(to_legacy_symbol("KRW-SHIB")) == "KRW-SHIB"
