"""Signers against the spec's vectors, sent through the real transport so the wire is checked.

Every entry of ``upbit``, ``bithumb_v2_jwt`` and ``bithumb_legacy_hmac`` in
tests/data/spec/auth_vectors.json: the nonce / timestamp are pinned and the exact JWT or
``Api-Sign`` compared; the query string or body actually sent is compared with the string the
vector hashes.
"""
from __future__ import annotations

import hashlib
from urllib.parse import unquote

import pytest
import requests
import responses

from karb.exchanges.bithumb.auth import BithumbAuth, BithumbLegacyAuth, MonotonicMsNonce
from karb.exchanges.bithumb.parse import legacy_error
from karb.exchanges.http import RestTransport, jwt_api_error, render_query
from karb.exchanges.ratelimit import Group, RateLimiter
from karb.exchanges.upbit.auth import UpbitAuth, encode_jwt
from karb.model import Venue
from tests.conftest import load_json
from tests.exchanges_support import BASE, sent_json, sent_query, venue_config

VECTORS = load_json("spec/auth_vectors.json")


def _transport(venue: Venue, error_of=jwt_api_error) -> RestTransport:
    config = venue_config()
    return RestTransport(venue, config, RateLimiter(config.rate_limits), error_of)


def _send_jwt_vector(vector: dict, auth, venue: Venue):
    responses.add(vector["method"], f"{BASE}{vector['path']}", json={})
    transport = _transport(venue)
    if vector["json_body"] is not None:
        transport.request("POST", vector["path"], group=Group.ORDER, json_body=vector["json_body"],
                          auth=auth, idempotent=False)
    else:
        transport.request(vector["method"], vector["path"], group=Group.PRIVATE,
                          query=vector["params_in_order"], auth=auth)
    transport.close()
    return responses.calls[0]


def _hashed_on_wire(call, vector: dict) -> str | None:
    if vector["json_body"] is not None:
        return render_query(list(sent_json(call).items()))
    return unquote(sent_query(call)) or None


@pytest.mark.parametrize("vector", VECTORS["upbit"], ids=lambda v: v["name"])
@responses.activate
def test_upbit_auth_with_vector_sends_exact_jwt_and_hashes_the_wire(vector):
    auth = UpbitAuth(vector["access_key"], vector["secret_key"], lambda: vector["nonce"], vector["alg"])

    call = _send_jwt_vector(vector, auth, Venue.UPBIT)

    assert call.request.headers["Authorization"] == vector["authorization_header"]
    assert _hashed_on_wire(call, vector) == vector["string_to_hash"]
    if vector["string_to_hash"]:
        expected = hashlib.sha512(vector["string_to_hash"].encode()).hexdigest()
        assert expected == vector["query_hash"]


@pytest.mark.parametrize("vector", VECTORS["bithumb_v2_jwt"], ids=lambda v: v["name"])
@responses.activate
def test_bithumb_auth_with_vector_sends_exact_jwt_and_hashes_the_wire(vector):
    auth = BithumbAuth(vector["access_key"], vector["secret_key"], lambda: vector["nonce"],
                       lambda: vector["timestamp"])

    call = _send_jwt_vector(vector, auth, Venue.BITHUMB)

    assert call.request.headers["Authorization"] == f"Bearer {vector['jwt']}"
    assert _hashed_on_wire(call, vector) == vector["string_to_hash"]


@pytest.mark.parametrize("vector", [v for v in VECTORS["bithumb_legacy_hmac"] if v["endpoint_param_first"]],
                         ids=lambda v: v["name"])
@responses.activate
def test_legacy_auth_with_vector_sends_exact_signature_over_the_sent_body(vector):
    from urllib.parse import urlencode
    responses.post(f"{BASE}{vector['endpoint']}", json={"status": "0000"})
    transport = _transport(Venue.BITHUMB, legacy_error)
    auth = BithumbLegacyAuth(vector["api_key"], vector["secret_key"], lambda: vector["nonce_ms"])
    form = urlencode([("endpoint", vector["endpoint"]), *vector["params"].items()])

    transport.request("POST", vector["endpoint"], group=Group.PRIVATE, form=form, auth=auth)

    request = responses.calls[0].request
    assert request.body == vector["form_body"].encode()
    for name, value in vector["headers"].items():
        assert request.headers[name] == value


@pytest.mark.parametrize("vector", VECTORS["bithumb_legacy_hmac"], ids=lambda v: v["name"])
def test_legacy_auth_with_any_param_order_signs_the_body_as_given(vector):
    auth = BithumbLegacyAuth(vector["api_key"], vector["secret_key"], lambda: vector["nonce_ms"])
    prepared = requests.Request("POST", f"{BASE}{vector['endpoint']}", data=vector["form_body"]).prepare()

    auth(prepared)

    assert prepared.headers["Api-Sign"] == vector["api_sign"]
    assert prepared.headers["Api-Nonce"] == vector["nonce_ms"]


def test_upbit_claims_without_params_have_no_query_hash():
    auth = UpbitAuth("ak", "sk", lambda: "n")

    assert auth.claims(None) == {"access_key": "ak", "nonce": "n"}
    assert list(auth.claims("a=1")) == ["access_key", "nonce", "query_hash", "query_hash_alg"]


def test_bithumb_claims_keep_the_documented_key_order():
    auth = BithumbAuth("ak", "sk", lambda: "n", lambda: 17)

    assert list(auth.claims("a=1")) == ["access_key", "nonce", "timestamp", "query_hash",
                                        "query_hash_alg"]
    assert auth.claims(None) == {"access_key": "ak", "nonce": "n", "timestamp": 17}


def test_upbit_auth_with_default_factory_uses_a_fresh_nonce_per_request():
    auth = UpbitAuth("ak", "sk")

    assert auth.claims(None)["nonce"] != auth.claims(None)["nonce"]


def test_encode_jwt_with_unknown_alg_raises():
    with pytest.raises(ValueError):
        UpbitAuth("ak", "sk", alg="none")
    with pytest.raises(KeyError):
        encode_jwt({}, "sk", "RS256")


def test_monotonic_nonce_with_frozen_clock_never_repeats():
    nonce = MonotonicMsNonce(lambda: 1_700_000_000_000)

    values = [int(nonce()) for _ in range(5)]

    assert values == list(range(1_700_000_000_000, 1_700_000_000_005))


def test_auth_repr_never_shows_the_secret():
    assert "sk-secret" not in repr(UpbitAuth("ak", "sk-secret"))
    assert "sk-secret" not in repr(BithumbLegacyAuth("ak", "sk-secret"))
