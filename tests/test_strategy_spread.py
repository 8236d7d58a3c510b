"""Executable spread: hand-computed walks, threshold inside a level, caps, rounding, minimums."""
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from karb.model import Venue
from karb.rules import MarketRules
from karb.spread import describe, finalize, sweep_cost, top_net_bps, walk_spread

INF = float("inf")
# Buy on these asks (ascending), sell into these bids (descending).
ASKS = ((100.0, 1.0), (101.0, 2.0), (103.0, 5.0))
BIDS = ((104.0, 1.5), (102.5, 1.0), (101.0, 3.0))
BUY_FEE, SELL_FEE = 0.001, 0.0005  # buy side pays 1.001x, sell side keeps 0.9995x


def test_walk_with_three_segments_stops_where_marginal_edge_turns_negative():
    # Arrange: marginal net per coin, b*0.9995 - a*1.001:
    #   (a=100, b=104)   3.848    x1.0
    #   (a=101, b=104)   2.847    x0.5
    #   (a=101, b=102.5) 1.34775  x1.0
    #   (a=101, b=101)  -0.1515   -> stop
    # Act
    walk = walk_spread(ASKS, BIDS, BUY_FEE, SELL_FEE, 50.0, INF, INF)
    # Assert
    assert walk.volume == pytest.approx(2.5)
    assert walk.buy_cost == pytest.approx(100 + 50.5 + 101)  # 251.5, VWAP 100.6
    assert walk.sell_proceeds == pytest.approx(104 * 1.5 + 102.5)  # 258.5, VWAP 103.4
    assert (walk.worst_ask, walk.worst_bid) == (101.0, 102.5)
    net = walk.sell_proceeds * (1 - SELL_FEE) - walk.buy_cost * (1 + BUY_FEE)
    assert net == pytest.approx(3.848 + 2.847 * 0.5 + 1.34775)  # 6.61925 KRW


def test_walk_with_high_threshold_stops_inside_a_level_at_exactly_the_threshold():
    # Arrange: threshold 300 bps. After 1.5 coin: cost 150.5, net 5.2715. In the third
    # segment (a=101, marginal 1.34775) net - 0.03*cost falls by 0.03*101 - 1.34775 = 1.68225
    # per coin from 5.2715 - 4.515 = 0.7565, so it reaches zero after 0.7565/1.68225 coin.
    room = 0.7565 / 1.68225  # 0.4496953...
    # Act
    walk = walk_spread(ASKS, BIDS, BUY_FEE, SELL_FEE, 300.0, INF, INF)
    # Assert
    assert walk.volume == pytest.approx(1.5 + room)
    net = walk.sell_proceeds * (1 - SELL_FEE) - walk.buy_cost * (1 + BUY_FEE)
    assert net / walk.buy_cost * 1e4 == pytest.approx(300.0)


def test_walk_with_top_of_book_below_threshold_returns_none():
    # top marginal 3.848 KRW on 100 KRW = 384.8 bps
    assert walk_spread(ASKS, BIDS, BUY_FEE, SELL_FEE, 385.0, INF, INF) is None
    assert walk_spread(ASKS, BIDS, BUY_FEE, SELL_FEE, 384.0, INF, INF) is not None


def test_walk_with_fees_eating_the_gross_edge_returns_none():
    # gross 4% at the top, but 2% + 2.5% fees
    assert walk_spread(ASKS, BIDS, 0.02, 0.025, 0.0, INF, INF) is None


def test_walk_with_krw_budget_caps_volume_at_the_limit_price_including_fee():
    # Arrange: budget 150 KRW for limit*volume*1.001. Level 1 costs 100.1 (room 1.4985 coin),
    # then at limit 101 the room is 150/101.101 = 1.48366 coin in total.
    # Act
    walk = walk_spread(ASKS, BIDS, BUY_FEE, SELL_FEE, 50.0, INF, 150.0)
    # Assert
    assert walk.volume == pytest.approx(150 / (101 * 1.001))
    assert walk.worst_ask * walk.volume * (1 + BUY_FEE) == pytest.approx(150.0)


def test_walk_with_budget_below_next_level_stays_on_the_cheaper_limit():
    # 100.2 KRW covers 1 coin at 100 (100.1) but nothing at 101 (1 coin there costs 101.1)
    walk = walk_spread(ASKS, BIDS, BUY_FEE, SELL_FEE, 50.0, INF, 100.2)
    assert walk.volume == pytest.approx(1.0)
    assert walk.worst_ask == 100.0


def test_walk_with_coin_cap_takes_exactly_the_cap():
    walk = walk_spread(ASKS, BIDS, BUY_FEE, SELL_FEE, 50.0, 0.3, INF)
    assert walk.volume == 0.3
    assert (walk.worst_ask, walk.worst_bid) == (100.0, 104.0)


