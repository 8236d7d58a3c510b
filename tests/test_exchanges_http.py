"""RestTransport: error mapping, transport failures, retries, sessions, headers (no network)."""
from __future__ import annotations

import threading
import time
from decimal import Decimal as D
from urllib.parse import unquote

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError

from karb.exchanges.errors import (
    AuthError, InsufficientFunds, InvalidOrder, OrderNotFound, OrderStateUnknown, RateLimited,
    UnknownVenueError, VenueUnavailable,
)
from karb.exchanges.http import (
    MAX_WAIT_S, WINDOW_CLOSED, RestTransport, block_time_of, jwt_api_error, render_query, wire_query,
)
from karb.exchanges.ratelimit import WINDOW_MARGIN_S, Group, RateLimiter
from karb.model import Venue
from tests.conftest import load_json
from tests.exchanges_support import BASE, FakeClock, RecordingSleep, venue_config

SAMPLES = load_json("spec/rest_samples.json")
URL = f"{BASE}/v1/x"


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def sleep():
    return RecordingSleep()


@pytest.fixture
def transport(clock, sleep):
    config = venue_config(retry_reads=3)
    t = RestTransport(Venue.UPBIT, config, RateLimiter(config.rate_limits, clock, clock.wait),
                      jwt_api_error, sleep)
    yield t
    t.close()


def read(t: RestTransport):
    return t.request("GET", "/v1/x", group=Group.PRIVATE)


def write(t: RestTransport):
    return t.request("POST", "/v1/x", group=Group.ORDER, json_body={"a": "1"}, idempotent=False,
                     client_id="cid-1")


def error_body(name, message="text"):
    return {"error": {"name": name, "message": message}}


@pytest.mark.parametrize("status, body, expected", [
    (400, SAMPLES["upbit"]["error 400"]["body"], InsufficientFunds),
    (400, error_body("insufficient_funds_ask"), InsufficientFunds),
    (401, SAMPLES["upbit"]["error 401"]["body"], AuthError),
    (401, error_body("invalid_access_key"), AuthError),
    (401, error_body("expired_access_key"), AuthError),
    (401, error_body("nonce_used"), AuthError),
    (401, error_body("no_authorization_ip"), AuthError),
    (403, error_body("out_of_scope"), AuthError),
    (403, error_body("thirdparty_agreement_required"), AuthError),
    (400, SAMPLES["upbit"]["error invalid tick"]["body"], InvalidOrder),
    (400, error_body("under_min_total_bid"), InvalidOrder),
    (400, error_body("validation_error"), InvalidOrder),
    (400, error_body("invalid_query_payload"), InvalidOrder),
    (400, error_body("create_ask_error"), InvalidOrder),
    (400, SAMPLES["bithumb_v2"]["error"]["body"], InvalidOrder),
    (404, error_body("order_not_found"), OrderNotFound),
    (404, None, OrderNotFound),
    (409, error_body("something_new"), UnknownVenueError),
    (200, error_body("under_min_total_ask"), InvalidOrder),
])
@responses.activate
def test_venue_error_with_status_and_name_maps_to_typed_error(transport, status, body, expected):
    kwargs = {"json": body} if body is not None else {"body": "not found"}
    responses.get(URL, status=status, **kwargs)

    with pytest.raises(expected) as err:
        read(transport)

    e = err.value
    assert e.venue is Venue.UPBIT and e.status == (status if status >= 400 else 400)
    if body:
        assert e.code == str(body["error"]["name"]) and e.venue_message == body["error"]["message"]


@responses.activate
def test_bithumb_numeric_error_name_is_kept_as_string(transport):
    responses.get(URL, status=400, json=SAMPLES["bithumb_v2"]["error"]["body"])

    with pytest.raises(InvalidOrder) as err:
        read(transport)

    assert err.value.code == "400"


@pytest.mark.parametrize("status", [429, 418])
@responses.activate
def test_write_with_rate_limit_raises_rate_limited_without_retry(transport, status):
    responses.post(URL, status=status, json=error_body("too_many_requests"), headers={"Retry-After": "2"})

    with pytest.raises(RateLimited) as err:
        write(transport)

    assert err.value.retry_after_s == 2.0 and err.value.status == status
    assert len(responses.calls) == 1


@responses.activate
def test_read_with_429_retry_after_waits_on_the_limiter_then_succeeds(transport, clock, sleep):
    responses.get(URL, status=429, json=error_body("too_many_requests"), headers={"Retry-After": "1.5"})
    responses.get(URL, json={"ok": 1})

    assert read(transport) == {"ok": 1}

    assert clock.waits == [pytest.approx(1.5)] and sleep.calls == []


