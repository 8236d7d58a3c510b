"""BithumbLegacyClient: HMAC form POSTs, status envelopes, client-id map, IOC emulation."""
from __future__ import annotations

from decimal import Decimal
from urllib.parse import parse_qsl

import pytest
import requests
import responses

from karb.exchanges.bithumb import BithumbLegacyClient
from karb.exchanges.errors import (
    AuthError, InsufficientFunds, InvalidOrder, OrderNotFound, OrderStateUnknown, RateLimited,
    UnknownVenueError, VenueUnavailable,
)
from karb.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce, Venue
from karb.secrets import Credentials
from tests.conftest import load_json
from tests.exchanges_support import BASE, venue_config

VECTOR = {v["name"]: v for v in load_json("spec/auth_vectors.json")["bithumb_legacy_hmac"]}[
    "trade_place_ccxt_order"]
SAMPLES = load_json("spec/rest_samples.json")["bithumb_legacy"]
PLACED_ID = SAMPLES["POST /trade/place"]["body"]["order_id"]
NOT_FOUND = {"status": "5600", "message": "거래 진행중인 내역이 존재하지 않습니다."}


def fixture(name: str):
    return load_json(f"rest/bithumb_legacy/{name}.json")


def make_client(keys: bool = True, retry_reads: int = 3, now: float = 1_700_000_000.0):
    creds = Credentials(VECTOR["api_key"], VECTOR["secret_key"]) if keys else None
    return BithumbLegacyClient(venue_config(api="legacy", retry_reads=retry_reads), creds,
                               markets=["KRW-BTC", "KRW-ETH"], sleep=lambda s: None,
                               nonce_factory=lambda: VECTOR["nonce_ms"], clock=lambda: now)


@pytest.fixture
def client():
    c = make_client()
    yield c
    c.close()


def form(call) -> dict:
    return dict(parse_qsl(call.request.body.decode()))


def limit(**changes) -> OrderRequest:
    fields = dict(venue=Venue.BITHUMB, market="KRW-BTC", side=Side.BUY, order_type=OrderType.LIMIT,
                  client_id="leg-1", price=Decimal("50000000"), volume=Decimal("0.001"))
    fields.update(changes)
    return OrderRequest(**fields)


def detail(**changes) -> dict:
    body = fixture("order_detail_completed")
    body["data"].update(changes)
    return body


# --- public -----------------------------------------------------------------------------------

@responses.activate
def test_get_markets_and_ticker_with_all_krw_return_krw_markets():
    responses.get(f"{BASE}/public/ticker/ALL_KRW", json=fixture("ticker_all_krw"))
    c = make_client(keys=False)

    assert c.get_markets() == ["KRW-BTC", "KRW-ETH"]
    assert c.get_ticker(["KRW-ETH", "KRW-NOPE"]) == {"KRW-ETH": Decimal("5200000")}


@responses.activate
def test_get_orderbook_with_legacy_symbol_returns_sorted_view():
    responses.get(f"{BASE}/public/orderbook/BTC_KRW", json=fixture("orderbook_btc"))

    view = make_client(keys=False).get_orderbook("KRW-BTC")

    assert responses.calls[0].request.url.endswith("/public/orderbook/BTC_KRW?count=30")
    assert view.bids == ((140000000.0, 0.75), (139990000.0, 1.5))
    assert view.asks == ((140010000.0, 0.5), (140030000.0, 1.0))
    assert view.exch_ts_ms == 1704067200123 and view.valid


@responses.activate
def test_get_market_info_for_many_markets_reads_the_accounts_fee_once(client):
    responses.post(f"{BASE}/info/account", json=fixture("account_btc"))

    infos = client.get_market_info(["KRW-BTC", "KRW-ETH"])

    assert [(i.market, i.taker_fee) for i in infos] == [("KRW-BTC", Decimal("0.0025")),
                                                         ("KRW-ETH", Decimal("0.0025"))]
    assert len(responses.calls) == 1


@responses.activate
def test_get_market_info_with_keys_reads_trade_fee(client):
    responses.post(f"{BASE}/info/account", json=fixture("account_btc"))

    (info,) = client.get_market_info(["KRW-BTC"])

    assert info.taker_fee == info.maker_fee == Decimal("0.0025")
    assert form(responses.calls[0]) == {"endpoint": "/info/account", "order_currency": "BTC",
                                        "payment_currency": "KRW"}


