"""The simulated venues' WebSocket servers (``websockets.sync.server``) and their fan-out hubs.

``WsHub`` holds one endpoint's subscriptions. The market thread calls ``publish`` with each
book update: the frame is encoded once per (format, level count) variant that has subscribers
and the same bytes are queued to every subscriber of that market. Each connection has a sender
thread (``sim-<venue>-ws-send``) draining its queue, so a slow client never blocks the market
thread; a client more than ``MAX_QUEUE`` frames behind is dropped, as a venue would.

Protocols (spec/exchanges.md §4):
* ``upbit`` flavour (Upbit and Bithumb 2.0): one JSON array request ``[{"ticket"}, {"type",
  "codes", "is_only_snapshot"|"isOnlySnapshot", "is_only_realtime"|"isOnlyRealtime"},
  {"format"}]``; a new request replaces the connection's subscriptions; codes may carry
  ``.1/.5/.15/.30`` (other counts -> 30); binary frames; text ``PING`` -> ``{"status":"UP"}``
  then every 10 s; errors ``{"error":{"name":"NO_TICKET"|...}}``. Only ``orderbook`` produces
  data; ``ticker``/``trade`` subscriptions are accepted and stay silent.
* ``legacy`` flavour (Bithumb pubwss): connect ack, ``{"type","symbols"}`` filters with acks,
  ``orderbookdepth`` deltas as text frames (no snapshot: clients use REST).
Both close a connection after ``idle_timeout_s`` without client traffic (pings count).

Frame faults (armed through ``VenueFaults``): ``garbage`` queues undecodable or malformed frames
to every client at once; ``future`` stamps the hub's next N book frames ``seconds`` ahead.
"""
from __future__ import annotations

import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import orjson
from loguru import logger
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from karb.rules import to_upbit_symbol
from karb.sim.faults import VenueFaults
from karb.sim.frames import FORMATS, LEVEL_COUNTS, Ladder, legacy_depth_frame, orderbook_frame

MAX_QUEUE = 5000
UP_EVERY_S = 10.0
_UP = orjson.dumps({"status": "UP"})
_LEGACY_TYPES = ("ticker", "transaction", "orderbookdepth", "orderbooksnapshot")
# Bad frames a venue (or a broken proxy) might send: not JSON, cut short, wrong shapes.
_GARBAGE = {
    "upbit": (b"\x00\x9f\xff\xfe not a frame", b'{"type":"orderbook","code":"KRW-BTC","orderbook_units":[{"ask_pr',
              b'{"type":"orderbook","code":"KRW-BTC","timestamp":"soon","orderbook_units":"none"}',
              b'{"ty":"orderbook","cd":"KRW-BTC","tms":1,"obu":[{"ap":"x","as":null,"bp":-1,"bs":1}]}',
              b"[1,2,3]", b"null"),
    "legacy": ("\x00 not a frame", '{"type":"orderbookdepth","content":{"list":[{"symbol":"BTC_KRW","orderTy',
               '{"type":"orderbookdepth","content":{"list":"none","datetime":"soon"}}',
               '{"type":"orderbookdepth","content":{"list":[{"symbol":"BTC_KRW","orderType":"bid",'
               '"price":"x","quantity":"-1","total":"1"}],"datetime":"1"}}', "[]"),
}


class TrackingConnection(ServerConnection):
    """Remembers when the client last sent anything (data, ping or pong) for the idle timeout."""

    last_rx = 0.0

    def process_event(self, event) -> None:
        self.last_rx = time.monotonic()
        super().process_event(event)


@dataclass(eq=False)
class Client:
    conn: ServerConnection
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    # market -> (format, level count, list wrapper) for this connection's orderbook subscription
    books: dict[str, tuple[str, int, bool]] = field(default_factory=dict)
    alive: bool = True


