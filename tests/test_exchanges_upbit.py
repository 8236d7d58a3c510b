"""UpbitClient against recorded / constructed payloads served by ``responses`` (no network)."""
from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest
import responses
from responses import matchers

from karb.exchanges.errors import (
    AuthError, InsufficientFunds, InvalidOrder, RateLimited, VenueUnavailable,
)
from karb.exchanges.upbit import UpbitClient
from karb.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce, Venue
from karb.secrets import Credentials
from tests.conftest import load_json
from tests.exchanges_support import BASE, NONCE, bearer_claims, sent_json, sent_query, venue_config

VECTORS = {v["name"]: v for v in load_json("spec/auth_vectors.json")["upbit"]}
SAMPLES = load_json("spec/rest_samples.json")["upbit"]
ACCESS = VECTORS["accounts_no_params"]["access_key"]
SECRET = VECTORS["accounts_no_params"]["secret_key"]


@pytest.fixture
def client():
    c = UpbitClient(venue_config(), Credentials(ACCESS, SECRET), nonce_factory=lambda: NONCE)
    yield c
    c.close()


@pytest.fixture
def public_client():
    c = UpbitClient(venue_config(), None)
    yield c
    c.close()


def limit_request(**changes) -> OrderRequest:
    fields = dict(venue=Venue.UPBIT, market="KRW-BTC", side=Side.BUY, order_type=OrderType.LIMIT,
                  client_id="arb-20240101-000001", price=Decimal("100000000"),
                  volume=Decimal("0.010"))
    fields.update(changes)
    return OrderRequest(**fields)


# --- public -----------------------------------------------------------------------------------

@responses.activate
def test_get_markets_with_mixed_quotes_returns_krw_only(public_client):
    responses.get(f"{BASE}/v1/market/all", json=load_json("rest/upbit/market_all.json"))

    assert public_client.get_markets() == ["KRW-BTC", "KRW-ETH", "KRW-XRP"]


@responses.activate
def test_get_ticker_with_two_markets_returns_exact_last_prices(public_client):
    responses.get(f"{BASE}/v1/ticker", json=load_json("rest/upbit/ticker.json"))

    prices = public_client.get_ticker(["KRW-BTC", "KRW-XRP"])

    assert prices == {"KRW-BTC": Decimal("140000000.0"), "KRW-XRP": Decimal("3205.5")}
    assert sent_query(responses.calls[0]) == "markets=KRW-BTC,KRW-XRP"
    assert "Authorization" not in responses.calls[0].request.headers


@responses.activate
def test_get_orderbook_with_empty_levels_returns_sorted_float_view(public_client):
    responses.get(f"{BASE}/v1/orderbook", json=load_json("rest/upbit/orderbook.json"))

    view = public_client.get_orderbook("KRW-BTC")

    assert view.venue is Venue.UPBIT and view.market == "KRW-BTC"
    assert view.bids == ((140000000.0, 0.75), (139990000.0, 1.5))
    assert view.asks == ((140010000.0, 0.5), (140020000.0, 1.0))
    assert view.exch_ts_ms == 1704067200123 and view.recv_ns > 0 and view.valid


@responses.activate
def test_get_orderbook_with_crossed_snapshot_returns_invalid_view(public_client):
    book = load_json("rest/upbit/orderbook.json")
    book[0]["orderbook_units"][0]["bid_price"] = 140010000.0
    responses.get(f"{BASE}/v1/orderbook", json=book)

    assert public_client.get_orderbook("KRW-BTC").valid is False


@responses.activate
def test_get_market_info_with_keys_combines_tick_price_and_chance(client):
    responses.get(f"{BASE}/v1/orderbook/instruments", json=load_json("rest/upbit/instruments.json"))
    responses.get(f"{BASE}/v1/ticker", json=load_json("rest/upbit/ticker.json"))
    responses.get(f"{BASE}/v1/orders/chance", json=load_json("rest/upbit/chance.json"))

    infos = client.get_market_info(["KRW-BTC", "KRW-XRP"])

    btc, xrp = infos
    assert (btc.tick_size, btc.ref_price) == (Decimal("1000"), Decimal("140000000.0"))
    assert (btc.min_total, btc.taker_fee, btc.maker_fee) == (Decimal("5000"), Decimal("0.0005"),
                                                            Decimal("0.0002"))
    assert xrp.tick_size == Decimal("1")
    chance_calls = [c for c in responses.calls if "/orders/chance" in c.request.url]
    # one fee schedule for all KRW markets: one look-up, not one per market
    assert [sent_query(c) for c in chance_calls] == ["market=KRW-BTC"]
    assert (xrp.min_total, xrp.taker_fee, xrp.maker_fee) == (btc.min_total, btc.taker_fee, btc.maker_fee)