def test_get_market_info_without_keys_returns_empty_infos():
    assert make_client(keys=False).get_market_info(["KRW-BTC"])[0].taker_fee is None


# --- account ----------------------------------------------------------------------------------

@responses.activate
def test_get_balances_with_all_returns_available_and_in_use(client):
    responses.post(f"{BASE}/info/balance", json=fixture("balance_all"))

    balances = client.get_balances()

    assert balances["KRW"].free == Decimal("750000") and balances["KRW"].locked == Decimal("250000")
    assert balances["BTC"].total == Decimal("0.01") and "XCOIN_LAST_BTC" not in balances
    request = responses.calls[0].request
    assert request.body == b"endpoint=%2Finfo%2Fbalance&currency=ALL"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["Api-Nonce"] == VECTOR["nonce_ms"]


@pytest.mark.parametrize("call", [lambda c: c.get_balances(), lambda c: c.place_order(limit()),
                                  lambda c: c.get_open_orders("KRW-BTC")])
@responses.activate
def test_private_call_without_keys_raises_auth_error(call):
    with pytest.raises(AuthError) as err:
        call(make_client(keys=False))

    assert err.value.code == "no_credentials" and len(responses.calls) == 0


# --- orders -----------------------------------------------------------------------------------

@responses.activate
def test_place_order_with_limit_sends_vector_body_and_signature(client):
    responses.post(f"{BASE}/trade/place", json=SAMPLES["POST /trade/place"]["body"])

    result = client.place_order(limit())

    request = responses.calls[0].request
    assert request.body == VECTOR["form_body"].encode()
    assert request.headers["Api-Sign"] == VECTOR["api_sign"]
    assert (result.order_id, result.status, result.client_id) == (PLACED_ID, OrderStatus.OPEN, "leg-1")


@responses.activate
def test_get_order_after_ack_uses_the_client_id_map(client):
    responses.post(f"{BASE}/trade/place", json=SAMPLES["POST /trade/place"]["body"])
    responses.post(f"{BASE}/info/order_detail", json=detail(type="bid"))
    client.place_order(limit())

    result = client.get_order(client_id="leg-1")

    assert form(responses.calls[1]) == {"endpoint": "/info/order_detail", "order_id": PLACED_ID,
                                        "order_currency": "BTC", "payment_currency": "KRW"}
    assert result.status is OrderStatus.DONE and result.client_id == "leg-1"
    assert result.executed_volume == Decimal("0.010") and result.executed_funds == Decimal("1400040")
    assert result.paid_fee == Decimal("3500.1") and result.remaining_volume == 0


@responses.activate
def test_order_detail_with_coin_fee_converts_fee_to_krw(client):
    body = detail(order_status="Pending")
    body["data"]["contract"] = [{"transaction_date": "1", "price": "140000000", "units": "0.004",
                                 "fee_currency": "BTC", "fee": "0.00001", "total": "560000"}]
    responses.post(f"{BASE}/info/order_detail", json=body)

    result = client.get_order(order_id="C1")

    assert result.paid_fee == Decimal("1400.00000") and result.status is OrderStatus.OPEN
    assert result.remaining_volume == Decimal("0.006")


@responses.activate
def test_place_order_with_ioc_cancels_remainder_and_returns_final_state(client):
    responses.post(f"{BASE}/trade/place", json=SAMPLES["POST /trade/place"]["body"])
    responses.post(f"{BASE}/trade/cancel", json={"status": "0000"})
    responses.post(f"{BASE}/info/order_detail", json=detail(type="bid", order_status="Cancel"))

    result = client.place_order(limit(tif=TimeInForce.IOC))

    paths = [c.request.path_url for c in responses.calls]
    assert paths == ["/trade/place", "/trade/cancel", "/info/order_detail"]
    assert form(responses.calls[1]) == {"endpoint": "/trade/cancel", "order_id": PLACED_ID,
                                        "type": "bid", "order_currency": "BTC",
                                        "payment_currency": "KRW"}
    assert result.status is OrderStatus.CANCELLED and result.client_id == "leg-1"