class WsHub:
    """Subscriptions and fan-out of one WebSocket endpoint of one venue."""

    def __init__(self, name: str, flavour: str, markets: list[str], faults: VenueFaults,
                 publish_lock: threading.Lock, snapshot: Callable[[str], tuple[Ladder, Ladder, int]],
                 idle_timeout_s: float):
        self.name = name  # e.g. "upbit", "bithumb", "bithumb-legacy"
        self.flavour = flavour
        self.markets = set(markets)
        self.faults = faults
        self.publish_lock = publish_lock
        self._snapshot = snapshot  # market -> (bids, asks, ts_ms) as last published
        self.idle_timeout_s = idle_timeout_s
        self._subs: dict[str, tuple[Client, ...]] = {}  # copy-on-write under publish_lock
        self._clients: set[Client] = set()
        self.sent = 0
        self._future_left = 0  # book frames still to stamp ahead (future_frames fault)
        self._future_ms = 0
        faults.on_drop(self.drop_all)
        faults.on_frames(self._frame_fault)

    # --- market thread -------------------------------------------------------------------
    def has_subscribers(self, market: str) -> bool:
        return bool(self._subs.get(market))

    def publish(self, market: str, bids: Ladder, asks: Ladder, ts_ms: int,
                old: tuple[Ladder, Ladder] | None = None) -> None:
        """Queue this update to every subscriber of ``market``. Caller holds ``publish_lock``."""
        subs = self._subs.get(market)
        if not subs or self.faults.stalled(time.monotonic()):
            return
        if self._future_left > 0:
            self._future_left -= 1
            ts_ms += self._future_ms
        if self.flavour == "legacy":
            if old is None:
                return
            frame = legacy_depth_frame(market, old[0], old[1], bids, asks, ts_ms * 1000)
            if frame is not None:
                text = frame.decode()
                for client in subs:
                    self._enqueue(client, text)
            return
        encoded: dict[tuple[str, int, bool], bytes] = {}
        for client in subs:
            variant = client.books.get(market)
            if variant is None:
                continue
            frame = encoded.get(variant)
            if frame is None:
                frame = orderbook_frame(market, bids, asks, ts_ms, variant[0], variant[1])
                if variant[2]:
                    frame = b"[" + frame + b"]"
                encoded[variant] = frame
            self._enqueue(client, frame)

    def _enqueue(self, client: Client, frame: bytes | str) -> None:
        if client.out.qsize() > MAX_QUEUE:
            self._kill(client)
            return
        client.out.put(frame)
        self.sent += 1

    # --- connection threads ----------------------------------------------------------------
    def handle(self, conn: ServerConnection) -> None:
        """websockets handler thread of one connection (renamed ``sim-<name>-ws-conn``)."""
        threading.current_thread().name = f"sim-{self.name}-ws-conn"
        conn.recv_events_thread.name = f"sim-{self.name}-ws-recv"
        client = self._new_client(conn)
        if client is None:
            return
        sender = threading.Thread(target=self._send_loop, args=(client,), name=f"sim-{self.name}-ws-send",
                                  daemon=True)
        sender.start()
        with self.publish_lock:
            self._clients.add(client)
        try:
            if self.flavour == "legacy":
                client.out.put(orjson.dumps({"status": "0000", "resmsg": "Connected Successfully"}).decode())
            self._recv_loop(client)
        finally:
            self._unsubscribe(client)
            client.alive = False
            client.out.put(None)
            sender.join(timeout=2.0)

    def _new_client(self, conn: ServerConnection) -> Client | None:
        """The connection's client state; None refuses it (a private hub's bad token)."""
        return Client(conn)

    def _recv_loop(self, client: Client) -> None:
        conn = client.conn
        next_up: float | None = None
        if not getattr(conn, "last_rx", 0.0):
            conn.last_rx = time.monotonic()  # type: ignore[attr-defined]
        while True:
            now = time.monotonic()
            wait = conn.last_rx + self.idle_timeout_s - now  # type: ignore[attr-defined]
            if next_up is not None:
                wait = min(wait, next_up - now)
            try:
                message = conn.recv(timeout=max(0.0, wait))
            except TimeoutError:
                now = time.monotonic()
                if now >= conn.last_rx + self.idle_timeout_s:  # type: ignore[attr-defined]
                    conn.close(1000, "idle timeout")
                    return
                if next_up is not None and now >= next_up:
                    client.out.put(_UP)
                    next_up += UP_EVERY_S
                continue
            except ConnectionClosed:
                return
            if message == "PING" or message == b"PING":
                client.out.put(_UP)
                next_up = time.monotonic() + UP_EVERY_S
                continue
            try:
                self._on_request(client, message)
            except Exception:  # a bad request must never kill the server
                logger.exception("sim {} ws: request handling failed", self.name)

    def _send_loop(self, client: Client) -> None:
        while True:
            frame = client.out.get()
            if frame is None or not client.alive:
                return
            try:
                client.conn.send(frame)
            except (ConnectionClosed, OSError):
                client.alive = False
                return

    # --- requests ---------------------------------------------------------------------------
    def _on_request(self, client: Client, message: bytes | str) -> None:
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            request = None
        if self.flavour == "legacy":
            self._on_legacy_filter(client, request)
            return
        error, books, snapshot_only, realtime_only = _parse_upbit_request(request, self.markets)
        if error:
            client.out.put(orjson.dumps({"error": {"name": error, "message": _ERRORS[error]}}))
            return
        with self.publish_lock:
            self._unsubscribe_locked(client)
            for market, variant in books.items():
                if not realtime_only.get(market):
                    bids, asks, ts_ms = self._snapshot(market)
                    if bids or asks:
                        frame = orderbook_frame(market, bids, asks, ts_ms, variant[0], variant[1], "SNAPSHOT")
                        client.out.put(b"[" + frame + b"]" if variant[2] else frame)
                if not snapshot_only.get(market):
                    client.books[market] = variant
                    self._subs[market] = self._subs.get(market, ()) + (client,)

    def _on_legacy_filter(self, client: Client, request: object) -> None:
        ok = (isinstance(request, dict) and request.get("type") in _LEGACY_TYPES
              and isinstance(request.get("symbols"), list)
              and all(isinstance(s, str) and "_" in s for s in request["symbols"]))
        if not ok:
            client.out.put(orjson.dumps({"status": "5100", "resmsg": "Invalid Filter Syntax"}).decode())
            return
        assert isinstance(request, dict)
        if request["type"] == "orderbookdepth":
            markets = {to_upbit_symbol(s) for s in request["symbols"]} & self.markets
            with self.publish_lock:
                self._unsubscribe_locked(client)
                for market in markets:
                    client.books[market] = ("legacy", 30, False)
                    self._subs[market] = self._subs.get(market, ()) + (client,)
        client.out.put(orjson.dumps({"status": "0000", "resmsg": "Filter Registered Successfully"}).decode())

    def _unsubscribe(self, client: Client) -> None:
        with self.publish_lock:
            self._unsubscribe_locked(client)
            self._clients.discard(client)

    def _unsubscribe_locked(self, client: Client) -> None:
        for market in client.books:
            self._subs[market] = tuple(c for c in self._subs.get(market, ()) if c is not client)
        client.books = {}

    # --- faults --------------------------------------------------------------------------------
    def drop_all(self) -> None:
        """Cut every connection without a close frame (a network drop)."""
        with self.publish_lock:
            clients = list(self._clients)
        for client in clients:
            self._kill(client)

    def _frame_fault(self, kind: str, count: int, seconds: float) -> None:
        with self.publish_lock:
            if kind == "future":
                self._future_left, self._future_ms = count, int(seconds * 1000)
            elif kind == "clear":
                self._future_left = 0
            elif kind == "garbage":
                frames = _GARBAGE["legacy" if self.flavour == "legacy" else "upbit"]
                for client in self._clients:
                    if client.books:
                        for i in range(count):
                            self._enqueue(client, frames[i % len(frames)])

    def _kill(self, client: Client) -> None:
        client.alive = False
        try:
            client.conn.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def connection_count(self) -> int:
        with self.publish_lock:
            return len(self._clients)


