"""Property: a signal the strategy emits is never refused by a limit the engine already knew.

Random books (prices from 0.0001 KRW to BTC-like 1e8, on each venue's tick grid), balances with
8 decimals (partly held by another trade), trade/position limits, inventory bands, fees and
venue precisions; the real ``Strategy``, ``Risk``, ``Ledger``, ``Inventory`` and ``RulesBook``
objects. Every signal the strategy emits must pass ``risk.approve`` (value, position room and the ledger reservation) and
``inventory.check``, and be an order both venues accept (grid, precision, minimum value).
"""
from __future__ import annotations

from decimal import Decimal as D

from hypothesis import event, given, settings
from hypothesis import strategies as st

from karb.book import BookBoard
from karb.clock import ManualClock
from karb.inventory import Inventory
from karb.ledger import Reservation
from karb.model import Balance, Signal, Venue
from karb.risk import Risk, taker_fee
from karb.rules import MarketRules, RulesBook, round_down, round_up
from karb.sizing import steps_within
from karb.strategy import Strategy
from tests.trading_fixtures import make_config

MARKET = "KRW-XYZ"
COIN = "XYZ"

fees = st.sampled_from(["0", "0.0004", "0.0005", "0.0025", "0.00139"])
EIGHT = D("0.00000001")


def krw_values(low: int, high: int):
    """KRW amounts spread evenly in magnitude from 10**low to 10**high, 8 random decimals."""
    return st.builds(lambda digits, exp: D(digits).scaleb(exp - 16).quantize(EIGHT),
                     st.integers(min_value=10**16, max_value=10**17 - 1),
                     st.integers(min_value=low, max_value=high - 1))


def _venue(taker_fee: str) -> dict:
    return {"rest_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1",
            "taker_fee": taker_fee, "maker_fee": "0"}


@st.composite
def prices(draw):
    """A mid price from 0.0001 KRW (BTT/SHIB-like) to 1e8 (BTC-like)."""
    exponent = draw(st.integers(min_value=-4, max_value=8))
    mantissa = draw(st.integers(min_value=1000, max_value=9999))
    return D(mantissa).scaleb(exponent - 3)


def _ladder(draw, rules: MarketRules, start: D, up: bool, coin_per_krw: D):
    """1-5 levels on ``rules``' tick grid moving away from ``start``; sizes with 8 decimals."""
    levels, price = {}, start
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        if price <= 0:
            break
        tick = rules.tick_for(price)
        price = round_up(price, tick) if up else round_down(price, tick)
        if price <= 0:  # rounded below the finest tick
            break
        size = (draw(krw_values(2, 9)) * coin_per_krw).quantize(EIGHT)
        if size > 0:
            levels[float(price)] = float(size)
        step = D(draw(st.integers(min_value=1, max_value=50))) * price / 10_000
        step = max(step, rules.tick_for(price))
        price = price + step if up else price - step
    return sorted(levels.items(), reverse=not up)