@responses.activate
def test_place_order_with_ioc_fully_filled_skips_missing_remainder(client):
    responses.post(f"{BASE}/trade/place", json=SAMPLES["POST /trade/place"]["body"])
    responses.post(f"{BASE}/trade/cancel", json=NOT_FOUND)
    responses.post(f"{BASE}/info/order_detail", json=detail(type="bid"))

    result = client.place_order(limit(tif=TimeInForce.IOC))

    assert result.status is OrderStatus.DONE


@responses.activate
def test_place_order_with_ioc_cancel_timeout_raises_state_unknown_and_keeps_map(client):
    responses.post(f"{BASE}/trade/place", json=SAMPLES["POST /trade/place"]["body"])
    responses.post(f"{BASE}/trade/cancel", body=requests.exceptions.ReadTimeout("slow"))
    responses.post(f"{BASE}/info/order_detail", json=detail(type="bid", order_status="Pending"))

    with pytest.raises(OrderStateUnknown) as err:
        client.place_order(limit(tif=TimeInForce.IOC))

    assert err.value.client_id == "leg-1"
    assert client.get_order(client_id="leg-1").order_id == PLACED_ID


@pytest.mark.parametrize("changes", [
    {"tif": TimeInForce.FOK},
    {"order_type": OrderType.MARKET_BUY, "price": None, "volume": None, "funds": Decimal("10000")},
    {"order_type": OrderType.MARKET_SELL, "tif": TimeInForce.IOC},
    {"price": None},
    {"venue": Venue.UPBIT},
])
@responses.activate
def test_place_order_with_unsupported_request_raises_invalid_order_without_sending(client, changes):
    with pytest.raises(InvalidOrder):
        client.place_order(limit(**changes))

    assert len(responses.calls) == 0


@pytest.mark.parametrize("order_type, path", [(OrderType.MARKET_BUY, "/trade/market_buy"),
                                              (OrderType.MARKET_SELL, "/trade/market_sell")])
@responses.activate
def test_place_order_with_market_type_sends_units(client, order_type, path):
    responses.post(f"{BASE}{path}", json={"status": "0000", "order_id": "C9"})

    result = client.place_order(limit(order_type=order_type, price=None, funds=Decimal("1")))

    assert form(responses.calls[0]) == {"endpoint": path, "order_currency": "BTC",
                                        "payment_currency": "KRW", "units": "0.001"}
    assert result.order_id == "C9"


@responses.activate
def test_place_order_with_reused_client_id_raises_invalid_order(client):
    responses.post(f"{BASE}/trade/place", json=SAMPLES["POST /trade/place"]["body"])
    client.place_order(limit())

    with pytest.raises(InvalidOrder):
        client.place_order(limit())

    assert len(responses.calls) == 1


@responses.activate
def test_timed_out_placement_found_by_side_price_units_in_open_orders(client):
    responses.post(f"{BASE}/trade/place", body=requests.exceptions.ReadTimeout("slow"))
    open_orders = fixture("orders_open")
    open_orders["data"][0].update(order_id="C777", price="50000000", units="0.001",
                                  units_remaining="0.001")
    open_orders["data"].append(dict(open_orders["data"][0], order_id="C778", type="ask"))
    responses.post(f"{BASE}/info/orders", json=open_orders)
    responses.post(f"{BASE}/info/order_detail", json=detail(type="bid", order_status="Pending"))
    with pytest.raises(OrderStateUnknown):
        client.place_order(limit())

    result = client.get_order(client_id="leg-1")

    search = form(responses.calls[1])
    assert search["after"] == str((1_700_000_000 - 5) * 1000) and search["order_currency"] == "BTC"
    assert result.order_id == "C777" and result.client_id == "leg-1"
    assert form(responses.calls[2])["order_id"] == "C777"


@responses.activate
def test_timed_out_placement_without_match_stays_unknown(client):
    responses.post(f"{BASE}/trade/place", body=requests.exceptions.ReadTimeout("slow"))
    responses.post(f"{BASE}/info/orders", json=NOT_FOUND)
    with pytest.raises(OrderStateUnknown):
        client.place_order(limit())

    with pytest.raises(OrderStateUnknown):
        client.get_order(client_id="leg-1")


def test_get_order_with_unknown_client_id_raises_not_found_without_sending(client):
    with pytest.raises(OrderNotFound):
        client.get_order(client_id="never-sent")


