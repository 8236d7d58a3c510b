"""Loopback control endpoint of a running sim, so a test or a person can script faults.

    POST /faults/<venue>/<action>   JSON body with the action's arguments:
        drop_ws {} | stall_ws {"seconds"} | rest_error {"status", "count"} |
        delay_rest {"seconds", "count"} | reject_next_order {} | partial_next_ioc {"fraction"} |
        delay_orders {"seconds", "count"} | lose_answer {"count"} | slow_registration {"seconds", "count"} |
        garbage_frames {"count"} | future_frames {"count", "seconds"} | clear {}
    POST /dislocate                 {"market", "cheap_venue", "bps", "seconds"}
    POST /wallet/<venue>/suspend    {"asset", "state"}: the asset's wallet state on that venue
                                    (working | withdraw_only | deposit_only | paused)
    POST /wallet/lose_transfer      {"count"}: the next withdrawals complete and never arrive
    GET  /status                    published message count, lag, WS connections per hub
    GET  /accounts                  the paper accounts: {venue: {currency: {free, locked, start}}}
    GET  /orders/<venue>            the venue's truth: every order of the paper account (slow-to-
                                    register ones too) and placement attempts per client identifier

Amounts are decimal strings. ``created_ns`` is the venue's wall-clock creation time.

Answers ``{"ok": true}`` or ``{"error": "..."}`` with status 400/404. Thread ``sim-control``.
"""
from __future__ import annotations

import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler

from karb.sim.rest import TrackingHTTPServer
from typing import TYPE_CHECKING

import orjson

from karb.model import Venue
from karb.sim.orders import dec_str

if TYPE_CHECKING:
    from karb.sim.cluster import SimCluster

_ARGS = {
    "drop_ws": (), "stall_ws": ("seconds",), "rest_error": ("status", "count"),
    "delay_rest": ("seconds", "count"), "reject_next_order": (), "partial_next_ioc": ("fraction",),
    "delay_orders": ("seconds", "count"), "lose_answer": ("count",), "slow_registration": ("seconds", "count"),
    "garbage_frames": ("count",), "future_frames": ("count", "seconds"), "clear": (),
}


class ControlServer:
    def __init__(self, cluster: "SimCluster", host: str, port: int):
        control = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - stdlib signature
                pass

            def do_GET(self):
                control._answer(self, *control._route(self))

            do_POST = do_GET

        self.cluster = cluster
        self._httpd = TrackingHTTPServer((host, port), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="sim-control",
                                        kwargs={"poll_interval": 0.1}, daemon=True)

    def start(self) -> "ControlServer":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._thread.join(timeout)

    def _route(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict]:
        threading.current_thread().name = "sim-control-req"
        length = int(handler.headers.get("Content-Length") or 0)
        try:
            body = orjson.loads(handler.rfile.read(length)) if length else {}
        except orjson.JSONDecodeError:
            return 400, {"error": "body is not JSON"}
        if not isinstance(body, dict):
            return 400, {"error": "body must be a JSON object"}
        parts = handler.path.strip("/").split("/")
        try:
            if handler.command == "GET" and parts == ["status"]:
                return 200, self._status()
            if handler.command == "GET" and parts == ["accounts"]:
                return 200, self._accounts()
            if handler.command == "GET" and len(parts) == 2 and parts[0] == "orders":
                return 200, self._orders(Venue(parts[1]))
            if handler.command == "POST" and parts == ["dislocate"]:
                self.cluster.dislocate(str(body["market"]), Venue(body["cheap_venue"]), float(body["bps"]),
                                       float(body["seconds"]))
                return 200, {"ok": True}
            if handler.command == "POST" and len(parts) == 3 and parts[0] == "wallet" and parts[2] == "suspend":
                self.cluster.wallet.suspend(Venue(parts[1]), str(body["asset"]), str(body.get("state", "deposit_only")))
                return 200, {"ok": True}
            if handler.command == "POST" and parts == ["wallet", "lose_transfer"]:
                self.cluster.wallet.lose_next_transfer(int(body.get("count", 1)))
                return 200, {"ok": True}
            if handler.command == "POST" and len(parts) == 3 and parts[0] == "faults" and parts[2] in _ARGS:
                faults = self.cluster.faults(Venue(parts[1]))
                args = {name: body[name] for name in _ARGS[parts[2]] if name in body}
                getattr(faults, parts[2])(**args)
                return 200, {"ok": True}
        except (KeyError, ValueError, TypeError) as exc:
            return 400, {"error": f"bad request: {exc}"}
        return 404, {"error": f"no such control: {handler.command} {handler.path}"}

    def _status(self) -> dict:
        stats = self.cluster.market_stats()
        return {"published": stats.published, "max_lag_s": stats.max_lag_s, "sim_s": stats.sim_ns / 1e9,
                "connections": {hub.name: hub.connection_count() for v in Venue for hub in self.cluster.hubs(v)}}

    def _accounts(self) -> dict:
        out = {}
        for venue in Venue:
            start = self.cluster.start_balances(venue)
            out[venue.value] = {c: {"free": dec_str(b.free), "locked": dec_str(b.locked),
                                    "start": dec_str(start.get(c, Decimal(0)))}
                                for c, b in self.cluster.balances(venue).items()}
        return out

    def _orders(self, venue: Venue) -> dict:
        exchange = self.cluster.exchange(venue)
        key = self.cluster.credentials(venue).access_key
        orders = sorted(exchange.orders(key), key=lambda o: o.created_ns)
        return {"orders": [{
            "uuid": o.uuid, "identifier": o.identifier, "market": o.market, "side": o.side.value,
            "ord_type": o.ord_type, "tif": o.tif, "price": dec_str(o.price), "volume": dec_str(o.volume),
            "executed_volume": dec_str(o.executed_volume), "executed_funds": dec_str(o.executed_funds),
            "paid_fee": dec_str(o.paid_fee), "state": o.state, "created_at": o.created_at,
            "created_ns": o.created_ns} for o in orders],
            "attempts": exchange.attempts(key)}

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, body: dict) -> None:
        data = orjson.dumps(body)
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