@st.composite
def scenarios(draw):
    mid = draw(prices())
    buy_venue = draw(st.sampled_from(list(Venue)))
    sell_venue = buy_venue.other
    coin_per_krw = 1 / mid
    rules = {
        venue: MarketRules(venue, MARKET, taker_fee=D(draw(fees)),
                           volume_decimals=draw(st.sampled_from([8, 8, 6, 4, 0])),
                           min_total=D(draw(st.sampled_from(["5000", "1000", "500"]))))
        for venue in Venue
    }
    edge_bps = draw(st.integers(min_value=-20, max_value=400))
    ask = mid
    bid = mid * (1 + D(edge_bps) / 10_000)
    books = {
        buy_venue: (_ladder(draw, rules[buy_venue], ask * D("0.99"), False, coin_per_krw),
                    _ladder(draw, rules[buy_venue], ask, True, coin_per_krw)),
        sell_venue: (_ladder(draw, rules[sell_venue], bid, False, coin_per_krw),
                     _ladder(draw, rules[sell_venue], bid * D("1.01"), True, coin_per_krw)),
    }
    coin_amounts = krw_values(3, 10).map(lambda krw: (krw * coin_per_krw).quantize(EIGHT))
    balances = {venue: {"KRW": draw(krw_values(3, 10)), COIN: draw(coin_amounts)} for venue in Venue}
    risk = {"max_trade_krw": str(draw(krw_values(3, 9)).normalize()),
            "max_position_krw": str(draw(krw_values(3, 10)).normalize())}
    if draw(st.booleans()):
        risk["max_position"] = {COIN: str(draw(coin_amounts))}
    strategy = {"threshold_bps": draw(st.integers(min_value=1, max_value=40)), "cooldown_ms": 0}
    if draw(st.booleans()):
        strategy["max_volume"] = {MARKET: str(draw(coin_amounts) or 1)}
    bands: dict = {}
    for venue in Venue:
        for asset, amount in balances[venue].items():
            if draw(st.integers(min_value=0, max_value=3)) == 0:  # some start out of band
                low = (amount * D(draw(st.integers(min_value=0, max_value=150))) / 100).quantize(EIGHT)
                band = {"min": str(low)}
                if draw(st.booleans()):
                    high = amount * D(draw(st.integers(min_value=50, max_value=300))) / 100 + 1
                    band["max"] = str(max(high, low).quantize(EIGHT))
                bands.setdefault(venue.value, {})[asset] = band
    venues = {venue.value: _venue(draw(fees)) for venue in Venue}
    held = {(venue, asset): (amount * draw(st.integers(min_value=0, max_value=100)) / 100)
            .quantize(EIGHT) for venue in Venue for asset, amount in balances[venue].items()
            if draw(st.integers(min_value=0, max_value=3)) == 0}  # another trade's reservation
    return dict(rules=rules, books=books, balances=balances, risk=risk, strategy=strategy,
                bands=bands, venues=venues, held=held)


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_every_emitted_signal_passes_risk_ledger_and_inventory(tmp_path_factory, case):
    # Arrange: the engine's own objects, wired as the engine wires them
    tmp = tmp_path_factory.mktemp("sizing")
    config = make_config(tmp, markets=(MARKET,), strategy=case["strategy"], risk=case["risk"],
                         inventory={"bands": case["bands"], "skew_bps": 0}, venues=case["venues"])
    rules = RulesBook({(venue, MARKET): r for venue, r in case["rules"].items()})
    clock = ManualClock()
    board = BookBoard([MARKET])
    risk = Risk(config, rules, clock)
    inventory = Inventory(config.inventory, risk.ledger)
    for venue, amounts in case["balances"].items():
        risk.ledger.load(venue, {c: Balance(c, a) for c, a in amounts.items()})
    assert not isinstance(risk.ledger.reserve("other trade", case["held"]), str)
    emitted, outcomes = [], []

    def submit(signal):  # what the executor does before anything is sent
        emitted.append(signal)
        outcomes.append(risk.approve(signal))
        return outcomes[-1] if isinstance(outcomes[-1], str) else None

    strategy = Strategy(board, rules, risk, inventory, config, clock, submit)
    for venue, (bids, asks) in case["books"].items():
        board.get(venue, MARKET).apply_snapshot(bids, asks, 1, clock.monotonic_ns())
    # Act
    strategy.evaluate(clock.monotonic_ns())
    # Assert
    event("signal" if emitted else "no signal")
    for signal, outcome in zip(emitted, outcomes):
        assert isinstance(outcome, Reservation), outcome
        fee_buy = taker_fee(config, rules, signal.buy_venue, MARKET)
        fee_sell = taker_fee(config, rules, signal.sell_venue, MARKET)
        assert inventory.check(signal, fee_buy, fee_sell) is None
        for venue, price in ((signal.buy_venue, signal.buy_price),
                             (signal.sell_venue, signal.sell_price)):
            assert rules.get(venue, MARKET).check_limit_order(price, signal.volume) is None
    assert strategy.stats()["signals"] == len(emitted)


# --- each exact cap is the largest volume its own check accepts ------------------------------

