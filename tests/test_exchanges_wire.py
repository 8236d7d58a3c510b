"""The lean order path (karb.exchanges.wire + RestTransport.prepare): exact bytes on a warm
keep-alive connection, with the same "sent / not sent / unknown" rules, rate-limit slots and
error mapping as the requests path."""
from __future__ import annotations

import dataclasses
import shutil
import socket
import ssl
import subprocess
import threading
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from karb.exchanges.errors import OrderStateUnknown, RateLimited, VenueUnavailable
from karb.exchanges.factory import make_client
from karb.exchanges.http import WARM_MIN, RestTransport, jwt_api_error
from karb.exchanges.ratelimit import Group, RateLimiter
from karb.exchanges.upbit.client import UpbitClient
from karb.exchanges.wire import NotSent, WireConnection, build_request
from karb.model import OrderRequest, OrderType, Side, TimeInForce, Venue
from karb.secrets import Credentials
from tests.conftest import wait_until
from tests.exchanges_support import venue_config

ORDER_OK = {"uuid": "u-1", "side": "bid", "ord_type": "limit", "price": "100", "state": "wait",
            "market": "KRW-BTC", "volume": "1", "remaining_volume": "1", "executed_volume": "0",
            "trades_count": 0, "identifier": "cid-1", "created_at": "2026-01-01T00:00:00+09:00",
            "paid_fee": "0", "locked": "100", "reserved_fee": "0", "remaining_fee": "0"}


