"""BithumbClient (API 2.0) against constructed and spec payloads served by ``responses``."""
from __future__ import annotations

from decimal import Decimal

import pytest
import responses

from karb.exchanges.bithumb import BithumbClient
from karb.exchanges.errors import (
    AuthError, InvalidOrder, OrderNotFound, OrderNotReady, OrderStateUnknown, UnknownVenueError,
)
from karb.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce, Venue
from karb.secrets import Credentials
from tests.conftest import load_json
from tests.exchanges_support import BASE, NONCE, bearer_claims, sent_json, sent_query, venue_config

VECTORS = {v["name"]: v for v in load_json("spec/auth_vectors.json")["bithumb_v2_jwt"]}
SAMPLES = load_json("spec/rest_samples.json")["bithumb_v2"]
TIMESTAMP = VECTORS["accounts_no_params"]["timestamp"]
KEYS = Credentials(VECTORS["accounts_no_params"]["access_key"],
                   VECTORS["accounts_no_params"]["secret_key"])


@pytest.fixture
def client():
    c = BithumbClient(venue_config(), KEYS, nonce_factory=lambda: NONCE, clock_ms=lambda: TIMESTAMP)
    yield c
    c.close()


def request(**changes) -> OrderRequest:
    fields = dict(venue=Venue.BITHUMB, market="KRW-BTC", side=Side.BUY, order_type=OrderType.LIMIT,
                  client_id="arb-bt-000001", price=Decimal("100000000"), volume=Decimal("0.01"))
    fields.update(changes)
    return OrderRequest(**fields)


@responses.activate
def test_get_markets_with_v1_market_all_returns_krw_markets():
    responses.get(f"{BASE}/v1/market/all", json=load_json("rest/upbit/market_all.json"))

    assert BithumbClient(venue_config()).get_markets() == ["KRW-BTC", "KRW-ETH", "KRW-XRP"]


@responses.activate
def test_get_ticker_with_one_market_returns_decimal_price():
    responses.get(f"{BASE}/v1/ticker", json=load_json("rest/upbit/ticker.json")[:1])

    assert BithumbClient(venue_config()).get_ticker(["KRW-BTC"]) == {"KRW-BTC": Decimal("140000000.0")}


@responses.activate
def test_get_orderbook_with_microsecond_timestamp_returns_ms():
    responses.get(f"{BASE}/v1/orderbook", json=load_json("rest/bithumb/orderbook_us_timestamp.json"))

    view = BithumbClient(venue_config()).get_orderbook("KRW-BTC")

    assert view.venue is Venue.BITHUMB and view.exch_ts_ms == 1704067200123
    assert view.bids[0] == (140000000.0, 0.6) and view.asks[0] == (140050000.0, 0.4)
    assert sent_query(responses.calls[0]) == "markets=KRW-BTC"


@responses.activate
def test_get_market_info_with_keys_reads_chance(client):
    responses.get(f"{BASE}/v1/orders/chance", json=load_json("rest/bithumb/chance.json"))

    (info,) = client.get_market_info(["KRW-BTC"])

    assert (info.taker_fee, info.maker_fee, info.min_total) == (Decimal("0.0004"), Decimal("0.0004"),
                                                                Decimal("5000"))
    assert info.tick_size is None
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {VECTORS['order_chance']['jwt']}"


@responses.activate
def test_get_market_info_for_many_markets_reads_the_accounts_fee_once(client):
    responses.get(f"{BASE}/v1/orders/chance", json=load_json("rest/bithumb/chance.json"))

    infos = client.get_market_info(["KRW-BTC", "KRW-ETH", "KRW-XRP"])

    assert [i.market for i in infos] == ["KRW-BTC", "KRW-ETH", "KRW-XRP"]
    assert {(i.taker_fee, i.min_total) for i in infos} == {(Decimal("0.0004"), Decimal("5000"))}
    assert len(responses.calls) == 1 and "market=KRW-BTC" in responses.calls[0].request.url