@responses.activate
def test_read_with_429_without_retry_after_waits_for_the_next_window_never_zero(transport, clock,
                                                                                sleep):
    responses.get(URL, status=429, body="Too many API requests.")
    responses.get(URL, json={"ok": 1})

    assert read(transport) == {"ok": 1}

    assert clock.waits == [pytest.approx(1.0 + WINDOW_MARGIN_S)] and sleep.calls == []


@responses.activate
def test_read_with_two_500s_retries_with_backoff(transport, sleep):
    responses.get(URL, status=500, body="oops")
    responses.get(URL, status=502, body="<html>bad gateway</html>")
    responses.get(URL, json=[1])

    assert read(transport) == [1]

    assert sleep.calls == [0.2, 0.4] and len(responses.calls) == 3


@responses.activate
def test_read_with_persistent_503_raises_unavailable_after_retries(transport, sleep):
    responses.get(URL, status=503, body="maintenance")

    with pytest.raises(VenueUnavailable) as err:
        read(transport)

    assert err.value.status == 503 and len(responses.calls) == 4 and len(sleep.calls) == 3


@responses.activate
def test_read_with_read_timeouts_retries_then_raises_unavailable(transport):
    responses.get(URL, body=requests.exceptions.ReadTimeout("slow"))

    with pytest.raises(VenueUnavailable) as err:
        read(transport)

    assert err.value.code == "timeout" and len(responses.calls) == 4


@responses.activate
def test_read_with_invalid_auth_is_not_retried(transport):
    responses.get(URL, status=401, json=error_body("jwt_verification"))

    with pytest.raises(AuthError):
        read(transport)

    assert len(responses.calls) == 1


@responses.activate
def test_read_with_unreadable_200_raises_unknown_venue_error(transport):
    responses.get(URL, body="<html>captive portal</html>")

    with pytest.raises(UnknownVenueError) as err:
        read(transport)

    assert err.value.code == "bad_body"


def _refused() -> requests.exceptions.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    return requests.exceptions.ConnectionError(MaxRetryError(None, URL, reason))


@pytest.mark.parametrize("exc", [requests.exceptions.ConnectTimeout("connect timed out"), _refused()],
                         ids=["connect-timeout", "refused"])
@responses.activate
def test_write_not_sent_raises_unavailable_not_sent(transport, exc):
    responses.post(URL, body=exc)

    with pytest.raises(VenueUnavailable) as err:
        write(transport)

    assert err.value.code == "not_sent" and len(responses.calls) == 1


@pytest.mark.parametrize("exc", [
    requests.exceptions.ReadTimeout("read timed out"),
    requests.exceptions.ConnectionError("Connection aborted: RemoteDisconnected"),
    requests.exceptions.ChunkedEncodingError("connection broken"),
], ids=["read-timeout", "reset", "broken-body"])
@responses.activate
def test_write_with_answer_lost_raises_state_unknown_without_retry(transport, sleep, exc):
    responses.post(URL, body=exc)

    with pytest.raises(OrderStateUnknown) as err:
        write(transport)

    assert err.value.client_id == "cid-1" and len(responses.calls) == 1 and sleep.calls == []


@pytest.mark.parametrize("status, expected", [(500, OrderStateUnknown), (504, OrderStateUnknown),
                                              (503, VenueUnavailable)])
@responses.activate
def test_write_with_5xx_raises_without_retry(transport, status, expected):
    responses.post(URL, status=status, body="upstream")

    with pytest.raises(expected):
        write(transport)

    assert len(responses.calls) == 1


@responses.activate
def test_write_with_unreadable_2xx_raises_state_unknown(transport):
    responses.post(URL, status=201, body="{truncated")

    with pytest.raises(OrderStateUnknown) as err:
        write(transport)

    assert err.value.client_id == "cid-1"


@responses.activate
def test_request_sends_timeouts_and_no_origin_header(transport):
    responses.get(URL, json={})

    read(transport)

    call = responses.calls[0]
    assert call.request.req_kwargs["timeout"] == (1.5, 2.5)
    assert "Origin" not in call.request.headers
    assert call.request.headers["Accept"] == "application/json"


@responses.activate
def test_remaining_req_header_lowers_the_bucket(transport):
    responses.get(URL, json={}, headers={"Remaining-Req": "group=default; min=1800; sec=0"})

    read(transport)

    assert transport.limiter.windows[Group.PRIVATE].remaining == 0


