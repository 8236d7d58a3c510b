"""The simulated venues' REST servers (stdlib ``ThreadingHTTPServer``) and their shared plumbing.

``RestServer`` listens on loopback and hands each request to its venue's API object
(``UpbitApi`` for Upbit; ``BithumbApi`` for Bithumb 2.0 and legacy paths on the same host).
Before routing it applies the venue's armed REST faults (error status or delay) and, when
``enforce_rate_limits`` is on, the per-second request groups (Upbit answers every call with
``Remaining-Req: group=<g>; min=<n>; sec=<n>``). After an order placement it applies
``lose_answer``: the connection is closed without an answer (the order stays placed).

Threads: ``sim-<venue>-rest`` serves; each request runs on its own ``sim-<venue>-rest-req``
thread (joined on ``stop()``).
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import orjson
from loguru import logger

from karb.model import Venue
from karb.sim.config import SimConfig
from karb.sim.exchange import SimExchange
from karb.sim.faults import VenueFaults


@dataclass
class Request:
    method: str
    path: str
    raw_query: str
    params: list[tuple[str, str]]
    body: bytes
    headers: object  # http.client.HTTPMessage (case-insensitive .get)
    json: object = None
    client_ip: str = "127.0.0.1"

    def get(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        if isinstance(self.json, dict) and name in self.json:
            value = self.json[name]
            return value if isinstance(value, str) or value is None else orjson.dumps(value).decode()
        return None

    def getlist(self, name: str) -> list[str]:
        values = [v for k, v in self.params if k in (name, f"{name}[]")]
        if isinstance(self.json, dict) and isinstance(self.json.get(name), list):
            values.extend(str(v) for v in self.json[name])
        return values


@dataclass
class Response:
    status: int
    body: object  # JSON-serialisable, or bytes sent as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"


class RateWindows:
    """Fixed one-second windows per (group, identity). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], tuple[int, int]] = {}

    def hit(self, group: str, identity: str, limit: int) -> int:
        """Count one request; return how many remain this second (negative = over the limit)."""
        second = int(time.monotonic())
        with self._lock:
            start, used = self._windows.get((group, identity), (second, 0))
            if start != second:
                start, used = second, 0
            used += 1
            self._windows[(group, identity)] = (start, used)
        return limit - used


class TrackingHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that can cut its open (keep-alive) connections on stop."""

    daemon_threads = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request, client_address):
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class RestServer:
    """One venue's REST endpoint on ``host:port``."""

    def __init__(self, venue: Venue, exchange: SimExchange, faults: VenueFaults, sim: SimConfig,
                 host: str, port: int, stop: threading.Event):
        from karb.sim.rest_bithumb import BithumbApi
        from karb.sim.rest_upbit import UpbitApi

        self.venue = venue
        self.faults = faults
        self.stop_event = stop
        self.api = (UpbitApi if venue is Venue.UPBIT else BithumbApi)(exchange, sim)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: without TCP_NODELAY, Nagle plus the
            # client's delayed ACK add ~40 ms to every keep-alive response
            disable_nagle_algorithm = True

            def log_message(self, format, *args):  # noqa: A002 - stdlib signature
                pass

            def do_GET(self):
                server._serve(self)

            do_POST = do_DELETE = do_PUT = do_GET

        self._httpd = TrackingHTTPServer((host, port), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"sim-{venue.value}-rest",
                                        kwargs={"poll_interval": 0.1}, daemon=True)

    def start(self) -> "RestServer":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._httpd.shutdown()
        self._httpd.close_connections()  # idle keep-alive connections would block the join
        self._httpd.server_close()  # joins the request threads
        self._thread.join(timeout)

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        threading.current_thread().name = f"sim-{self.venue.value}-rest-req"
        try:
            request = _read_request(handler)
            fault = self.faults.next_rest()
            if fault is not None and fault.status:
                response = self.api.fault_response(request, fault.status)
            else:
                try:
                    response = self.api.handle(request)
                except Exception:
                    logger.exception("sim {} rest: {} {} failed", self.venue.value, request.method, request.path)
                    response = self.api.fault_response(request, 500)
            if fault is not None and fault.delay_s > 0:
                self.stop_event.wait(fault.delay_s)
            if (fault is None or not fault.status) and self.api.is_placement(request) \
                    and self.faults.take_lose_answer():
                _hang_up(handler)
                return
            _write(handler, response)
        except (ConnectionError, OSError):
            pass  # the client went away (e.g. it timed out during an injected delay)


def _hang_up(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection without an answer (the client sees it reset or closed)."""
    handler.close_connection = True
    try:
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _read_request(handler: BaseHTTPRequestHandler) -> Request:
    parts = urlsplit(handler.path)
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length else b""
    request = Request(handler.command, parts.path, parts.query,
                      parse_qsl(parts.query, keep_blank_values=True), body, handler.headers,
                      client_ip=handler.client_address[0])
    content_type = (handler.headers.get("Content-Type") or "").lower()
    if body and "json" in content_type:
        try:
            request.json = orjson.loads(body)
        except orjson.JSONDecodeError:
            request.json = _BAD_JSON
    elif body and "x-www-form-urlencoded" in content_type:
        request.params = request.params + parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return request


_BAD_JSON = object()


def is_bad_json(request: Request) -> bool:
    return request.json is _BAD_JSON


def _write(handler: BaseHTTPRequestHandler, response: Response) -> None:
    body = response.body if isinstance(response.body, bytes) else orjson.dumps(response.body)
    handler.send_response(response.status)
    handler.send_header("Content-Type", response.content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in response.headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)