@responses.activate
def test_get_market_fees_reads_that_markets_own_answer(client):
    responses.get(f"{BASE}/v1/orders/chance", json=load_json("rest/bithumb/chance.json"))

    info = client.get_market_fees("KRW-ETH")

    assert (info.market, info.taker_fee) == ("KRW-ETH", Decimal("0.0004"))
    assert "market=KRW-ETH" in responses.calls[0].request.url


def test_get_market_info_without_keys_returns_empty_infos():
    infos = BithumbClient(venue_config()).get_market_info(["KRW-BTC", "KRW-ETH"])

    assert [i.market for i in infos] == ["KRW-BTC", "KRW-ETH"] and infos[0].taker_fee is None


@responses.activate
def test_get_balances_with_ccxt_sample_returns_krw(client):
    responses.get(f"{BASE}/v1/accounts", json=SAMPLES["GET /v1/accounts"]["body"])

    balances = client.get_balances()

    assert balances["KRW"].free == Decimal("51026")
    jwt = VECTORS["accounts_no_params"]["jwt"]
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {jwt}"


@responses.activate
def test_place_order_with_limit_posts_v2_body_and_returns_ack(client):
    responses.post(f"{BASE}/v2/orders", json=SAMPLES["POST /v2/orders"]["body"], status=201)

    result = client.place_order(request())

    call = responses.calls[0]
    assert list(sent_json(call).items()) == [("market", "KRW-BTC"), ("side", "bid"), ("volume", "0.01"),
                                             ("price", "100000000"), ("order_type", "limit"),
                                             ("client_order_id", "arb-bt-000001")]
    assert bearer_claims(call)["timestamp"] == TIMESTAMP
    assert result.order_id == "C0101000003152350309" and result.status is OrderStatus.OPEN
    assert result.executed_volume == 0 and result.remaining_volume == Decimal("0.01")
    assert result.client_id == "arb-bt-000001"


@responses.activate
def test_place_order_with_ioc_sends_time_in_force(client):
    responses.post(f"{BASE}/v2/orders", json=SAMPLES["POST /v2/orders"]["body"])

    client.place_order(request(tif=TimeInForce.IOC))

    assert sent_json(responses.calls[0])["time_in_force"] == "ioc"


@responses.activate
def test_place_order_with_market_buy_sends_price_as_krw_total(client):
    responses.post(f"{BASE}/v2/orders", json=dict(SAMPLES["POST /v2/orders"]["body"], order_type="price"))

    result = client.place_order(request(order_type=OrderType.MARKET_BUY, price=None, volume=None,
                                        funds=Decimal("50000.00")))

    assert sent_json(responses.calls[0]) == {"market": "KRW-BTC", "side": "bid", "price": "50000",
                                             "order_type": "price", "client_order_id": "arb-bt-000001"}
    assert result.price == Decimal("50000.00") and result.volume is None


@responses.activate
def test_place_order_with_unreadable_ack_raises_state_unknown(client):
    responses.post(f"{BASE}/v2/orders", json={"unexpected": True})

    with pytest.raises(OrderStateUnknown) as err:
        client.place_order(request())

    assert err.value.client_id == "arb-bt-000001"


def test_place_order_with_upbit_request_raises_invalid_order(client):
    with pytest.raises(InvalidOrder):
        client.place_order(request(venue=Venue.UPBIT))


@responses.activate
def test_get_order_with_client_id_uses_client_order_id_and_reads_trades(client):
    responses.get(f"{BASE}/v1/order", json=load_json("rest/bithumb/order_done_with_trades.json"))

    result = client.get_order(client_id="arb-bt-000001")

    assert sent_query(responses.calls[0]) == "client_order_id=arb-bt-000001"
    assert result.status is OrderStatus.DONE and result.client_id == "arb-bt-000001"
    assert result.fills[0].price == Decimal("139990000") and result.executed_funds == Decimal("139990")


