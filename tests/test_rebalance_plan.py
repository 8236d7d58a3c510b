"""The rebalancing planner: which move, its itemised cost (exact), and whether it is worth it."""
from decimal import Decimal as D

from karb.inventory import Inventory
from karb.ledger import Ledger
from karb.model import Venue
from karb.rebalance.config import RebalanceConfig
from karb.rebalance.plan import Planner
from tests.trading_fixtures import balances, make_config

UP, BT = Venue.UPBIT, Venue.BITHUMB
MARKETS = ["KRW-XRP", "KRW-ETH"]
FEES = {UP: D("0.0005"), BT: D("0.0004")}
START = {UP: {"KRW": D(10_000_000), "XRP": D(1000), "ETH": D(2)},
         BT: {"KRW": D(10_000_000), "XRP": D(1000), "ETH": D(2)}}
BOOKS = {(UP, "KRW-XRP"): (D(3199), D(3201)), (BT, "KRW-XRP"): (D(3196), D(3200)),
         (UP, "KRW-ETH"): (D(5_200_000), D(5_201_000)), (BT, "KRW-ETH"): (D(5_199_000), D(5_200_000))}


def _planner(now, **rebalance):
    ledger = Ledger()
    for venue, amounts in now.items():
        ledger.load(venue, balances(**amounts))
    inventory = Inventory(make_config().inventory, ledger)
    inventory.set_targets(START)
    return Planner(RebalanceConfig(**rebalance), inventory, MARKETS, lambda venue, market: FEES[venue])


def _top(venue, market):
    return BOOKS.get((venue, market))


def test_balanced_inventory_plans_nothing():
    planner = _planner({UP: dict(KRW=10**7, XRP=1000, ETH=2), BT: dict(KRW=10**7, XRP=1000, ETH=2)})
    assert planner.plans(_top, {"XRP": D("1"), "ETH": D("0.01")}, {}) == []


def test_coin_route_sends_the_deficit_back_and_costs_the_network_fee_at_the_senders_bid():
    # Bithumb sold XRP down to 400 (below 50 % of 1000): 600 went to Upbit
    planner = _planner({UP: dict(KRW=10**7, XRP=1600, ETH=2), BT: dict(KRW=10**7, XRP=400, ETH=2)})
    (plan,) = planner.plans(_top, {"XRP": D("0.4"), "ETH": D("0.01")},
                            {("KRW-XRP", BT): D(5000), ("KRW-XRP", UP): D(999_999)})
    assert (plan.asset, plan.route, plan.from_venue, plan.to_venue) == ("XRP", "coin", UP, BT)
    assert plan.amount == D(600)  # back to the 50 % target of 2000
    assert plan.costs == {"network_fee": D("0.4") * D(3199)}  # no trading fee, no price risk
    assert plan.cost_krw == D("1279.6")
    assert plan.earnings_krw == D(5000)  # only the drained direction: selling XRP on Bithumb
    assert plan.worth
    assert "600 XRP upbit -> bithumb" in str(plan) and "worth it" in str(plan)


def test_coin_route_not_worth_it_when_the_direction_earns_less_than_the_fee():
    planner = _planner({UP: dict(KRW=10**7, XRP=1600, ETH=2), BT: dict(KRW=10**7, XRP=400, ETH=2)})
    (plan,) = planner.plans(_top, {"XRP": D("0.4")}, {("KRW-XRP", BT): D("1279.6")})
    assert not plan.worth  # cost equal to earnings: not below them
    assert "not worth it" in str(plan)


def test_coin_route_respects_max_transfer_and_a_missing_fee_is_a_problem():
    planner = _planner({UP: dict(KRW=10**7, XRP=1600, ETH=2), BT: dict(KRW=10**7, XRP=400, ETH=2)},
                       max_transfer={"XRP": D(250)})
    (plan,) = planner.plans(_top, {"XRP": D("0.4")}, {("KRW-XRP", BT): D(10**6)})
    assert plan.amount == D(250)
    (plan,) = planner.plans(_top, {}, {("KRW-XRP", BT): D(10**6)})
    assert plan.problem and "network fee" in plan.problem and not plan.worth


def test_floor_triggers_a_plan_for_eth():
    planner = _planner({UP: dict(KRW=10**7, XRP=1000, ETH="0.3"), BT: dict(KRW=10**7, XRP=1000, ETH="3.7")})
    (plan,) = planner.plans(_top, {"ETH": D("0.01"), "XRP": D(1)}, {})
    assert "floor" in plan.why and plan.from_venue is BT and plan.amount == D("1.7")
    assert plan.costs == {"network_fee": D("0.01") * D(5_199_000)}
    assert not plan.worth  # nothing earned in the window


def test_krw_route_through_the_bridge_itemises_every_cost_exactly():
    # Upbit's KRW went down to 4,000,000: buy XRP on Bithumb (KRW-rich), send, sell on Upbit
    planner = _planner({UP: dict(KRW=4_000_000, XRP=1000, ETH=2), BT: dict(KRW=16_000_000, XRP=1000, ETH=2)},
                       arrival_s={"XRP": 1350.0}, daily_volatility=D("0.04"))
    earnings = {("KRW-XRP", BT): D(30_000), ("KRW-ETH", BT): D(20_000), ("KRW-ETH", UP): D(10**9)}
    (plan,) = planner.plans(_top, {"XRP": D("0.4"), "ETH": D("0.01")}, earnings)
    assert (plan.asset, plan.route, plan.bridge, plan.from_venue, plan.to_venue) == ("KRW", "krw", "XRP", BT, UP)
    volume = (D(6_000_000) / D(3200)).quantize(D("0.00000001"))  # 1875: Bithumb's ask
    assert plan.bridge_volume == volume == D(1875)
    ask, bid = D(3200), D(3199)  # bought at Bithumb's ask, sold at Upbit's bid
    assert plan.costs == {
        "buy_fee": volume * ask * D("0.0004"),
        "spread": volume * (ask - bid),
        "network_fee": D("0.4") * bid,
        "sell_fee": (volume - D("0.4")) * bid * D("0.0005"),
        "price_risk": volume * D(3200) * D("0.04") * (D(1350) / D(86400)).sqrt(),  # sqrt = 0.125
    }
    assert plan.costs["price_risk"] == D(30_000)
    spent, received = volume * ask * (1 + D("0.0004")), (volume - D("0.4")) * bid * (1 - D("0.0005"))
    assert plan.cost_krw - plan.costs["price_risk"] == spent - received
    assert plan.amount == received
    assert plan.earnings_krw == D(50_000)  # every market's "buy on Upbit" = "sell on Bithumb"
    assert plan.cost_krw < plan.earnings_krw and plan.worth


def test_krw_route_without_a_bridge_book_is_not_possible():
    planner = _planner({UP: dict(KRW=4_000_000, XRP=1000, ETH=2), BT: dict(KRW=16_000_000, XRP=1000, ETH=2)},
                       bridge="SOL")
    (plan,) = planner.plans(_top, {"XRP": D("0.4"), "SOL": D("0.01")}, {("KRW-XRP", BT): D(10**9)})
    assert plan.problem and "KRW-SOL" in plan.problem and not plan.worth