class ScriptedServer:
    """A loopback HTTP/1.1 server answering each request with the next scripted action:
    ``(status, headers, body)``, ``"hang_up"`` (read the request, close without answering),
    ``"silent"`` (read it, never answer). ``close_idle()`` closes every idle connection, as a
    venue's keep-alive timeout does. ``received`` holds every request's raw bytes."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.tls = tls
        self.script: list = []
        self.received: list[bytes] = []
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, name="test-wire-server", daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (OSError, ssl.SSLError):
                    conn.close()
                    continue
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.received.append(head + b"\r\n\r\n" + rest[:length])
                buf = rest[length:]
                action = self.script.pop(0) if self.script else (200, {}, ORDER_OK)
                if action == "hang_up":
                    conn.close()
                    return
                if action == "silent":
                    self._stop.wait(5)
                    return
                status, headers, body = action
                data = body if isinstance(body, bytes) else orjson.dumps(body)
                lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(data)}",
                         "Content-Type: application/json"] + [f"{k}: {v}" for k, v in headers.items()]
                conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        except OSError:
            return

    def close_idle(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
        self.close_idle()


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.stop()


def upbit(url: str, read_timeout_s: float = 2.0, tls: ssl.SSLContext | None = None) -> UpbitClient:
    config = dataclasses.replace(venue_config(), rest_url=url, read_timeout_s=read_timeout_s)
    client = UpbitClient(config, Credentials("ak", "sk"))
    client._http._tls = tls
    return client


def order(cid: str = "cid-1") -> OrderRequest:
    return OrderRequest(Venue.UPBIT, "KRW-BTC", Side.BUY, OrderType.LIMIT, cid,
                        price=Decimal("100"), volume=Decimal("1"), tif=TimeInForce.IOC)


def in_flight(client, group=Group.ORDER) -> int:
    return client.limiter.windows[group]._in_flight


def test_build_request_is_the_exact_http_bytes():
    raw = build_request("POST", "/v1/orders", "api.upbit.com", {"A": "1"}, b'{"x":1}')
    assert raw == (b"POST /v1/orders HTTP/1.1\r\nHost: api.upbit.com\r\nA: 1\r\n"
                   b"Content-Length: 7\r\n\r\n{\"x\":1}")
    assert build_request("GET", "/v1/ticker?markets=KRW-BTC", "h:81", {}, None) == \
        b"GET /v1/ticker?markets=KRW-BTC HTTP/1.1\r\nHost: h:81\r\n\r\n"


def test_prepare_writes_nothing_and_holds_the_slot_until_the_answer(server):
    client = upbit(server.url)
    prepared = client.prepare_order(order())
    assert server.received == [] and in_flight(client) == 1  # prepared: slot held, not sent
    result = prepared.send()
    assert result.client_id == "cid-1" and result.order_id == "u-1"
    assert in_flight(client) == 0 and len(client.limiter.windows[Group.ORDER]._stamps) == 1
    (raw,) = server.received
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/orders HTTP/1.1\r\n")
    assert b"Authorization: Bearer " in head
    assert orjson.loads(body)["identifier"] == "cid-1"
    assert prepared.wire_ns > 0
    client.close()


def test_closing_an_unwritten_order_frees_its_slot_and_it_can_never_be_written(server):
    client = upbit(server.url)
    prepared = client.prepare_order(order())
    prepared.close()
    prepared.write()
    assert in_flight(client) == 0 and server.received == []
    client.close()


def test_lean_placement_signs_as_the_requests_path_does(server):
    # the same client, the same nonce: the requests path and the lean path send the same
    # signature over the same body (the signer is shared, fed the same url and bytes)
    client = upbit(server.url)
    client._auth._nonce = lambda: "n-1"
    client.prepare_order(order()).send()
    client.place_order(order())
    lean, via_requests = server.received

    def auth_and_body(raw):
        head, body = raw.split(b"\r\n\r\n")
        auth = [line for line in head.split(b"\r\n") if line.startswith(b"Authorization:")]
        return auth, body

    assert auth_and_body(lean) == auth_and_body(via_requests)
    client.close()


def test_connection_closed_by_the_venue_while_idle_is_replaced_before_writing(server):
    client = upbit(server.url)
    client.warm_orders(["KRW-BTC"])
    server.close_idle()  # the venue's keep-alive timeout
    wait_until(lambda: not client._http._idle_wires[0].alive(), 2, message="close seen")
    result = client.prepare_order(order()).send()
    assert result.order_id == "u-1"
    posts = [raw for raw in server.received if raw.startswith(b"POST")]
    assert len(posts) == 1 and server.accepted == WARM_MIN + 1  # once, on a new connection
    client.close()


def test_refused_connection_is_not_sent_and_frees_the_slot():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    client = upbit(f"http://127.0.0.1:{port}")
    with pytest.raises(VenueUnavailable) as exc:
        client.prepare_order(order())
    assert exc.value.code == "not_sent" and in_flight(client) == 0
    client.close()


def test_no_wait_prepare_takes_nothing_without_a_warm_connection_or_a_free_slot(server):
    client = upbit(server.url)
    assert client.prepare_order(order(), wait=False) is None  # would have to connect
    assert in_flight(client) == 0 and server.accepted == 0
    client.warm_orders(["KRW-BTC"])
    window = client.limiter.windows[Group.ORDER]
    window.close_for(5.0)  # after a 429, say
    assert client.prepare_order(order(), wait=False) is None  # would have to wait for a slot
    assert len(client._http._idle_wires) == WARM_MIN and in_flight(client) == 0
    client.close()


@pytest.mark.parametrize("action", ["hang_up", "silent"])
def test_no_answer_after_the_write_is_state_unknown(server, action):
    client = upbit(server.url, read_timeout_s=0.3)
    server.script = [action]
    with pytest.raises(OrderStateUnknown) as exc:
        client.prepare_order(order()).send()
    assert exc.value.client_id == "cid-1" and len(server.received) == 1
    assert in_flight(client) == 0 and client._http._idle_wires == []  # that connection is gone
    client.close()


@pytest.mark.parametrize("status, error", [(500, OrderStateUnknown), (502, OrderStateUnknown),
                                           (503, VenueUnavailable)])
def test_5xx_on_a_lean_placement_is_mapped_as_on_the_requests_path(server, status, error):
    client = upbit(server.url)
    server.script = [(status, {}, {"error": {"name": "server_error", "message": "x"}})]
    with pytest.raises(error):
        client.prepare_order(order()).send()
    client.close()


def test_429_closes_the_order_window_and_remaining_req_is_read(server):
    client = upbit(server.url)
    server.script = [(200, {"Remaining-Req": "group=order; min=1800; sec=0"}, ORDER_OK),
                     (429, {"Retry-After": "2"}, b"Too many API requests.")]
    client.prepare_order(order("cid-1")).send()
    window = client.limiter.windows[Group.ORDER]
    assert window._corrections == 1  # the venue said none left: phantom requests added
    window._stamps.clear()
    with pytest.raises(RateLimited) as exc:
        client.prepare_order(order("cid-2")).send()
    assert exc.value.status == 429 and window.closed_for() > 1.0
    client.close()


def test_a_failed_write_is_state_unknown_never_not_sent(server):
    # a write that fails may have put part (or all) of the request on the wire
    client = upbit(server.url)
    prepared = client.prepare_order(order())
    prepared._call._wire._sock.close()  # the socket fails under the write
    with pytest.raises(OrderStateUnknown):
        prepared.send()
    assert in_flight(client) == 0
    client.close()


def test_a_malformed_answer_is_state_unknown_and_its_connection_dropped(server):
    client = upbit(server.url)
    server.script = [("abc", {}, ORDER_OK)]  # a status line http.client cannot read
    with pytest.raises(OrderStateUnknown):
        client.prepare_order(order()).send()
    assert client._http._idle_wires == []
    client.close()


def test_a_gzip_answer_is_decoded(server):
    import gzip
    client = upbit(server.url)
    server.script = [(200, {"Content-Encoding": "gzip"}, gzip.compress(orjson.dumps(ORDER_OK)))]
    assert client.prepare_order(order()).send().order_id == "u-1"
    client.close()


def test_an_unreadable_2xx_placement_is_state_unknown(server):
    client = upbit(server.url)
    server.script = [(200, {}, b"<html>")]
    with pytest.raises(OrderStateUnknown):
        client.prepare_order(order()).send()
    client.close()


def test_warm_keeps_every_idle_connection_open(server):
    client = upbit(server.url)
    first, second = client.prepare_order(order("a")), client.prepare_order(order("b"))
    first.send(), second.send()
    assert len(client._http._idle_wires) == 2 and server.accepted == 2
    server.close_idle()
    wait_until(lambda: not any(w.alive() for w in client._http._idle_wires), 2, message="closed")
    client.warm_orders(["KRW-BTC"])
    assert server.received[-1].startswith(b"GET /v1/ticker?markets=KRW-BTC HTTP/1.1")
    assert all(w.alive() for w in client._http._idle_wires)
    client.close()


def test_warming_from_every_leg_thread_at_once_never_grows_the_pool(server):
    client = upbit(server.url)
    for _ in range(3):  # three keep-alive rounds, four leg threads each
        threads = [threading.Thread(target=client.warm_orders, args=(["KRW-BTC"],))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
    assert len(client._http._wires) == WARM_MIN == len(client._http._idle_wires)
    assert server.accepted == WARM_MIN
    client.close()


def test_a_proxied_client_has_no_lean_path():
    config = dataclasses.replace(venue_config(), proxy="http://127.0.0.1:3128")
    client = UpbitClient(config, Credentials("ak", "sk"))
    assert client.prepare_order(order()) is None
    client.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return key, cert


def test_tls_is_verified_against_the_trusted_cas(certificate):
    key, cert = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = ScriptedServer(tls=context)
    try:
        # requests' defaults (certifi): a self-signed venue is refused before a byte is sent
        refused = upbit(server.url)
        with pytest.raises(VenueUnavailable) as exc:
            refused.prepare_order(order())
        assert exc.value.code == "not_sent" and "CERTIFICATE_VERIFY_FAILED" in str(exc.value)
        refused.close()
        trusting = ssl.create_default_context(cafile=str(cert))
        client = upbit(server.url, tls=trusting)
        assert client.prepare_order(order()).send().order_id == "u-1"
        assert len(server.received) == 1
        client.close()
    finally:
        server.stop()


def test_wire_connection_refuses_other_schemes():
    with pytest.raises(ValueError):
        WireConnection("ftp://x", 1, 1)
    with pytest.raises(NotSent):
        WireConnection("http://127.0.0.1:9", 1, 1).write(b"x")


def test_transport_prepare_without_auth_for_a_public_get(server):
    transport = RestTransport(Venue.UPBIT, dataclasses.replace(venue_config(), rest_url=server.url),
                              RateLimiter(venue_config().rate_limits), jwt_api_error)
    server.script = [(200, {}, [{"market": "KRW-BTC", "trade_price": 1}])]
    body = transport.prepare("GET", "/v1/ticker", group=Group.PUBLIC,
                             query=[("markets", "KRW-BTC")], idempotent=True).finish()
    assert body == [{"market": "KRW-BTC", "trade_price": 1}]
    assert b"Authorization" not in server.received[0]
    transport.close()


@pytest.mark.parametrize("venue", [Venue.UPBIT, Venue.BITHUMB])
def test_lean_placement_is_accepted_by_the_simulated_venue(venue):
    from karb.config import load_config
    from karb.sim.cluster import SimCluster
    base = load_config(Path(__file__).resolve().parent.parent / "config" / "sim.yaml")
    with SimCluster.from_config(base) as cluster:
        config = cluster.apply_to(base)
        client = make_client(venue, config, cluster.credentials(venue))
        client.warm_orders(["KRW-BTC"])
        request = OrderRequest(venue, "KRW-BTC", Side.BUY, OrderType.LIMIT, "lean-0001",
                               price=Decimal("100000000"), volume=Decimal("0.001"),
                               tif=TimeInForce.IOC)
        prepared = client.prepare_order(request, wait=False)  # warm: no waiting needed
        assert prepared is not None
        result = prepared.send()  # the sim checks the JWT and its query_hash of the body
        assert result.client_id == "lean-0001"
        assert client.get_order(client_id="lean-0001").client_id == "lean-0001"
        client.close()