@responses.activate
def test_get_order_with_ccxt_sample_returns_open_order(client):
    responses.get(f"{BASE}/v1/order", json=SAMPLES["GET /v1/order"]["body"])

    result = client.get_order(order_id="C0101000003152406454")

    assert sent_query(responses.calls[0]) == "uuid=C0101000003152406454"
    assert result.status is OrderStatus.OPEN and result.fills == ()
    assert result.remaining_volume == Decimal("0.001")


@responses.activate
def test_cancel_order_with_order_id_deletes_then_reads_back(client):
    vector = VECTORS["cancel_order_v2"]
    responses.delete(f"{BASE}/v2/order", json=SAMPLES["DELETE /v2/order"]["body"])
    cancelled = dict(SAMPLES["GET /v1/order"]["body"], uuid="C0101000003152350309", state="cancel")
    responses.get(f"{BASE}/v1/order", json=cancelled)

    result = client.cancel_order(order_id="C0101000003152350309")

    delete_call, get_call = responses.calls
    assert sent_query(delete_call) == vector["string_to_hash"]
    assert delete_call.request.headers["Authorization"] == f"Bearer {vector['jwt']}"
    assert sent_query(get_call) == "uuid=C0101000003152350309"
    assert result.status is OrderStatus.CANCELLED


@responses.activate
def test_cancel_order_with_client_id_sends_client_order_id(client):
    responses.delete(f"{BASE}/v2/order", json=SAMPLES["DELETE /v2/order"]["body"])
    responses.get(f"{BASE}/v1/order", json=SAMPLES["GET /v1/order"]["body"])

    client.cancel_order(client_id="arb-bt-000001")

    assert sent_query(responses.calls[0]) == "client_order_id=arb-bt-000001"


@responses.activate
def test_get_open_orders_with_bare_list_answer_reads_one_page(client):
    order = SAMPLES["GET /v1/order"]["body"]
    responses.get(f"{BASE}/v2/orders/pending", json=[order, dict(order, uuid="C2", state="watch")])

    orders = client.get_open_orders("KRW-BTC")

    assert sent_query(responses.calls[0]) == "market=KRW-BTC&limit=100"
    assert [o.order_id for o in orders] == ["C0101000003152406454", "C2"]


# Cursor pages as documented for the 2026-07-09 update (apidocs.bithumb.com changelog
# "[업데이트] 주문 조회 기능 고도화 및 성능 개선": GET /v2/orders/pending, <= 100 per page, next_key
# cursor) with the page fields of the v2.1.5 list reference (has_next, next_key; request
# parameters next_key and limit). The list's key "orders" is [U]; the order objects are the
# ccxt sample of GET /v1/order.
def _page(ids, next_key=None):
    order = SAMPLES["GET /v1/order"]["body"]
    return {"orders": [dict(order, uuid=i) for i in ids], "has_next": next_key is not None,
            "next_key": next_key}


@responses.activate
def test_get_open_orders_with_cursor_pages_follows_next_key_to_the_end(client):
    url = f"{BASE}/v2/orders/pending"
    responses.get(url, json=_page(["C1", "C2"], "k1"),
                  match=[responses.matchers.query_string_matcher("market=KRW-BTC&limit=100")])
    responses.get(url, json=_page(["C3", "C4"], "k2"),
                  match=[responses.matchers.query_string_matcher("market=KRW-BTC&limit=100&next_key=k1")])
    responses.get(url, json=_page(["C5"]),
                  match=[responses.matchers.query_string_matcher("market=KRW-BTC&limit=100&next_key=k2")])

    orders = client.get_open_orders("KRW-BTC")

    assert [o.order_id for o in orders] == ["C1", "C2", "C3", "C4", "C5"]
    assert len(responses.calls) == 3


@responses.activate
def test_get_open_orders_with_repeating_cursor_raises_instead_of_looping(client):
    responses.get(f"{BASE}/v2/orders/pending", json=_page(["C1"], "same"))

    with pytest.raises(UnknownVenueError) as err:
        client.get_open_orders()

    assert err.value.code == "bad_cursor" and len(responses.calls) == 2


