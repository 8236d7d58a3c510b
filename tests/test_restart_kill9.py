"""kill -9 of a real engine process mid-trade, then a restart on the same journal.

The sim runs in this test process (its accounts outlive the engine). The engine is killed the
moment it logs a signal, with Upbit's next answer held back, so a leg is in flight. After the
restart, recovery must leave no trade ``sending`` and no order open, and every coin and won the
sim moved must be what the journal's orders say, with the engine's residual equal to the net
coin the venues moved.
"""
import os
import signal
import sqlite3
import subprocess
import sys
from decimal import Decimal as D

import pytest
import yaml

from karb.config import load_config
from karb.model import Venue
from karb.sim.cluster import SimCluster
from karb.sim.external import engine_env
from tests.conftest import wait_until
from tests.test_engine_e2e import ROOT, _Lines, _write_config

pytestmark = pytest.mark.integration


def _config(tmp_path, cluster):
    path = _write_config(tmp_path, cluster)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.setdefault("execution", {})["not_found_window_s"] = 3
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _engine(tmp_path, config_path, cluster):
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "run", "--config", str(config_path), "--live",
         "--no-panel"], cwd=tmp_path, env=engine_env(cluster, dict(os.environ)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, _Lines(proc.stdout), _Lines(proc.stderr)


def _stop(proc, out, err, signum=signal.SIGTERM) -> int:
    """Send ``signum`` and return the exit code; the process is gone and its output read
    whatever happens (killed after 15 s)."""
    try:
        proc.send_signal(signum)
        return proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.join()
        err.join()


def _rows(tmp_path, sql):
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        return db.execute(sql).fetchall()


def test_kill_9_mid_trade_then_restart_resolves_the_trade_and_the_journal_matches_the_sim(tmp_path):
    sim_config = load_config(_write_config(tmp_path, None))
    with SimCluster.from_config(sim_config).start() as cluster:
        config_path = _config(tmp_path, cluster)
        start = {v: cluster.balances(v) for v in Venue}
        proc, out, err = _engine(tmp_path, config_path, cluster)
        try:
            wait_until(lambda: err.find("engine started"), 30, message="engine start")
            cluster.faults(Venue.UPBIT).delay_rest(1.0)  # the sell's answer comes late
            cluster.dislocate("KRW-BTC", Venue.BITHUMB, bps=60, seconds=1.5)
            wait_until(lambda: err.find("Signal "), 20, interval=0.001, message="a signal")
        finally:
            killed = _stop(proc, out, err, signal.SIGKILL)
        assert killed == -signal.SIGKILL
        first = err.lines
        crashed = {r[0] for r in wait_until(lambda: _rows(tmp_path, "SELECT id FROM signals"), 5,
                                            message="a journalled intent")}

        proc, out, err = _engine(tmp_path, config_path, cluster)
        try:
            wait_until(lambda: err.find("engine started"), 30, message="restart")
            wait_until(lambda: not _rows(tmp_path, "SELECT id FROM signals WHERE status='sending'"),
                       20, interval=0.1, message="the crashed trade resolved")
        finally:
            code = _stop(proc, out, err)
        end = {v: cluster.balances(v) for v in Venue}

    assert code in (0, 5), "\n".join(err.lines[-30:])
    assert err.find("recovery of"), "\n".join(err.lines[-30:])
    states = {row[0] for row in _rows(tmp_path, "SELECT state FROM orders")}
    assert states <= {"filled", "cancelled", "rejected"}, states
    orders = _rows(tmp_path, "SELECT client_id, venue, market, side, executed_volume, "
                             "executed_funds, paid_fee FROM orders")
    for venue in Venue:  # every won and coin the sim moved is in the journal, exactly
        expected = {ccy: b.total for ccy, b in start[venue].items()}
        for _cid, v, market, side, volume, funds, fee in orders:
            if v != venue.value:
                continue
            sign = 1 if side == "buy" else -1
            expected[market.split("-")[1]] += sign * D(volume)
            expected["KRW"] -= sign * D(funds) + D(fee)
        assert {c: end[venue][c].total for c in expected} == expected, venue
    # the crashed trade's executions got their fills rows from recovery
    filled = {row[0] for row in orders if D(row[4]) and row[0][:-1] in crashed}
    journalled = {row[0] for row in _rows(tmp_path, "SELECT DISTINCT client_id FROM fills")}
    assert filled <= journalled, "\n".join(first + err.lines)
    net_btc = sum(end[v]["BTC"].total - start[v]["BTC"].total for v in Venue)
    booked = sum((D(r[0]) for r in _rows(tmp_path, "SELECT residual FROM signals "
                                                    "WHERE market='KRW-BTC'")), D(0))
    assert booked == net_btc


def test_start_with_kill_file_present_sends_no_order_into_a_standing_opportunity(tmp_path):
    # `karb kill`, then a (systemd) restart: the first strategy pass must already be blocked
    sim_config = load_config(_write_config(tmp_path, None))
    with SimCluster.from_config(sim_config).start() as cluster:
        config_path = _config(tmp_path, cluster)
        (tmp_path / "KILL").write_text("karb kill\n", encoding="utf-8")
        cluster.dislocate("KRW-BTC", Venue.BITHUMB, bps=80, seconds=10)
        start = {v: cluster.balances(v) for v in Venue}
        proc, out, err = _engine(tmp_path, config_path, cluster)
        try:
            wait_until(lambda: err.find("engine started"), 30, message="engine start")
            # the monitor reports a standing edge above the 20 bps threshold while killed
            wait_until(lambda: [line for line in err.find("status killed") if "best_net=+" in line
                                and float(line.split("best_net=+")[1].split("bps")[0]) > 20],
                       10, message="a status line showing the opportunity")
        finally:
            code = _stop(proc, out, err)
        end = {v: cluster.balances(v) for v in Venue}
    assert code == 5  # stopped while killed
    assert not err.find("Signal ") and not err.find("Trade ")
    assert _rows(tmp_path, "SELECT id FROM signals") == []
    assert end == start
