"""Helpers for the exchange client tests: configs, a fake clock, a recording sleep."""
from __future__ import annotations

import threading
from decimal import Decimal
from urllib.parse import urlsplit

import orjson

from karb.config import RateLimitConfig, VenueConfig

BASE = "http://127.0.0.1:9"
NONCE = "8e1c6a4e-4f2b-4c1a-9a57-2d7b8f0e5c11"


def venue_config(api: str = "v2", retry_reads: int = 3, **limits) -> VenueConfig:
    rates = {"public_per_s": 1000.0, "private_per_s": 1000.0, "order_per_s": 1000.0, **limits}
    return VenueConfig(rest_url=BASE, ws_url="ws://127.0.0.1:9/websocket/v1",
                       taker_fee=Decimal("0.0005"), maker_fee=Decimal("0.0005"), api=api,
                       connect_timeout_s=1.5, read_timeout_s=2.5,
                       rate_limits=RateLimitConfig(retry_reads=retry_reads, **rates))


class FakeClock:
    """A monotonic clock that only moves when a waiter waits (or a test advances it)."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class RecordingSleep:
    def __init__(self):
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def sent_query(call) -> str:
    """The query string of a recorded ``responses`` call, exactly as put on the wire."""
    return urlsplit(call.request.url).query


def sent_json(call) -> dict:
    return orjson.loads(call.request.body)


def bearer_claims(call) -> dict:
    """Decode (without verifying) the JWT payload a recorded call carried."""
    import base64
    token = call.request.headers["Authorization"].removeprefix("Bearer ")
    payload = token.split(".")[1]
    return orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
