"""The whole program end to end: ``main.py run`` as a subprocess against the loopback sim.

The sim runs in this test process, so the test can force opportunities and read the paper
accounts; the engine runs exactly as a user starts it (config file, keys from the environment,
``mode: live`` + ``--live`` against the sim's URLs). After trades, SIGTERM must stop it cleanly
within 5 s with a summary and exit code 0, and the journal's orders must account for every won
and coin the sim's accounts moved.
"""
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from decimal import Decimal as D
from pathlib import Path

import pytest
import yaml

from karb.config import load_config
from karb.model import Venue
from karb.sim.cluster import SimCluster
from karb.sim.external import engine_config_data, engine_env
from tests.conftest import wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
MARKETS = ["KRW-BTC", "KRW-XRP"]


def _write_config(tmp_path: Path, cluster: SimCluster | None) -> Path:
    data = yaml.safe_load((ROOT / "config" / "sim.yaml").read_text(encoding="utf-8"))
    data["markets"] = MARKETS
    data["sim"] = {"seed": 5, "gaps_per_min": 0, "update_hz": 20,
                   "markets": {"KRW-BTC": {"price": "140000000"}, "KRW-XRP": {"price": "3200"}}}
    data["strategy"] = {"threshold_bps": 20, "cooldown_ms": 300}
    data["journal"] = {"path": str(tmp_path / "journal.sqlite")}
    data["log"] = {"level": "INFO", "file": str(tmp_path / "karb.jsonl")}
    data["risk"] = {"max_trade_krw": "2000000", "kill_switch_file": str(tmp_path / "KILL")}
    data["monitor"] = {"metrics_port": 0, "status_interval_s": 0.5}
    if cluster is not None:
        data = engine_config_data(cluster, data)
    path = tmp_path / "karb.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class _Lines:
    """Collect a subprocess stream's lines on a thread, so the test can wait for one."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), name="test-reader", daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def find(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    def join(self):
        self._thread.join(10)


def test_run_live_against_sim_trades_stops_on_sigterm_and_journal_matches_sim_accounts(tmp_path):
    sim_config = load_config(_write_config(tmp_path, None))
    with SimCluster.from_config(sim_config).start() as cluster:
        config_path = _write_config(tmp_path, cluster)
        start = {v: cluster.balances(v) for v in Venue}
        env = engine_env(cluster, dict(os.environ))
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "run", "--config", str(config_path), "--live",
             "--no-panel"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        out, err = _Lines(proc.stdout), _Lines(proc.stderr)
        try:
            wait_until(lambda: err.find("engine started"), 30, message="engine start")
            cluster.dislocate("KRW-BTC", Venue.BITHUMB, bps=60, seconds=1.5)
            wait_until(lambda: err.find("Trade "), 20, message="a trade")
            cluster.dislocate("KRW-XRP", Venue.UPBIT, bps=60, seconds=1.5)
            wait_until(lambda: len(err.find("Trade ")) >= 2, 20, message="a second trade")
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=15)
            stop_s = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.join()
        err.join()
        end = {v: cluster.balances(v) for v in Venue}

    assert code == 0, "\n".join(err.lines[-30:])
    assert stop_s < 5.0
    assert err.find("Signal upbit_sell KRW-BTC") and err.find("Signal bithumb_sell KRW-XRP")
    assert err.find("upbit private stream up") and err.find("bithumb private stream up")  # fills first from it
    summary = "\n".join(out.lines)
    assert "K-Arb summary (live" in summary and "success rate" in summary and "residual exposure" in summary

    # Every won and coin the sim moved is accounted for by the journal's orders, exactly.
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        orders = db.execute("SELECT venue, market, side, executed_volume, executed_funds, paid_fee "
                            "FROM orders").fetchall()
        states = {row[0] for row in db.execute("SELECT state FROM orders")}
    assert len(orders) >= 4 and states <= {"filled", "cancelled", "rejected", "partially_filled"}
    for venue in Venue:
        expected = {ccy: b.total for ccy, b in start[venue].items()}
        for v, market, side, volume, funds, fee in orders:
            if v != venue.value or volume is None:
                continue
            coin, sign = market.split("-")[1], (1 if side == "buy" else -1)
            expected[coin] += sign * D(volume)
            expected["KRW"] -= sign * D(funds) + D(fee)
        assert {c: end[venue][c].total for c in expected} == expected, venue
    trades = [line for line in err.lines if " Trade " in line]
    assert all("filled" in line for line in trades)