def _signal(volume, buy_price, sell_price, buy_venue=Venue.BITHUMB):
    return Signal(market=MARKET, buy_venue=buy_venue, sell_venue=buy_venue.other, volume=volume,
                  buy_price=buy_price, sell_price=sell_price, buy_vwap=float(buy_price),
                  sell_vwap=float(sell_price), gross_bps=0.0, net_bps=0.0,
                  est_profit_krw=D(0), created_ns=1, id="s1")


steps = st.sampled_from([D(1), D("0.0001"), D("0.00000001")])


def test_steps_within_with_shib_at_0_021_stays_under_max_trade_krw():
    # 2,000,000 / 0.021 in floats is 95,238,095.23809524: 2,000,000.00000000004 KRW
    volume = steps_within(D(2_000_000), D("0.021"), D("0.00000001"))
    assert volume == D("95238095.23809523")
    assert volume * D("0.021") <= D(2_000_000) < (volume + D("0.00000001")) * D("0.021")
    assert steps_within(D(-1), D("0.021"), D(1)) == 0


@settings(max_examples=300, deadline=None)
@given(prices(), st.integers(min_value=0, max_value=300), krw_values(3, 10), krw_values(3, 10),
       krw_values(3, 10), krw_values(3, 11), fees, steps)
def test_risk_exact_cap_is_the_largest_volume_risk_check_accepts(
        tmp_path_factory, buy_price, spread_bps, max_trade, max_position, krw, coin_krw, fee, step):
    config = make_config(tmp_path_factory.mktemp("cap"), markets=(MARKET,),
                         risk={"max_trade_krw": str(max_trade), "max_position_krw": str(max_position)},
                         venues={v.value: _venue(fee) for v in Venue})
    rules = RulesBook({(v, MARKET): MarketRules(v, MARKET) for v in Venue})
    risk = Risk(config, rules, ManualClock())
    coin = (coin_krw / buy_price).quantize(EIGHT)
    risk.ledger.load(Venue.BITHUMB, {"KRW": Balance("KRW", krw)})
    risk.ledger.load(Venue.UPBIT, {COIN: Balance(COIN, coin)})
    sell_price = buy_price * (1 + D(spread_bps) / 10_000)
    cap = risk.exact_cap(MARKET, Venue.BITHUMB, Venue.UPBIT, buy_price, step)
    assert cap % step == 0
    if cap > 0:
        assert risk.check(_signal(cap, buy_price, sell_price)) is None
    assert risk.check(_signal(cap + step, buy_price, sell_price)) is not None


@settings(max_examples=300, deadline=None)
@given(prices(), st.integers(min_value=0, max_value=300), krw_values(3, 10), krw_values(3, 10),
       st.sampled_from(["KRW", COIN]), st.sampled_from(list(Venue)), st.booleans(),
       st.integers(min_value=0, max_value=200), fees, fees, steps)
def test_inventory_exact_cap_is_the_largest_volume_its_band_check_accepts(
        buy_price, spread_bps, krw, coin_krw, asset, venue, upper, percent, buy_fee, sell_fee, step):
    coin = (coin_krw / buy_price).quantize(EIGHT)
    have = krw if asset == "KRW" else coin
    edge = (have * percent / 100).quantize(EIGHT)
    band = {"max": str(edge)} if upper else {"min": str(edge)}
    config = make_config(inventory={"bands": {venue.value: {asset: band}}})
    risk_ledger = Risk(config, RulesBook(), ManualClock()).ledger
    for v in Venue:
        risk_ledger.load(v, {"KRW": Balance("KRW", krw), COIN: Balance(COIN, coin)})
    inventory = Inventory(config.inventory, risk_ledger)
    sell_price = buy_price * (1 + D(spread_bps) / 10_000)
    fees_ = (D(buy_fee), D(sell_fee))
    cap = inventory.exact_cap(MARKET, Venue.BITHUMB, Venue.UPBIT, buy_price, sell_price, *fees_, step)
    if cap is None:  # the band is on the side this direction cannot push out of it
        assert inventory.check(_signal(D(10) ** 12, buy_price, sell_price), *fees_) is None
        return
    assert cap % step == 0
    if cap > 0:
        assert inventory.check(_signal(cap, buy_price, sell_price), *fees_) is None
    assert inventory.check(_signal(cap + step, buy_price, sell_price), *fees_) is not None
