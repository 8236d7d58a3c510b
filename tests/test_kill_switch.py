"""Kill switch: file, signal, call and CLI all engage it; clearing resumes; listeners run."""
import os
import signal

from karb.cli import main as cli_main
from karb.killswitch import KillSwitch
from tests.conftest import wait_until


def test_check_with_kill_file_present_engages_and_with_file_removed_clears(tmp_path):
    events = []
    ks = KillSwitch(tmp_path / "KILL")
    ks.add_listener(lambda engaged, reason: events.append(engaged))
    assert not ks.check()
    (tmp_path / "KILL").write_text("operator went home\n")
    assert ks.check()
    assert "operator went home" in ks.reason
    (tmp_path / "KILL").unlink()
    assert not ks.check()
    assert events == [True, False]


def test_engage_writes_the_file_so_a_restart_stays_stopped(tmp_path):
    ks = KillSwitch(tmp_path / "var" / "KILL")
    ks.engage("loss limit")
    assert (tmp_path / "var" / "KILL").read_text().strip() == "loss limit"
    assert KillSwitch(tmp_path / "var" / "KILL").check()
    ks.clear()
    assert not ks.engaged and not (tmp_path / "var" / "KILL").exists()


def test_engage_with_unwritable_path_stays_engaged_in_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    ks = KillSwitch(blocker / "KILL")  # a directory that cannot exist
    ks.engage("test")
    assert ks.check()  # no file, but it does not silently clear
    ks.clear()
    assert not ks.check()


def test_listener_error_does_not_stop_other_listeners(tmp_path):
    seen = []
    ks = KillSwitch(tmp_path / "KILL")
    ks.add_listener(lambda engaged, reason: 1 / 0)
    ks.add_listener(lambda engaged, reason: seen.append(reason))
    ks.engage("x")
    assert seen == ["x"]


def test_thread_with_sigusr1_engages_without_acting_in_the_handler(tmp_path):
    ks = KillSwitch(tmp_path / "KILL", poll_s=5.0)  # long poll: only the signal can wake it
    previous = signal.getsignal(signal.SIGUSR1)
    ks.install_signal_handler(signal.SIGUSR1)
    ks.start()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        wait_until(lambda: ks.engaged, 3.0, message="kill switch engaged by signal")
        assert ks.reason == "signal SIGUSR1"
        assert (tmp_path / "KILL").exists()
    finally:
        ks.stop()
        signal.signal(signal.SIGUSR1, previous)
    assert not ks._thread.is_alive()


def test_thread_with_file_created_later_engages(tmp_path):
    ks = KillSwitch(tmp_path / "KILL", poll_s=0.01)
    ks.start()
    try:
        (tmp_path / "KILL").touch()
        wait_until(lambda: ks.engaged, 3.0, message="kill switch engaged by file")
    finally:
        ks.stop()


def test_kill_command_creates_and_clear_removes_the_configured_file(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    kill_file = tmp_path / "run" / "KILL"
    config.write_text(
        "markets: [KRW-BTC]\n"
        "venues:\n"
        "  upbit: {rest_url: 'http://127.0.0.1:1', ws_url: 'ws://127.0.0.1:1', taker_fee: '0.0005', maker_fee: '0.0005'}\n"
        "  bithumb: {rest_url: 'http://127.0.0.1:2', ws_url: 'ws://127.0.0.1:2', taker_fee: '0.0004', maker_fee: '0.0004'}\n"
        f"risk: {{kill_switch_file: '{kill_file}'}}\n")
    assert cli_main(["kill", "--config", str(config), "--reason", "manual stop"]) == 0
    assert kill_file.read_text().strip() == "manual stop"
    assert cli_main(["kill", "--config", str(config), "--clear"]) == 0
    assert not kill_file.exists()
    assert cli_main(["kill", "--config", str(config), "--clear"]) == 0  # already clear: fine
