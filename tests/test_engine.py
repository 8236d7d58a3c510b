"""Engine lifecycle without venues: failed start-up stops cleanly; run's mode rules."""
import argparse
import threading

import pytest

from karb.commands.run import _mode
from karb.config import parse_config
from karb.engine import Engine
from karb.model import Venue
from karb.startup import StartupError


class NoMarketsClient:
    """A venue that lists nothing: start-up must refuse before starting any thread."""

    def __init__(self, venue):
        self.venue = venue
        self.closed = False

    def get_markets(self):
        return []

    def close(self):
        self.closed = True


def _config(tmp_path):
    return parse_config({
        "markets": ["KRW-BTC"],
        "venues": {v: {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9",
                       "taker_fee": "0.0005", "maker_fee": "0.0005"} for v in ("upbit", "bithumb")},
        "journal": {"path": str(tmp_path / "j.sqlite")},
        "monitor": {"metrics_port": 0},
        "risk": {"kill_switch_file": str(tmp_path / "KILL")},
    })


def test_engine_start_with_market_missing_raises_and_stop_leaves_no_threads(tmp_path):
    before = {t.name for t in threading.enumerate()}
    clients = {v: NoMarketsClient(v) for v in Venue}
    engine = Engine(_config(tmp_path), clients, "dry_run")
    with pytest.raises(StartupError, match="not listed on upbit: KRW-BTC"):
        engine.start()
    engine.stop(timeout_s=2)
    engine.stop(timeout_s=2)  # idempotent
    assert all(c.closed for c in clients.values())
    assert {t.name for t in threading.enumerate()} - before == set()


def _args(**kw):
    base = dict(sim=False, dry_run=False, live=False)
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.parametrize(
    "args,config_mode,expected",
    [
        (_args(), "dry_run", "dry_run"),
        (_args(), "live", "dry_run"),  # config alone never trades
        (_args(live=True), "live", "live"),  # both, on purpose
        (_args(sim=True), "dry_run", "sim"),
        (_args(sim=True, dry_run=True), "dry_run", "dry_run"),
    ],
)
def test_mode_needs_config_and_flag_for_live(args, config_mode, expected):
    assert _mode(args, config_mode) == expected


@pytest.mark.parametrize(
    "args,config_mode",
    [(_args(live=True), "dry_run"), (_args(live=True, dry_run=True), "live"), (_args(sim=True, live=True), "live")],
)
def test_mode_with_contradictions_refuses(args, config_mode):
    with pytest.raises(SystemExit):
        _mode(args, config_mode)
