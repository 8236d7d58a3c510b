"""The sim's REST servers through the project's own clients and through raw spec-built requests."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import time
import uuid
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import requests

from karb.config import load_config
from karb.exchanges.errors import (
    AuthError, InsufficientFunds, InvalidOrder, OrderStateUnknown, RateLimited, VenueUnavailable,
)
from karb.exchanges.factory import make_client
from karb.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce, Venue
from karb.secrets import Credentials
from karb.sim.cluster import SimCluster
from tests.conftest import load_json, wait_until

SIM_YAML = Path(__file__).resolve().parent.parent / "config" / "sim.yaml"
D = Decimal


@pytest.fixture(scope="module")
def cluster():
    config = load_config(SIM_YAML)
    with SimCluster.from_config(config) as running:
        wait_until(lambda: running.market_stats().published > 50, 5, message="first books")
        yield running


@pytest.fixture(autouse=True)
def _clear_faults(cluster):
    yield
    for venue in Venue:
        cluster.faults(venue).clear()


def client(cluster, venue, api="v2", read_timeout_s=2.0):
    config = cluster.apply_to(load_config(SIM_YAML))
    vcfg = dataclasses.replace(config.venues[venue], api=api, read_timeout_s=read_timeout_s)
    config = dataclasses.replace(config, venues=dataclasses.replace(config.venues, **{venue.value: vcfg}))
    return make_client(venue, config, cluster.credentials(venue))


CLIENTS = [(Venue.UPBIT, "v2"), (Venue.BITHUMB, "v2"), (Venue.BITHUMB, "legacy")]


def cid() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


def limit(venue, price, volume, side=Side.BUY, tif=TimeInForce.GTC, market="KRW-BTC"):
    return OrderRequest(venue, market, side, OrderType.LIMIT, cid(), price=price, volume=volume, tif=tif)


@pytest.mark.parametrize("venue, api", CLIENTS)
def test_public_endpoints_through_the_project_client(cluster, venue, api):
    c = client(cluster, venue, api)
    assert set(cluster.markets) <= set(c.get_markets())
    assert c.get_ticker(["KRW-BTC"])["KRW-BTC"] > 0
    view = c.get_orderbook("KRW-ETH")
    assert view.bids[0][0] < view.asks[0][0] and len(view.asks) >= 15
    info = c.get_market_info(["KRW-BTC"])[0]
    assert info.taker_fee == load_config(SIM_YAML).venues[venue].taker_fee
    if venue is Venue.UPBIT:
        assert info.tick_size == D(1000)
    c.close()


@pytest.mark.parametrize("venue, api", CLIENTS)
def test_resting_order_lifecycle_through_the_project_client(cluster, venue, api):
    c = client(cluster, venue, api)
    before = c.get_balances()["KRW"]
    bids, _ = cluster.exchange(venue).book("KRW-BTC")
    placed = c.place_order(limit(venue, bids[-1][0] - 50_000, D("0.001")))
    assert c.get_balances()["KRW"].locked > before.locked
    assert placed.order_id in {o.order_id for o in c.get_open_orders("KRW-BTC")}
    c.cancel_order(order_id=placed.order_id)
    assert c.get_order(order_id=placed.order_id).status is OrderStatus.CANCELLED
    assert c.get_balances()["KRW"] == before
    c.close()


@pytest.mark.parametrize("venue, final", [(Venue.UPBIT, OrderStatus.CANCELLED), (Venue.BITHUMB, OrderStatus.DONE)])
def test_ioc_with_partial_fill_fault_reports_the_venues_final_state(cluster, venue, final):
    c = client(cluster, venue)
    cluster.faults(venue).partial_next_ioc(0.5)
    _, asks = cluster.exchange(venue).book("KRW-BTC")
    request = limit(venue, asks[0][0] + 20_000, D("0.002"), tif=TimeInForce.IOC)
    c.place_order(request)
    result = wait_until(lambda: (r := c.get_order(client_id=request.client_id)).is_final and r, 3)
    assert result.executed_volume == D("0.001") and result.status is final
    c.close()


@pytest.mark.parametrize("venue", list(Venue))
def test_rule_breaking_orders_get_the_venues_rejection(cluster, venue):
    c = client(cluster, venue)
    bids, _ = cluster.exchange(venue).book("KRW-BTC")
    with pytest.raises(InvalidOrder) as tick:
        c.place_order(limit(venue, bids[0][0] + 1, D("0.001")))
    assert tick.value.code == "invalid_price_bid"
    with pytest.raises(InvalidOrder) as minimum:
        c.place_order(limit(venue, bids[0][0], D("0.00001")))
    # each venue's own name: Upbit's rest-api-guide, Bithumb's "API 주요 에러 코드" table
    assert minimum.value.code == ("under_min_total_bid" if venue is Venue.UPBIT else "under_price_limit_bid")
    with pytest.raises(InsufficientFunds) as funds:
        c.place_order(limit(venue, bids[0][0], D("5"), side=Side.SELL))
    assert funds.value.code == "insufficient_funds_ask"
    cluster.faults(venue).reject_next_order()
    with pytest.raises(InvalidOrder) as refused:
        c.place_order(limit(venue, bids[0][0], D("0.001")))
    assert refused.value.code == ("create_bid_error" if venue is Venue.UPBIT else "invalid_parameter")
    c.close()


@pytest.mark.parametrize("venue", list(Venue))
@pytest.mark.parametrize("status, error", [(429, RateLimited), (500, VenueUnavailable), (503, VenueUnavailable)])
def test_rest_error_fault_maps_to_the_typed_error(cluster, venue, status, error):
    c = client(cluster, venue)
    cluster.faults(venue).rest_error(status, count=10)  # more than the client's read retries
    with pytest.raises(error):
        c.get_balances()
    cluster.faults(venue).clear()
    assert c.get_balances()["KRW"].total > 0
    c.close()


def test_delayed_order_response_is_state_unknown_and_the_order_exists(cluster):
    c = client(cluster, Venue.UPBIT, read_timeout_s=0.3)
    bids, _ = cluster.exchange(Venue.UPBIT).book("KRW-BTC")
    deep = (bids[-1][0] * D("0.9") / 1000).to_integral_value() * 1000  # 10% down: never fills
    request = limit(Venue.UPBIT, deep, D("0.001"))
    cluster.faults(Venue.UPBIT).delay_rest(1.0)
    with pytest.raises(OrderStateUnknown):
        c.place_order(request)
    found = c.get_order(client_id=request.client_id)
    assert found.status is OrderStatus.OPEN
    c.cancel_order(order_id=found.order_id)
    c.close()


def test_control_endpoint_arms_faults_and_dislocates(cluster):
    url = cluster.control_url()
    assert requests.post(f"{url}/faults/bithumb/rest_error", json={"status": 503}, timeout=3).json() == {"ok": True}
    assert requests.get(f"{cluster.endpoints(Venue.BITHUMB).rest_url}/v1/market/all", timeout=3).status_code == 503
    assert requests.post(f"{url}/faults/upbit/explode", json={}, timeout=3).status_code == 404
    assert requests.post(f"{url}/dislocate", json={"market": "KRW-SOL", "cheap_venue": "upbit", "bps": 50,
                                                   "seconds": 2}, timeout=3).json() == {"ok": True}

    def gap_bps():
        _, cheap_asks = cluster.exchange(Venue.UPBIT).book("KRW-SOL")
        dear_bids, _ = cluster.exchange(Venue.BITHUMB).book("KRW-SOL")
        return (dear_bids[0][0] - cheap_asks[0][0]) / dear_bids[0][0] * 10_000

    wait_until(lambda: gap_bps() >= 49, 2, message="dislocation")
    status = requests.get(f"{url}/status", timeout=3).json()
    assert status["published"] > 0


# --- raw requests built from the spec -------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(creds: Credentials, query: str | None = None, alg="HS256", nonce=None, timestamp=None,
        secret=None) -> str:
    payload = {"access_key": creds.access_key, "nonce": nonce or str(uuid.uuid4())}
    if timestamp is not None:
        payload["timestamp"] = timestamp
    if query:
        payload["query_hash"] = hashlib.sha512(query.encode()).hexdigest()
        payload["query_hash_alg"] = "SHA512"
    head = b64url(orjson.dumps({"alg": alg, "typ": "JWT"}))
    body = b64url(orjson.dumps(payload))
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    sig = hmac.new((secret or creds.secret_key).encode(), f"{head}.{body}".encode(), digest).digest()
    return f"Bearer {head}.{body}.{b64url(sig)}"


def test_spec_vector_token_is_accepted_once_then_nonce_used(cluster):
    vector = load_json("spec/auth_vectors.json")["upbit"][1]  # order_chance, fixed nonce
    cluster.exchange(Venue.UPBIT).add_account(vector["access_key"], vector["secret_key"], {"KRW": D(1)})
    url = f"{cluster.endpoints(Venue.UPBIT).rest_url}{vector['path']}?market=KRW-BTC"
    first = requests.get(url, headers={"Authorization": vector["authorization_header"]}, timeout=3)
    assert first.status_code == 200 and first.json()["bid_fee"] == "0.0005"
    assert first.headers["Remaining-Req"].startswith("group=default; min=")
    again = requests.get(url, headers={"Authorization": vector["authorization_header"]}, timeout=3)
    assert again.status_code == 401 and again.json()["error"]["name"] == "nonce_used"


@pytest.mark.parametrize("case, name", [
    ("missing", "jwt_verification"), ("wrong_secret", "jwt_verification"), ("bad_hash", "invalid_query_payload"),
    ("unknown_key", "invalid_access_key"), ("alg_none", "jwt_verification"),
])
def test_upbit_auth_failures_get_401_with_the_venue_error(cluster, case, name):
    creds = cluster.credentials(Venue.UPBIT)
    query = "market=KRW-BTC"
    headers = {
        "missing": {},
        "wrong_secret": {"Authorization": jwt(creds, query, secret="nope")},
        "bad_hash": {"Authorization": jwt(creds, "market=KRW-ETH")},
        "unknown_key": {"Authorization": jwt(Credentials("who", "x"), query)},
        "alg_none": {"Authorization": jwt(creds, query).replace("HS256", "none")},
    }[case]
    if case == "alg_none":
        head = b64url(orjson.dumps({"alg": "none", "typ": "JWT"}))
        headers = {"Authorization": "Bearer " + head + "." + jwt(creds, query).split(".", 1)[1]}
    r = requests.get(f"{cluster.endpoints(Venue.UPBIT).rest_url}/v1/orders/chance?{query}", headers=headers, timeout=3)
    assert r.status_code == 401 and r.json()["error"]["name"] == name


def test_upbit_accepts_hs512_and_a_json_body_hash(cluster):
    creds = cluster.credentials(Venue.UPBIT)
    rest = cluster.endpoints(Venue.UPBIT).rest_url
    assert requests.get(f"{rest}/v1/accounts", headers={"Authorization": jwt(creds, alg="HS512")},
                        timeout=3).status_code == 200
    bids, _ = cluster.exchange(Venue.UPBIT).book("KRW-BTC")
    body = {"market": "KRW-BTC", "side": "bid", "volume": "0.001", "price": str(bids[-1][0] - 100_000),
            "ord_type": "limit"}
    query = "&".join(f"{k}={v}" for k, v in body.items())
    r = requests.post(f"{rest}/v1/orders", data=orjson.dumps(body), timeout=3,
                      headers={"Authorization": jwt(creds, query), "Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 201 and r.json()["state"] == "wait" and isinstance(r.json()["locked"], str)


@pytest.mark.parametrize("skew_ms, alg, ok", [(0, "HS256", True), (120_000, "HS256", False), (0, "HS512", False)])
def test_bithumb_v2_timestamp_window_and_algorithm(cluster, skew_ms, alg, ok):
    creds = cluster.credentials(Venue.BITHUMB)
    token = jwt(creds, alg=alg, timestamp=int(time.time() * 1000) - skew_ms)
    r = requests.get(f"{cluster.endpoints(Venue.BITHUMB).rest_url}/v1/accounts", headers={"Authorization": token},
                     timeout=3)
    assert (r.status_code == 200) is ok
    if not ok:
        assert r.status_code == 401 and "name" in r.json()["error"]
    assert "Remaining-Req" not in r.headers


def legacy_headers(creds: Credentials, endpoint: str, body: str, nonce: str, secret: str | None = None) -> dict:
    message = f"{endpoint}\x00{body}\x00{nonce}".encode()
    digest = hmac.new((secret or creds.secret_key).encode(), message, hashlib.sha512).hexdigest()
    return {"Api-Key": creds.access_key, "Api-Sign": base64.b64encode(digest.encode()).decode(),
            "Api-Nonce": nonce, "Content-Type": "application/x-www-form-urlencoded"}


def test_bithumb_legacy_hmac_signature_nonce_and_missing_headers(cluster):
    creds = cluster.credentials(Venue.BITHUMB)
    url = f"{cluster.endpoints(Venue.BITHUMB).rest_url}/info/balance"
    body = "endpoint=%2Finfo%2Fbalance&currency=BTC"
    nonce = str(int(time.time() * 1000))
    good = requests.post(url, data=body, headers=legacy_headers(creds, "/info/balance", body, nonce), timeout=3)
    assert good.json()["status"] == "0000" and isinstance(good.json()["data"]["available_btc"], str)
    reused = requests.post(url, data=body, headers=legacy_headers(creds, "/info/balance", body, nonce), timeout=3)
    assert reused.json()["status"] == "5100"
    forged = legacy_headers(creds, "/info/balance", body, str(int(nonce) + 1), secret="nope")
    assert requests.post(url, data=body, headers=forged, timeout=3).json()["status"] == "5300"
    assert requests.post(url, data=body, timeout=3).json()["status"] == "5100"


def test_quotation_burst_beyond_the_group_limit_gets_429_with_headers(cluster):
    url = f"{cluster.endpoints(Venue.UPBIT).rest_url}/v1/ticker?markets=KRW-BTC"
    with requests.Session() as session:
        answers = [session.get(url, timeout=3) for _ in range(25)]
        limited = [a for a in answers if a.status_code == 429]
        assert limited and limited[0].headers["Remaining-Req"].endswith("sec=0")
        # Upbit's 429 body is plain text, not JSON (docs.upbit.com rate-limits)
        assert limited[0].text == "Too many API requests."
        assert limited[0].headers["Content-Type"].startswith("text/plain")
        # the next one-second window serves again (and later tests start with a fresh window)
        wait_until(lambda: session.get(url, timeout=3).status_code == 200, 3, message="window roll-over")


def test_unknown_path_and_bad_json_get_error_bodies(cluster):
    rest = cluster.endpoints(Venue.UPBIT).rest_url
    assert requests.get(f"{rest}/v1/nothing", timeout=3).status_code == 404
    r = requests.get(f"{rest}/v1/ticker?markets=KRW-NOPE", timeout=3)
    assert r.status_code == 404 and r.json()["error"]["message"] == "Code not found"
    with pytest.raises(AuthError):
        make_client(Venue.UPBIT, cluster.apply_to(load_config(SIM_YAML)), Credentials("who", "x")).get_balances()