@pytest.mark.parametrize("body", [
    {"has_next": False},  # no list at all
    {"orders": [], "next_key": None},  # no has_next
    {"orders": [], "has_next": True, "next_key": ""},  # more pages, but no cursor
    {"orders": [], "data": [], "has_next": False},  # two candidate lists
    "[]",  # a string
])
@responses.activate
def test_get_open_orders_with_page_not_understood_raises_typed_error(client, body):
    responses.get(f"{BASE}/v2/orders/pending", json=body)

    with pytest.raises(UnknownVenueError) as err:
        client.get_open_orders()

    assert err.value.code == "bad_body"


# 422 order_not_ready: apidocs.bithumb.com v2.1.5 "API 주요 에러 코드" (422 UNPROCESSABLE_ENTITY).
NOT_READY = {"error": {"name": "order_not_ready", "message": "주문 접수 처리 중입니다. 잠시 후 다시 시도해주세요."}}


@responses.activate
def test_get_order_with_order_not_ready_raises_typed_retryable_error_after_the_bound():
    pauses = []
    c = BithumbClient(venue_config(), KEYS, nonce_factory=lambda: NONCE, clock_ms=lambda: TIMESTAMP,
                      sleep=pauses.append)
    c.NOT_READY_WAIT_S = 0.0
    responses.get(f"{BASE}/v1/order", json=NOT_READY, status=422)

    with pytest.raises(OrderNotReady) as err:
        c.get_order(order_id="C0101000003152350309")

    assert (err.value.code, err.value.status, err.value.retryable) == ("order_not_ready", 422, True)
    assert err.value.venue_message.startswith("주문 접수 처리 중")
    assert not isinstance(err.value, OrderNotFound)
    c.close()


@responses.activate
def test_cancel_order_with_read_back_not_ready_retries_and_reports_the_cancel(client):
    responses.delete(f"{BASE}/v2/order", json=SAMPLES["DELETE /v2/order"]["body"])
    cancelled = dict(SAMPLES["GET /v1/order"]["body"], uuid="C0101000003152350309", state="cancel")
    responses.get(f"{BASE}/v1/order", json=NOT_READY, status=422)
    responses.get(f"{BASE}/v1/order", json=NOT_READY, status=422)
    responses.get(f"{BASE}/v1/order", json=cancelled)

    result = client.cancel_order(order_id="C0101000003152350309")

    assert result.status is OrderStatus.CANCELLED
    assert [c.request.method for c in responses.calls] == ["DELETE", "GET", "GET", "GET"]


@pytest.mark.parametrize("status,name,expected", [
    (400, "invalid_parameter", InvalidOrder),
    (400, "invalid_price_bid", InvalidOrder),
    (400, "under_price_limit_ask", InvalidOrder),
    (400, "cross_trading", InvalidOrder),
    (400, "currency does not have a valid value", InvalidOrder),
    (400, "bank_account_required", AuthError),
    (401, "expired_jwt", AuthError),
    (401, "NotAllowIP", AuthError),
    (403, "blocked_member_id", AuthError),
    (404, "order_not_found", OrderNotFound),
    (422, "order_not_ready", OrderNotReady),
])
@responses.activate
def test_bithumb_documented_error_names_map_to_typed_errors(client, status, name, expected):
    # apidocs.bithumb.com v2.1.5 "API 주요 에러 코드": every name of Bithumb's own table
    responses.get(f"{BASE}/v1/accounts", json={"error": {"name": name, "message": "m"}}, status=status)
    client.NOT_READY_WAIT_S = 0.0

    with pytest.raises(expected) as err:
        client.get_balances()

    assert err.value.code == name and err.value.status == status


@responses.activate
def test_get_open_orders_with_unexpected_shape_raises_unknown_venue_error(client):
    responses.get(f"{BASE}/v2/orders/pending", json={"orders": "nope"})

    with pytest.raises(UnknownVenueError) as err:
        client.get_open_orders()

    assert err.value.code == "bad_body"
