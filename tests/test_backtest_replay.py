"""Acceptance 3 of issue 10: a recorded ``run --sim`` session replayed through the backtest
makes the same decisions (market, direction, volume) that ``run`` journalled.

The engine runs as a user starts it (``main.py run --live`` against an in-process sim's paper
accounts, as ``test_engine_e2e`` does) with ``feed.record_path`` set; gaps are forced with
``dislocate``. The backtest then replays the recorded frames, decoded by the same feed
decoder, with zero latency and no competitors. What must be equal for the decisions to be
equal is the strategy's input: the books and their receive times (the recording has both),
the cooldowns (longer than a forced gap lasts, so no decision hangs on when a cooldown ends),
the thresholds (``inventory.skew_bps: 0``: no balance-dependent relief) and sizes that never
touch a balance (``max_trade_krw`` binds first). Anything else the backtest did differently
(another spread walk, sizing, fee, tick or threshold rule) changes a volume or a decision.
"""
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import dataclasses
from pathlib import Path

import pytest
import yaml

from karb.backtest.run import BacktestOptions, run_backtest
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
    data["sim"] = {"seed": 5, "gaps_per_min": 0, "update_hz": 4,
                   "markets": {"KRW-BTC": {"price": "140000000"}, "KRW-XRP": {"price": "3200"}}}
    data["strategy"] = {"threshold_bps": 20, "cooldown_ms": 1500, "max_skew_ms": 2000,
                        "max_book_age_ms": 5000}
    data["inventory"] = {"skew_bps": 0}
    data["feed"] = {"record_path": str(tmp_path / "frames.jsonl.gz")}
    data["journal"] = {"path": str(tmp_path / "journal.sqlite")}
    data["log"] = {"level": "INFO", "file": str(tmp_path / "karb.jsonl")}
    data["risk"] = {"max_trade_krw": "2000000", "kill_switch_file": str(tmp_path / "KILL")}
    data["monitor"] = {"metrics_port": 0, "status_interval_s": 0.5}
    if cluster is not None:
        data = engine_config_data(cluster, data)
    path = tmp_path / "karb.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _decisions(journal: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(journal) as db:
        rows = db.execute("SELECT market, sell_venue, volume FROM signals ORDER BY signal_ns").fetchall()
    return [(m, f"{sell}_sell", vol) for m, sell, vol in rows]


def _run_sim_session(tmp_path: Path) -> Path:
    sim_config = load_config(_write_config(tmp_path, None))
    with SimCluster.from_config(sim_config).start() as cluster:
        config_path = _write_config(tmp_path, cluster)
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "run", "--config", str(config_path), "--live",
             "--no-panel"], cwd=tmp_path, env=engine_env(cluster, dict(os.environ)),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), name="test-reader",
                                  daemon=True)
        reader.start()
        try:
            wait_until(lambda: any("engine started" in l for l in lines), 30, message="engine start")
            forced = [("KRW-BTC", Venue.BITHUMB), ("KRW-XRP", Venue.UPBIT),
                      ("KRW-BTC", Venue.UPBIT), ("KRW-XRP", Venue.BITHUMB)]
            traded: dict[str, float] = {}
            for n, (market, cheap) in enumerate(forced, 1):
                # a gap forced while the market cools down after its last trade is not traded
                wait_until(lambda: time.monotonic() - traded.get(market, 0.0) > 2.0, 5,
                           message="the market's cooldown")
                cluster.dislocate(market, cheap, bps=60, seconds=1.0)
                try:
                    wait_until(lambda: sum(" Trade " in l for l in lines) >= n, 20, message=f"trade {n}")
                except BaseException:
                    print("".join(l for l in lines if "INFO" in l or "WARN" in l)[-6000:])
                    raise
                traded[market] = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(10)
    return config_path


def test_replayed_recording_makes_the_decisions_run_journalled(tmp_path):
    config_path = _run_sim_session(tmp_path)
    live = _decisions(tmp_path / "journal.sqlite")
    assert len(live) >= 4, live

    config = load_config(config_path)
    zero = dataclasses.replace(config.backtest.latency.upbit, min_ms=0.0, max_ms=0.0)
    config = dataclasses.replace(config, backtest=dataclasses.replace(
        config.backtest, competitor_share=0.0,
        latency=dataclasses.replace(config.backtest.latency, upbit=zero, bithumb=zero)))
    result = run_backtest(config, BacktestOptions(data=str(tmp_path / "frames.jsonl.gz"),
                                                  out=str(tmp_path / "bt"), oracle=False))
    replayed = _decisions(tmp_path / "bt" / "journal.sqlite")
    assert replayed == live
    assert result.run.bad_frames == 0
    assert result.summary["trades"] == len(live)