def test_walk_with_empty_side_or_zero_cap_returns_none():
    assert walk_spread((), BIDS, BUY_FEE, SELL_FEE, 10.0, INF, INF) is None
    assert walk_spread(ASKS, (), BUY_FEE, SELL_FEE, 10.0, INF, INF) is None
    assert walk_spread(ASKS, BIDS, BUY_FEE, SELL_FEE, 10.0, 0.0, INF) is None
    assert walk_spread(ASKS, BIDS, BUY_FEE, SELL_FEE, 10.0, INF, 0.0) is None


def test_top_net_bps_with_hand_numbers_matches_formula():
    assert top_net_bps(ASKS, BIDS, BUY_FEE, SELL_FEE) == pytest.approx(384.8)
    assert top_net_bps((), BIDS, BUY_FEE, SELL_FEE) is None


def test_sweep_cost_with_float_dust_does_not_reach_the_next_level():
    levels = ((10.0, 0.1), (11.0, 0.2), (50.0, 1.0))
    total, worst = sweep_cost(levels, 0.1 + 0.2)  # 0.30000000000000004
    assert worst == 11.0
    assert total == pytest.approx(10 * 0.1 + 11 * 0.2)


# --- finalize: Decimal conversion, tick direction, minimum order -----------------------

BTC_ASKS = ((140_000_500.0, 0.02), (140_100_000.0, 0.05))  # first level off the 1,000 grid
BTC_BIDS = ((140_700_500.0, 0.03), (140_600_000.0, 0.05))  # off the grid as well


def _rules(venue, min_total="5000", decimals=8):
    return MarketRules(venue, "KRW-BTC", min_total=D(min_total), volume_decimals=decimals)


def _finalize(walk, asks=BTC_ASKS, bids=BTC_BIDS, threshold=10.0, buy_rules=None, sell_rules=None):
    return finalize(walk, "KRW-BTC", Venue.BITHUMB, Venue.UPBIT, asks, bids,
                    buy_rules or _rules(Venue.BITHUMB), sell_rules or _rules(Venue.UPBIT),
                    0.0004, 0.0005, threshold, 123, (7, 9), (100, 200), "sig1")


def test_finalize_with_off_grid_levels_rounds_buy_down_and_sell_up():
    # Arrange
    walk = walk_spread(BTC_ASKS, BTC_BIDS, 0.0004, 0.0005, 10.0, 0.015, INF)
    # Act
    signal = _finalize(walk)
    # Assert: an IOC never fills worse than its limit, so this can only fill less, never worse
    assert signal.volume == D("0.015")
    assert signal.buy_price == D("140000000")  # 140,000,500 down to the 1,000 tick
    assert signal.sell_price == D("140701000")  # 140,700,500 up to the 1,000 tick
    assert signal.buy_price <= D("140000500") and signal.sell_price >= D("140700500")
    assert (signal.book_versions, signal.book_recv_ns, signal.id) == ((7, 9), (100, 200), "sig1")


def test_finalize_with_hand_numbers_computes_edge_and_profit():
    # Arrange: 0.015 BTC bought at 140,000,500 and sold at 140,700,500 (one level each)
    walk = walk_spread(BTC_ASKS, BTC_BIDS, 0.0004, 0.0005, 10.0, 0.015, INF)
    cost, proceeds = 0.015 * 140_000_500, 0.015 * 140_700_500  # 2,100,007.5 / 2,110,507.5
    net_krw = proceeds * 0.9995 - cost * 1.0004  # 2,109,452.246 - 2,100,847.503 = 8,604.74
    # Act
    signal = _finalize(walk)
    # Assert
    assert signal.buy_vwap == pytest.approx(140_000_500)
    assert signal.sell_vwap == pytest.approx(140_700_500)
    assert signal.gross_bps == pytest.approx(700_000 / 140_000_500 * 1e4)  # 50.0 bps
    assert signal.net_bps == pytest.approx(net_krw / cost * 1e4)  # 40.97 bps
    assert signal.est_profit_krw == D("8604.74")
    assert describe(signal) == (
        "Signal upbit_sell KRW-BTC net 0.41% (gross 0.50%) 0.015 BTC, est. profit 8,605 KRW")


def test_finalize_with_volume_beyond_precision_floors_to_the_coarser_venue():
    walk = walk_spread(BTC_ASKS, BTC_BIDS, 0.0004, 0.0005, 10.0, 0.0123456789, INF)
    signal = _finalize(walk, sell_rules=_rules(Venue.UPBIT, decimals=4))
    assert signal.volume == D("0.0123")