def test_session_is_one_per_thread_and_reused_within_a_thread(transport):
    mine = transport.session
    other = []
    worker = threading.Thread(target=lambda: other.append(transport.session), name="test-session")
    worker.start()
    worker.join(5)

    assert transport.session is mine and other[0] is not mine
    adapter = mine.get_adapter("https://api.upbit.com")
    assert adapter._pool_maxsize == 4 and adapter.max_retries.total == 0


def test_close_cuts_a_default_backoff_short():
    config = venue_config()
    t = RestTransport(Venue.UPBIT, config, RateLimiter(config.rate_limits), jwt_api_error)
    t.session  # noqa: B018 - create one
    t.close()

    finished = threading.Event()
    worker = threading.Thread(target=lambda: (t._sleep(30), finished.set()), name="test-backoff")
    worker.start()

    assert finished.wait(2.0)
    worker.join(2.0)


def test_wire_query_with_awkward_values_decodes_to_the_hashed_string():
    params = [("identifier", "a b&c=d+e%"), ("states", ["wait", "watch"]), ("markets", "KRW-BTC,KRW-ETH")]

    wire = wire_query(params)

    assert wire == ("identifier=a%20b%26c%3Dd%2Be%25&states%5B%5D=wait&states%5B%5D=watch"
                    "&markets=KRW-BTC,KRW-ETH")
    assert unquote(wire) == render_query(params)


def test_close_with_pool_still_referenced_closes_keep_alive_sockets():
    # A kept traceback can hold a response (and its pool) alive; close() must still hang up,
    # or a loopback server waiting on our idle keep-alive socket can never stop.
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    serving = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    serving.start()
    try:
        config = venue_config()
        config = type(config)(**{**config.__dict__, "rest_url": f"http://127.0.0.1:{server.server_port}"})
        t = RestTransport(Venue.UPBIT, config, RateLimiter(config.rate_limits), jwt_api_error)
        t.request("GET", "/v1/x", group=Group.PUBLIC)
        pools = t.session.get_adapter(t.base_url).poolmanager.pools
        connections = [c for key in pools.keys() for c in list(pools[key].pool.queue) if c]
        assert connections and connections[0].sock is not None

        t.close()

        assert all(c.sock is None for c in connections)
    finally:
        server.shutdown()
        server.server_close()
        serving.join(5)


def test_session_ignores_environment_proxies_and_uses_configured_proxy(monkeypatch):
    from karb.config import VenueConfig
    from karb.exchanges.upbit.client import UpbitClient

    monkeypatch.setenv("HTTPS_PROXY", "http://10.9.9.9:1")
    plain = UpbitClient(VenueConfig("http://127.0.0.1:1", "ws://127.0.0.1:1", D("0.0005"), D("0.0005")))
    proxied = UpbitClient(VenueConfig("http://127.0.0.1:1", "ws://127.0.0.1:1", D("0.0005"), D("0.0005"),
                                      proxy="http://127.0.0.1:3128"))
    try:
        assert plain._http.session.trust_env is False and plain._http.session.proxies == {}
        assert proxied._http.session.proxies == {"http": "http://127.0.0.1:3128",
                                                 "https": "http://127.0.0.1:3128"}
    finally:
        plain.close()
        proxied.close()


# --- review 3: a 418 block, and long closures with priority calls ------------------------------

def test_an_upbit_418_block_is_not_retried_into_and_closes_every_group():
    """spec §Upbit rate limits: continuing after a 429 gets a 418, "IP/account blocked, duration
    grows with repeat offences". The read must not be retried into the block, and no other
    group (a cancel) may send while the account is blocked: each call would extend the block of
    the very account that has to cancel and unwind."""
    clock, sleep = FakeClock(), RecordingSleep()
    config = venue_config(retry_reads=3)
    transport = RestTransport(Venue.UPBIT, config, RateLimiter(config.rate_limits, clock, clock.wait),
                              jwt_api_error, sleep)
    blocked = {"error": {"name": "too_many_requests", "message": "blocked"}}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{BASE}/v1/ticker", status=418, json=blocked)
        mock.delete(f"{BASE}/v1/order", status=418, json=blocked)
        with pytest.raises(RateLimited):
            transport.request("GET", "/v1/ticker", group=Group.PUBLIC)
        reads_sent = len(mock.calls)
        before = clock.now
        with pytest.raises(RateLimited):
            transport.request("DELETE", "/v1/order", group=Group.PRIVATE, priority=True,
                              idempotent=False, client_id="c1")
        cancel_went_out_after_s = clock.now - before
        cancels_sent = sum(1 for call in mock.calls if call.request.method == "DELETE")
    transport.close()
    assert reads_sent == 1, f"the read was sent {reads_sent} times into a 418 block"
    # failing fast without sending is right too: the cancel never reached the blocked account
    assert cancels_sent == 0 or cancel_went_out_after_s > 0, \
        "a cancel went out at once while the account was blocked"


