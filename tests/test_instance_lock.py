"""One engine per journal and kill-file directory; `karb kill` says whether an engine runs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from karb.cli import main
from karb.config import load_config
from karb.instance_lock import InstanceLock, holder, lock_paths
from karb.startup import StartupError

ROOT = Path(__file__).resolve().parent.parent


def _config_file(tmp_path, journal="journal.sqlite", kill="KILL"):
    data = yaml.safe_load((ROOT / "config" / "sim.yaml").read_text(encoding="utf-8"))
    data["journal"] = {"path": str(tmp_path / journal)}
    data["risk"] = {**data.get("risk", {}), "kill_switch_file": str(tmp_path / kill)}
    data["log"] = {"level": "INFO", "file": None}
    data["monitor"] = {**data.get("monitor", {}), "metrics_port": 0}
    path = tmp_path / "karb.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_second_lock_on_the_same_journal_names_the_lock_and_the_holding_pid(tmp_path):
    config = load_config(_config_file(tmp_path))
    first = InstanceLock(lock_paths(config))
    first.acquire()
    try:
        with pytest.raises(StartupError) as err:
            InstanceLock(lock_paths(config), wait_s=0.1).acquire()
        assert err.value.exit_code == 2
        assert f"journal.sqlite.lock is locked by pid {os.getpid()}" in str(err.value)
        assert holder(lock_paths(config)) == str(os.getpid())
    finally:
        first.release()
    assert holder(lock_paths(config)) is None
    again = InstanceLock(lock_paths(config), wait_s=0.1)
    again.acquire()  # released: a restart is never blocked by a stale file
    again.release()


def test_second_instance_with_a_shared_kill_file_directory_is_refused(tmp_path):
    one = load_config(_config_file(tmp_path, journal="a.sqlite"))
    two = load_config(_config_file(tmp_path, journal="b.sqlite"))
    first = InstanceLock(lock_paths(one))
    first.acquire()
    try:
        with pytest.raises(StartupError, match="karb.lock is locked by pid"):
            InstanceLock(lock_paths(two), wait_s=0.1).acquire()
    finally:
        first.release()


def test_second_run_on_the_same_journal_exits_2_with_one_line_naming_lock_and_pid(tmp_path):
    path = _config_file(tmp_path)
    lock = InstanceLock(lock_paths(load_config(path)))
    lock.acquire()  # the "first engine" is this test process
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "run", "--sim", "--config",
                               str(path), "--duration", "3", "--no-panel"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    finally:
        lock.release()
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "locked by pid" in line]
    assert lines == [f"start-up check failed: another engine is running: "
                     f"{tmp_path / 'journal.sqlite.lock'} is locked by pid {os.getpid()}"]


def test_karb_kill_with_no_engine_running_says_the_next_start_stays_stopped(tmp_path):
    path = _config_file(tmp_path)
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "kill", "--config", str(path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert "no engine is running; the next start stays stopped" in proc.stdout
    said = (proc.stdout + proc.stderr).lower()
    assert "cancelling open orders" not in said and "cancels open orders" not in said
    assert (tmp_path / "KILL").exists()


def test_karb_kill_with_an_engine_running_names_its_pid(tmp_path, capsys):
    path = _config_file(tmp_path)
    lock = InstanceLock(lock_paths(load_config(path)))
    lock.acquire()
    try:
        assert main(["kill", "--config", str(path)]) == 0
    finally:
        lock.release()
    assert f"engine pid {os.getpid()} stops new trades and cancels open orders" in capsys.readouterr().out


def test_second_run_with_the_first_engines_metrics_port_still_names_the_engine_not_the_port(tmp_path):
    # the first engine holds the locks and the metrics port; the second must say "another
    # engine", not "metrics_port busy" (what a trader would otherwise chase)
    import socket

    path = _config_file(tmp_path)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["monitor"]["metrics_port"] = busy.getsockname()[1]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    lock = InstanceLock(lock_paths(load_config(path)))
    lock.acquire()
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "run", "--sim", "--config",
                               str(path), "--duration", "3", "--no-panel"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    finally:
        lock.release()
        busy.close()
    assert proc.returncode == 2
    assert "another engine is running" in proc.stderr and "metrics_port" not in proc.stderr
