"""Shared test helpers. Tests touch only loopback: a guard below refuses any other address."""
from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from loguru import logger

DATA = Path(__file__).parent / "data"
_LOOPBACK = ("127.", "::1", "localhost")
_real_connect = socket.socket.connect
_real_create_connection = socket.create_connection


def _check_address(address) -> None:
    host = address[0] if isinstance(address, tuple) else str(address)
    if isinstance(host, str) and host and not host.startswith(_LOOPBACK) and not host.startswith("/"):
        raise RuntimeError(f"test tried to reach {host!r}: tests may touch loopback only")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check_address(address)
        return _real_connect(self, address)

    def guarded_create_connection(address, *args, **kwargs):
        _check_address(address)
        return _real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)


@pytest.fixture(autouse=True)
def _fresh_log_sinks():
    """Code under test may install loguru sinks bound to the stream pytest captured for that
    test (``setup_logging``); drop them afterwards so no later test writes to a closed file."""
    yield
    logger.remove()
    logger.add(sys.__stderr__, level="DEBUG")  # loguru's own default sink


def load_json(relative: str):
    return json.loads((DATA / relative).read_text(encoding="utf-8"))


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.005,
               message: str = "condition") -> object:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