@responses.activate
def test_get_market_info_without_keys_skips_chance(public_client):
    responses.get(f"{BASE}/v1/orderbook/instruments", json=load_json("rest/upbit/instruments.json"))
    responses.get(f"{BASE}/v1/ticker", json=load_json("rest/upbit/ticker.json"))

    (btc,) = public_client.get_market_info(["KRW-BTC"])

    assert btc.tick_size == Decimal("1000") and btc.taker_fee is None and btc.min_total is None
    assert len(responses.calls) == 2


# --- private ----------------------------------------------------------------------------------

@responses.activate
def test_get_balances_with_sample_returns_free_and_locked(client):
    responses.get(f"{BASE}/v1/accounts", json=SAMPLES["GET /v1/accounts"]["body"])

    balances = client.get_balances()

    assert balances["KRW"].free == Decimal("1000000.0") and balances["BTC"].free == Decimal("0.01")
    header = responses.calls[0].request.headers["Authorization"]
    assert header == VECTORS["accounts_no_params"]["authorization_header"]


@responses.activate
def test_place_order_with_limit_sends_vector_body_and_signature(client):
    vector = VECTORS["create_limit_order_post_body"]
    responses.post(f"{BASE}/v1/orders", json=SAMPLES["POST /v1/orders (limit bid)"]["body"],
                   status=201)

    result = client.place_order(limit_request())

    call = responses.calls[0]
    assert list(sent_json(call).items()) == list(vector["json_body"].items())
    assert call.request.headers["Authorization"] == vector["authorization_header"]
    assert call.request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert result.order_id == "cdd92199-2897-4e14-9448-f923320408ad"
    assert result.status is OrderStatus.OPEN and result.client_id == "arb-20240101-000001"
    assert (result.price, result.volume) == (Decimal("100000000"), Decimal("0.01"))


@responses.activate
def test_place_order_with_market_buy_sends_funds_as_price(client):
    vector = VECTORS["create_market_buy_krw_amount"]
    body = dict(SAMPLES["POST /v1/orders (limit bid)"]["body"], ord_type="price", price="10000",
                volume=None)
    responses.post(f"{BASE}/v1/orders", json=body, status=201)
    request = limit_request(order_type=OrderType.MARKET_BUY, price=None, volume=None,
                            funds=Decimal("1E+4"))

    result = client.place_order(request)

    sent = sent_json(responses.calls[0])
    assert sent.pop("identifier") == request.client_id
    assert sent == vector["json_body"]
    assert result.order_type is OrderType.MARKET_BUY and result.volume is None


@responses.activate
def test_place_order_with_ioc_limit_sends_time_in_force_and_hash_of_body(client):
    responses.post(f"{BASE}/v1/orders", json=SAMPLES["POST /v1/orders (limit bid)"]["body"])

    client.place_order(limit_request(tif=TimeInForce.IOC, side=Side.SELL))

    call = responses.calls[0]
    expected = ("market=KRW-BTC&side=ask&volume=0.01&price=100000000&ord_type=limit"
                "&time_in_force=ioc&identifier=arb-20240101-000001")
    assert "&".join(f"{k}={v}" for k, v in sent_json(call).items()) == expected
    assert bearer_claims(call)["query_hash"] == hashlib.sha512(expected.encode()).hexdigest()


@responses.activate
def test_place_order_with_market_sell_sends_volume_only(client):
    body = dict(SAMPLES["POST /v1/orders (limit bid)"]["body"], ord_type="market", side="ask",
                price=None)
    responses.post(f"{BASE}/v1/orders", json=body)

    result = client.place_order(limit_request(order_type=OrderType.MARKET_SELL, side=Side.SELL,
                                              price=None))

    assert sent_json(responses.calls[0]) == {"market": "KRW-BTC", "side": "ask", "volume": "0.01",
                                             "ord_type": "market",
                                             "identifier": "arb-20240101-000001"}
    assert result.order_type is OrderType.MARKET_SELL


