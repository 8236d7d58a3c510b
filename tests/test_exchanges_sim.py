"""The three REST clients against the loopback sim (karb.sim): real sockets, real signatures."""
from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
import yaml

from karb.cli import REPO_CONFIG
from karb.config import parse_config
from karb.exchanges.errors import InsufficientFunds, InvalidOrder, OrderNotFound
from karb.exchanges.factory import make_client
from karb.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce, Venue
from karb.rules import MarketRules
from karb.sim.cluster import SimCluster
from tests.conftest import wait_until

pytestmark = pytest.mark.integration
MARKET = "KRW-XRP"
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def sim():
    data = yaml.safe_load((REPO_CONFIG / "sim.yaml").read_text())
    data["markets"] = ["KRW-BTC", MARKET]
    data["sim"]["markets"] = {m: data["sim"]["markets"][m] for m in data["markets"]}
    data["log"] = {"file": None}
    config = parse_config(data)
    with SimCluster.from_config(config).start() as cluster:
        yield cluster, cluster.apply_to(config)


@pytest.fixture(params=["upbit", "bithumb", "bithumb-legacy"])
def client(request, sim):
    import dataclasses
    cluster, config = sim
    venue = Venue.UPBIT if request.param == "upbit" else Venue.BITHUMB
    if request.param == "bithumb-legacy":
        bithumb = dataclasses.replace(config.venues.bithumb, api="legacy")
        config = dataclasses.replace(config, venues=dataclasses.replace(config.venues, bithumb=bithumb))
    c = make_client(venue, config, cluster.credentials(venue))
    yield c
    for order in c.get_open_orders(MARKET):
        c.cancel_order(order_id=order.order_id)
    c.close()


def _order(client, side: Side, price: Decimal, volume: Decimal, tif=TimeInForce.GTC) -> OrderRequest:
    return OrderRequest(client.venue, MARKET, side, OrderType.LIMIT, f"it-{client.venue.value}-{next(_ids)}",
                        price=price, volume=volume, tif=tif)


def _book(client):
    return wait_until(lambda: (v := client.get_orderbook(MARKET)).bids and v.asks and v,
                      timeout=10, message="a two-sided sim book")


def _final(client, client_id: str):
    return wait_until(lambda: (o := client.get_order(client_id=client_id)).is_final and o,
                      timeout=10, message="a final order state")


def test_public_calls_against_sim_return_markets_and_book(client):
    assert MARKET in client.get_markets()
    view = _book(client)
    assert view.valid and view.bids[0][0] < view.asks[0][0]
    assert client.get_ticker([MARKET])[MARKET] > 0
    (info,) = client.get_market_info([MARKET])
    assert info.market == MARKET


def test_resting_order_against_sim_is_listed_then_cancelled(client):
    rules = MarketRules(client.venue, MARKET)
    view = _book(client)
    price = rules.round_buy_price(Decimal(repr(view.bids[0][0])) * Decimal("0.8"))
    request = _order(client, Side.BUY, price, Decimal("10"))

    placed = client.place_order(request)
    listed = [o.order_id for o in client.get_open_orders(MARKET)]
    cancelled = client.cancel_order(client_id=request.client_id)

    assert placed.status is OrderStatus.OPEN and placed.order_id in listed
    assert cancelled.order_id == placed.order_id
    final = _final(client, request.client_id)
    assert final.status is OrderStatus.CANCELLED and final.executed_volume == 0


def test_ioc_buy_through_the_ask_against_sim_fills(client):
    rules = MarketRules(client.venue, MARKET)
    view = _book(client)
    price = rules.round_sell_price(Decimal(repr(view.asks[0][0])) * Decimal("1.01"))
    request = _order(client, Side.BUY, price, Decimal("2"), TimeInForce.IOC)
    krw_before = client.get_balances()["KRW"].free

    client.place_order(request)
    final = _final(client, request.client_id)

    assert final.executed_volume == Decimal("2") and final.executed_funds <= price * 2
    assert sum(f.volume for f in final.fills) == final.executed_volume
    assert client.get_balances()["KRW"].free < krw_before


def test_rejections_against_sim_raise_typed_errors(client):
    rules = MarketRules(client.venue, MARKET)
    view = _book(client)
    bid = rules.round_buy_price(Decimal(repr(view.bids[0][0])) * Decimal("0.8"))

    with pytest.raises(InsufficientFunds):  # ~500M KRW: over the balance, under the 1e9 maximum
        client.place_order(_order(client, Side.BUY, bid, Decimal("200000")))
    with pytest.raises(InvalidOrder):
        client.place_order(_order(client, Side.BUY, bid + rules.tick_for(bid) / 2, Decimal("10")))
    with pytest.raises(OrderNotFound):
        client.get_order(order_id="no-such-order")


def test_balances_command_with_sim_prints_paper_account(capsys):
    from karb import cli

    code = cli.main(["balances", "--sim", "--venue", "upbit"])

    out = capsys.readouterr().out
    assert code == 0 and out.startswith("upbit: ") and "  KRW " in out