@responses.activate
def test_get_order_with_foreign_order_id_searches_configured_markets(client):
    responses.post(f"{BASE}/info/order_detail", json=NOT_FOUND)
    responses.post(f"{BASE}/info/order_detail", json=detail(order_currency="ETH"))

    result = client.get_order(order_id="C5")

    assert [form(c)["order_currency"] for c in responses.calls] == ["BTC", "ETH"]
    assert result.market == "KRW-ETH"


@responses.activate
def test_cancel_order_with_client_id_cancels_and_reads_back(client):
    responses.post(f"{BASE}/trade/place", json=SAMPLES["POST /trade/place"]["body"])
    responses.post(f"{BASE}/trade/cancel", json={"status": "0000"})
    responses.post(f"{BASE}/info/order_detail", json=detail(type="bid", order_status="Cancel"))
    client.place_order(limit())

    result = client.cancel_order(client_id="leg-1")

    assert form(responses.calls[1])["order_id"] == PLACED_ID
    assert result.status is OrderStatus.CANCELLED


@responses.activate
def test_cancel_order_with_foreign_order_id_looks_up_side_first(client):
    responses.post(f"{BASE}/info/order_detail", json=detail(order_status="Pending"))
    responses.post(f"{BASE}/trade/cancel", json={"status": "0000"})

    client.cancel_order(order_id="C5")

    assert form(responses.calls[1])["type"] == "ask"


@responses.activate
def test_get_open_orders_without_market_searches_configured_markets(client):
    responses.post(f"{BASE}/info/orders", json=fixture("orders_open"))
    responses.post(f"{BASE}/info/orders", json=NOT_FOUND)

    orders = client.get_open_orders()

    assert [form(c)["order_currency"] for c in responses.calls] == ["BTC", "ETH"]
    (order,) = orders
    assert order.market == "KRW-BTC" and order.executed_volume == Decimal("0.006")
    assert order.remaining_volume == Decimal("0.004") and order.status is OrderStatus.OPEN


@pytest.mark.parametrize("body, expected", [
    (SAMPLES["error"]["body"], InvalidOrder),
    ({"status": "5200", "message": "Not Member"}, AuthError),
    ({"status": "5300", "message": "Invalid Apikey"}, AuthError),
    ({"status": "5302", "message": "Method Not Allowed"}, InvalidOrder),
    ({"status": "5400", "message": "Database Fail"}, VenueUnavailable),
    ({"status": "5500", "message": "Invalid Parameter"}, InvalidOrder),
    ({"status": "5600", "message": "주문량이 사용가능 BTC을 초과하였습니다."}, InsufficientFunds),
    ({"status": "5600", "message": "잔액이 부족합니다."}, InsufficientFunds),
    ({"status": "5600", "message": "최소 주문금액은 500 KRW 입니다."}, InvalidOrder),
    ({"status": "5600", "message": "점검 중입니다."}, VenueUnavailable),
    (NOT_FOUND, OrderNotFound),
    ({"status": "5600", "message": "주문을 찾지 못했습니다."}, OrderNotFound),
    ({"status": "5600", "message": "이미 체결되었거나 취소된 주문입니다."}, OrderNotFound),
    ({"status": "5600", "message": "order value below 5000 KRW"}, InvalidOrder),
    ({"status": "5600", "message": "CUSTOM NOTICE"}, UnknownVenueError),
    ({"status": "5900", "message": "Unknown Error"}, UnknownVenueError),
])
@responses.activate
def test_legacy_status_with_code_and_message_maps_to_typed_error(body, expected):
    responses.post(f"{BASE}/info/balance", json=body)

    with pytest.raises(expected) as err:
        make_client(retry_reads=0).get_balances()

    assert err.value.code == body["status"] and err.value.venue_message == body["message"]


@responses.activate
def test_legacy_http_429_maps_to_rate_limited():
    responses.post(f"{BASE}/info/balance", status=429, body="Too Many Requests")

    with pytest.raises(RateLimited):
        make_client(retry_reads=0).get_balances()


@responses.activate
def test_legacy_answer_without_data_raises_unknown_venue_error(client):
    responses.post(f"{BASE}/info/balance", json={"status": "0000"})

    with pytest.raises(UnknownVenueError):
        client.get_balances()