@pytest.mark.parametrize("changes", [
    {"price": None},
    {"volume": Decimal("0")},
    {"price": Decimal("-1")},
    {"order_type": OrderType.MARKET_BUY, "funds": None},
    {"order_type": OrderType.MARKET_SELL, "tif": TimeInForce.IOC},
    {"venue": Venue.BITHUMB},
])
@responses.activate
def test_place_order_with_bad_request_raises_invalid_order_without_sending(client, changes):
    with pytest.raises(InvalidOrder) as err:
        client.place_order(limit_request(**changes))

    assert err.value.code == "client_validation"
    assert len(responses.calls) == 0


@responses.activate
def test_get_order_with_client_id_returns_fills_from_trades(client):
    responses.get(f"{BASE}/v1/order", json=load_json("rest/upbit/order_done_with_trades.json"))

    result = client.get_order(client_id="arb-20240101-000002")

    assert sent_query(responses.calls[0]) == "identifier=arb-20240101-000002"
    assert result.status is OrderStatus.DONE and result.side is Side.SELL
    assert [f.volume for f in result.fills] == [Decimal("0.004"), Decimal("0.006")]
    assert sum(f.funds for f in result.fills) == result.executed_funds == Decimal("1400046")
    assert result.paid_fee == Decimal("700.023") and result.remaining_volume == 0


@responses.activate
def test_get_order_without_executed_funds_sums_the_trades(client):
    body = load_json("rest/upbit/order_done_with_trades.json")
    del body["executed_funds"], body["executed_volume"]
    responses.get(f"{BASE}/v1/order", json=body)

    result = client.get_order(order_id=body["uuid"])

    assert (result.executed_volume, result.executed_funds) == (Decimal("0.010"), Decimal("1400046"))
    assert result.avg_price == Decimal("140004600")


def test_get_order_with_both_ids_raises_value_error(client):
    with pytest.raises(ValueError):
        client.get_order(order_id="a", client_id="b")


@responses.activate
def test_cancel_order_with_uuid_sends_vector_query_and_signature(client):
    vector = VECTORS["cancel_order_delete"]
    body = dict(SAMPLES["POST /v1/orders (limit bid)"]["body"], uuid=vector["params_in_order"][0][1])
    responses.delete(f"{BASE}/v1/order", json=body)

    result = client.cancel_order(order_id=vector["params_in_order"][0][1])

    call = responses.calls[0]
    assert sent_query(call) == vector["string_to_hash"]
    assert call.request.headers["Authorization"] == vector["authorization_header"]
    assert result.status is OrderStatus.OPEN  # cancel pending: the venue still says wait


@responses.activate
def test_get_open_orders_with_two_pages_returns_all(client):
    order = SAMPLES["POST /v1/orders (limit bid)"]["body"]
    page1 = [dict(order, uuid=f"u-{i}") for i in range(100)]
    responses.get(f"{BASE}/v1/orders/open", json=page1,
                  match=[matchers.query_param_matcher({"market": "KRW-BTC", "states[]": ["wait", "watch"],
                                                       "page": "1", "limit": "100"})])
    responses.get(f"{BASE}/v1/orders/open", json=[dict(order, uuid="u-last", state="watch")],
                  match=[matchers.query_param_matcher({"market": "KRW-BTC", "states[]": ["wait", "watch"],
                                                       "page": "2", "limit": "100"})])

    orders = client.get_open_orders("KRW-BTC")

    assert len(orders) == 101 and orders[-1].order_id == "u-last"
    assert all(o.status is OrderStatus.OPEN for o in orders)
    assert sent_query(responses.calls[0]) == (
        "market=KRW-BTC&states%5B%5D=wait&states%5B%5D=watch&page=1&limit=100")


@pytest.mark.parametrize("call", [
    lambda c: c.get_balances(),
    lambda c: c.place_order(limit_request()),
    lambda c: c.get_order(order_id="x"),
    lambda c: c.cancel_order(order_id="x"),
    lambda c: c.get_open_orders(),
])
@responses.activate
def test_private_call_without_keys_raises_auth_error_without_sending(public_client, call):
    with pytest.raises(AuthError) as err:
        call(public_client)

    assert err.value.code == "no_credentials" and "public-only" in str(err.value)
    assert len(responses.calls) == 0