def test_a_long_retry_after_does_not_park_a_priority_cancel_for_an_hour():
    """A 429 on an ordinary balance read carries ``Retry-After: 3600`` (a CDN in front of the
    venue, or a wrong header). The next priority cancel (Upbit counts cancels in PRIVATE) must
    fail as RateLimited at once (known not sent, so the leg is known unresolved and shutdown
    can finish) rather than wait the hour inside the limiter."""
    clock, sleep = FakeClock(), RecordingSleep()
    config = venue_config(retry_reads=0)
    transport = RestTransport(Venue.UPBIT, config, RateLimiter(config.rate_limits, clock, clock.wait),
                              jwt_api_error, sleep)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:  # may fail fast
        mock.get(f"{BASE}/v1/accounts", status=429, body="Too many API requests.",
                 headers={"Retry-After": "3600"})
        mock.delete(f"{BASE}/v1/order", json={"uuid": "u1", "state": "wait"})
        with pytest.raises(RateLimited):
            transport.request("GET", "/v1/accounts", group=Group.PRIVATE)
        before = clock.now
        try:
            transport.request("DELETE", "/v1/order", group=Group.PRIVATE, priority=True,
                              idempotent=False, client_id="c1")
        except RateLimited:
            pass  # failing fast is fine: the caller knows the cancel did not go out
        parked_s = clock.now - before
    transport.close()
    assert parked_s <= 10, f"the priority cancel waited {parked_s:.0f} s inside the rate limiter"


@pytest.mark.parametrize("message, seconds", [
    ("blocked", None), ("IP blocked for 30s", 30.0), ("차단 시간: 120초", 120.0),
    ("blocked 10 minutes", 600.0), ("5분 후 다시 시도", 300.0), ("retry in 1.5 seconds", 1.5),
])
def test_block_time_of_reads_the_418_messages_stated_block(message, seconds):
    assert block_time_of(message) == seconds


@responses.activate
def test_a_418_closes_every_group_for_the_block_its_body_states(transport, clock):
    responses.get(URL, status=418, json=error_body("too_many_requests", "IP blocked for 90s"))

    with pytest.raises(RateLimited) as err:
        read(transport)

    assert err.value.status == 418 and err.value.retry_after_s == 90.0
    assert all(transport.limiter.closed_for(g) == pytest.approx(90.0) for g in Group)
    assert len(responses.calls) == 1


@responses.activate
def test_an_order_during_a_418_block_fails_at_once_as_rate_limited_and_is_never_sent(transport,
                                                                                     clock):
    transport.limiter.ban(Group.PUBLIC)
    responses.post(URL, json={"uuid": "u1"})
    start = clock.now

    with pytest.raises(RateLimited) as err:
        write(transport)

    assert err.value.code == WINDOW_CLOSED and err.value.retry_after_s == pytest.approx(60.0)
    assert len(responses.calls) == 0 and clock.now == start  # nothing sent: "not placed" holds


@responses.activate
def test_a_read_whose_retry_after_is_past_its_bound_fails_without_retrying(transport, clock, sleep):
    responses.get(URL, status=429, body="Too many API requests.", headers={"Retry-After": "30"})
    start = clock.now

    with pytest.raises(RateLimited) as err:
        read(transport)

    assert err.value.code == WINDOW_CLOSED and len(responses.calls) == 1
    assert clock.now == start and sleep.calls == []


def test_close_cuts_a_wait_for_a_slot_short_and_nothing_is_sent():
    config = venue_config(retry_reads=3)
    limiter = RateLimiter(config.rate_limits)
    transport = RestTransport(Venue.UPBIT, config, limiter, jwt_api_error)
    held = [limiter.acquire(Group.ORDER, priority=True) for _ in range(limiter.windows[Group.ORDER].limit)]
    failed = []

    def placer():
        try:
            transport.request("POST", "/v1/x", group=Group.ORDER, idempotent=False, json_body={})
        except VenueUnavailable as exc:
            failed.append(exc)

    thread = threading.Thread(target=placer, name="test-close-placer")
    thread.start()
    started = time.monotonic()
    transport.close()
    thread.join(5)

    assert not thread.is_alive() and failed and failed[0].code == "not_sent"
    assert time.monotonic() - started < MAX_WAIT_S
    for ticket in held:
        limiter.release(Group.ORDER, ticket)