_ERRORS = {
    "WRONG_FORMAT": "요청 형식이 올바르지 않습니다.",
    "NO_TICKET": "ticket 필드가 없습니다.",
    "NO_TYPE": "type 필드가 없습니다.",
    "NO_CODES": "codes 필드가 없습니다.",
    "INVALID_PARAM": "잘못된 파라미터입니다.",
}


def _parse_upbit_request(request: object, markets: set[str]):
    """Return (error name or None, {market: (format, count, list)}, snapshot_only, realtime_only)."""
    books: dict[str, tuple[str, int, bool]] = {}
    snapshot_only: dict[str, bool] = {}
    realtime_only: dict[str, bool] = {}
    if not isinstance(request, list) or not all(isinstance(x, dict) for x in request):
        return "WRONG_FORMAT", books, snapshot_only, realtime_only
    if not any("ticket" in x for x in request):
        return "NO_TICKET", books, snapshot_only, realtime_only
    fmt = "DEFAULT"
    for item in request:
        if "format" in item:
            fmt = item["format"]
    if fmt not in ("DEFAULT", "SIMPLE", "JSON_LIST", "SIMPLE_LIST"):
        return "WRONG_FORMAT", books, snapshot_only, realtime_only
    base_fmt = "SIMPLE" if fmt.startswith("SIMPLE") else "DEFAULT"
    as_list = fmt.endswith("_LIST")
    types = [x for x in request if "type" in x]
    if not types:
        return "NO_TYPE", books, snapshot_only, realtime_only
    for item in types:
        codes = item.get("codes")
        if not isinstance(codes, list) or not codes or not all(isinstance(c, str) for c in codes):
            return "NO_CODES", books, snapshot_only, realtime_only
        if item["type"] != "orderbook" or item.get("level", 0) not in (0, 0.0):
            continue  # ticker/trade: accepted, no data; grouped levels: no data (as Upbit)
        only_snap = bool(item.get("is_only_snapshot", item.get("isOnlySnapshot", False)))
        only_real = bool(item.get("is_only_realtime", item.get("isOnlyRealtime", False)))
        for code in codes:
            market, _, count_text = code.partition(".")
            if market not in markets:
                continue
            count = int(count_text) if count_text.isdigit() and int(count_text) in LEVEL_COUNTS else 30
            books[market] = (base_fmt, count, as_list)
            snapshot_only[market], realtime_only[market] = only_snap, only_real
    assert base_fmt in FORMATS
    return None, books, snapshot_only, realtime_only


class WsServer:
    """One listening WebSocket endpoint on ``host:port`` serving ``path`` through ``hub``, and
    any ``more`` paths through theirs (a venue's private stream shares its public host)."""

    def __init__(self, hub: WsHub, host: str, port: int, path: str, more: dict[str, WsHub] | None = None):
        self.hub = hub
        self.path = path
        self.routes = {path: hub, **(more or {})}
        self._server: Server = serve(
            self._handle, host, port, process_request=self._check_path, ping_interval=None,
            create_connection=TrackingConnection, server_header=None, close_timeout=1.0,
        )
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"sim-{hub.name}-ws",
                                        daemon=True)

    def _check_path(self, conn: ServerConnection, request):
        if request.path.split("?", 1)[0] not in self.routes:
            return conn.respond(404, "Not Found\n")
        return None

    def _handle(self, conn: ServerConnection) -> None:
        self.routes[conn.request.path.split("?", 1)[0]].handle(conn)

    def start(self) -> "WsServer":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._server.shutdown()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("sim {} ws server thread did not stop in {}s", self.hub.name, timeout)