# --- venue details (issue 13), bodies from docs.upbit.com/kr/reference/new-order ---------------

# The documented 201 example of POST /v1/orders: the order is accepted ("wait", no trades yet);
# fills show later on GET /v1/order.
DOCS_PLACEMENT = {
    "market": "KRW-BTC", "uuid": "cdd92199-2897-4e14-9448-f923320408ad", "side": "ask",
    "ord_type": "limit", "price": "140000000", "state": "wait", "created_at": "2025-07-04T15:00:00+09:00",
    "volume": "1.0", "remaining_volume": "1.0", "reserved_fee": "70000.0", "remaining_fee": "70000.0",
    "paid_fee": "0.0", "locked": "0.0", "executed_volume": "0.0", "prevented_volume": "0",
    "prevented_locked": "0", "trades_count": 0,
}


@responses.activate
def test_place_order_with_the_docs_wait_answer_returns_an_acknowledged_open_order(client):
    responses.post(f"{BASE}/v1/orders", json=DOCS_PLACEMENT, status=201)

    result = client.place_order(limit_request(side=Side.SELL, price=Decimal("140000000"),
                                              volume=Decimal("1.0"), tif=TimeInForce.IOC))

    assert result.status is OrderStatus.OPEN and result.executed_volume == 0 and result.fills == ()
    assert result.order_id == "cdd92199-2897-4e14-9448-f923320408ad" and not result.is_final


@responses.activate
def test_cancelled_order_reads_executed_volume_not_volume_minus_remaining(client):
    # a cancelled order keeps its unfilled remaining_volume (as the venue shows it)
    body = dict(DOCS_PLACEMENT, state="cancel", volume="1.0", remaining_volume="0.6",
                executed_volume="0.4", trades_count=1)
    responses.get(f"{BASE}/v1/order", json=body)

    result = client.get_order(order_id=body["uuid"])

    assert result.status is OrderStatus.CANCELLED
    assert result.executed_volume == Decimal("0.4") and result.remaining_volume == Decimal("0.6")


@pytest.mark.parametrize("status,name,message,expected", [
    (400, "notfoundmarket", "다음 마켓에 없는 종목입니다: KRW-BTCs", InvalidOrder),
    (400, "over_krw_funds_bid", "최대 주문 가능 금액 1000000000 KRW 보다 작은 주문을 입력해 주세요.", InvalidOrder),
    (400, "over_krw_funds_ask", "최대 주문 가능 금액 1000000000 KRW 보다 작은 주문을 입력해 주세요.", InvalidOrder),
    (400, "invalid_parameter", "잘못된 파라미터", InvalidOrder),
    (400, "invalid_time_in_force", "주문조건을 다시 확인해 주세요.", InvalidOrder),
    (400, "insufficient_funds_bid", "주문 가능한 금액(KRW)이 부족합니다.", InsufficientFunds),
    (403, "market_offline", "시스템 점검 중입니다. 점검이 완료된 후에 다시 시도해주세요.", VenueUnavailable),
])
@responses.activate
def test_place_order_with_documented_error_raises_typed_error_not_placed(client, status, name, message,
                                                                         expected):
    responses.post(f"{BASE}/v1/orders", json={"error": {"name": name, "message": message}}, status=status)

    with pytest.raises(expected) as err:
        client.place_order(limit_request())

    # typed as "not placed" (market_offline is maintenance, not a key problem nor "unknown")
    assert (err.value.code, err.value.status, err.value.venue_message) == (name, status, message)


@responses.activate
def test_plain_text_429_maps_to_rate_limited_without_a_parse_error():
    # Upbit's 429 body is the plain text "Too many API requests." (docs.upbit.com rate-limits)
    c = UpbitClient(venue_config(retry_reads=0), None)
    responses.get(f"{BASE}/v1/ticker", body="Too many API requests.", status=429,
                  content_type="text/plain")

    with pytest.raises(RateLimited) as err:
        c.get_ticker(["KRW-BTC"])

    assert err.value.status == 429 and err.value.venue_message == "Too many API requests."
    c.close()