def test_finalize_with_order_value_below_minimum_returns_reason():
    # 0.00003 BTC x 140,000,000 = 4,200 KRW < 5,000 on the buy venue
    walk = walk_spread(BTC_ASKS, BTC_BIDS, 0.0004, 0.0005, 10.0, 0.00003, INF)
    reason = _finalize(walk)
    assert isinstance(reason, str) and "minimum" in reason and "bithumb" in reason


def test_finalize_with_higher_minimum_on_sell_venue_names_the_sell_venue():
    walk = walk_spread(BTC_ASKS, BTC_BIDS, 0.0004, 0.0005, 10.0, 0.0001, INF)  # ~14,000 KRW
    reason = _finalize(walk, sell_rules=_rules(Venue.UPBIT, min_total="20000"))
    assert isinstance(reason, str) and "upbit" in reason


def test_finalize_with_volume_below_precision_returns_reason():
    walk = walk_spread(BTC_ASKS, BTC_BIDS, 0.0004, 0.0005, 10.0, 0.004, INF)
    reason = _finalize(walk, buy_rules=_rules(Venue.BITHUMB, decimals=2))
    assert isinstance(reason, str) and "precision" in reason


# --- properties --------------------------------------------------------------------------

prices = st.floats(min_value=90.0, max_value=110.0, allow_nan=False)
sizes = st.floats(min_value=0.01, max_value=5.0, allow_nan=False)


def _side(draw_levels, descending):
    levels = sorted({round(p, 2): s for p, s in draw_levels}.items(), reverse=descending)
    return tuple(levels)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(prices, sizes), min_size=1, max_size=8),
       st.lists(st.tuples(prices, sizes), min_size=1, max_size=8),
       st.floats(min_value=0.0, max_value=200.0), st.floats(min_value=0.01, max_value=30.0),
       st.floats(min_value=10.0, max_value=3000.0))
def test_walk_with_random_books_never_breaks_threshold_caps_or_marginal_rule(
        raw_asks, raw_bids, threshold, max_volume, budget):
    asks, bids = _side(raw_asks, False), _side(raw_bids, True)
    walk = walk_spread(asks, bids, BUY_FEE, SELL_FEE, threshold, max_volume, budget)
    if walk is None:
        return
    net = walk.sell_proceeds * (1 - SELL_FEE) - walk.buy_cost * (1 + BUY_FEE)
    assert net / walk.buy_cost * 1e4 >= threshold - 1e-6
    assert walk.volume <= max_volume * (1 + 1e-12)
    assert walk.worst_ask * walk.volume * (1 + BUY_FEE) <= budget * (1 + 1e-9)
    # even if every unit filled at the limits, the trade would not lose money
    assert walk.worst_bid * (1 - SELL_FEE) >= walk.worst_ask * (1 + BUY_FEE)
    # the walk agrees with sweeping each side on its own
    assert sweep_cost(asks, walk.volume)[0] == pytest.approx(walk.buy_cost)
    assert sweep_cost(bids, walk.volume)[0] == pytest.approx(walk.sell_proceeds)


def test_finalize_with_exact_cap_shrinks_volume_and_rederives_the_limits_for_it():
    # Arrange: the walk reaches the 140,100,000 ask for 0.03 BTC; the exact limits allow 0.015
    walk = walk_spread(BTC_ASKS, BTC_BIDS, 0.0004, 0.0005, 10.0, 0.03, INF)
    asked = []

    def cap(buy_price, sell_price, step):
        asked.append((buy_price, sell_price, step))
        return D("0.015")
    # Act
    signal = finalize(walk, "KRW-BTC", Venue.BITHUMB, Venue.UPBIT, BTC_ASKS, BTC_BIDS,
                      _rules(Venue.BITHUMB), _rules(Venue.UPBIT, decimals=4), 0.0004, 0.0005,
                      10.0, 123, (7, 9), (100, 200), "sig1", cap)
    # Assert: 0.015 fits in the first ask level, so the buy limit comes back to it
    assert signal.volume == D("0.015")
    assert signal.buy_price == D("140000000")
    assert asked == [(D("140100000"), D("140701000"), D("0.0001")),
                     (D("140000000"), D("140701000"), D("0.0001"))]


def test_finalize_with_exact_cap_of_zero_returns_reason():
    walk = walk_spread(BTC_ASKS, BTC_BIDS, 0.0004, 0.0005, 10.0, 0.03, INF)
    reason = finalize(walk, "KRW-BTC", Venue.BITHUMB, Venue.UPBIT, BTC_ASKS, BTC_BIDS,
                      _rules(Venue.BITHUMB), _rules(Venue.UPBIT), 0.0004, 0.0005, 10.0, 123,
                      (7, 9), (100, 200), "sig1", lambda b, s, step: D(0))
    assert reason == "no volume on the venues' grid fits the limits"
