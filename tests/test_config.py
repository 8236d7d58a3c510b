"""Config loading: safe defaults, and one clear line naming the key path for every mistake."""
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from karb.config import load_config, parse_config
from karb.schema import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def minimal(**overrides):
    data = {
        "markets": ["KRW-BTC"],
        "venues": {
            "upbit": {"rest_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1",
                      "taker_fee": "0.0005", "maker_fee": "0.0005"},
            "bithumb": {"rest_url": "http://127.0.0.1:2", "ws_url": "ws://127.0.0.1:2",
                        "taker_fee": "0.0004", "maker_fee": "0.0004"},
        },
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize("name", ["default.yaml", "sim.yaml"])
def test_shipped_configs_load_in_dry_run(name):
    config = load_config(ROOT / "config" / name)
    assert config.mode == "dry_run"
    assert config.markets


def test_sim_config_spans_price_bands_from_sub_won_to_btc():
    config = load_config(ROOT / "config" / "sim.yaml")
    prices = [m.price for m in config.sim.markets.values()]
    assert len(config.markets) >= 10
    assert min(prices) < 1 and max(prices) > 100_000_000


def test_defaults_with_minimal_config_are_safe():
    config = parse_config(minimal())
    assert config.mode == "dry_run"
    assert config.execution.leg_type == "ioc_limit"
    assert config.risk.circuit_failures == 5
    assert config.feed.watchdog_s == 60
    assert config.venues.upbit.taker_fee == Decimal("0.0005")
    assert config.venues.bithumb.api == "v2"


def test_float_fee_with_yaml_number_stays_exact_decimal():
    data = minimal()
    data["venues"]["upbit"]["taker_fee"] = 0.0005
    assert parse_config(data).venues.upbit.taker_fee == Decimal("0.0005")


@pytest.mark.parametrize(
    "mutate,expected",
    [
        (lambda d: d["venues"]["upbit"].update(rest_ulr="x"), "venues.upbit.rest_ulr: unknown key"),
        (lambda d: d.update(stratgy={}), "stratgy: unknown key"),
        (lambda d: d.update(strategy={"threshold_bps": "wide"}), "strategy.threshold_bps: expected a number"),
        (lambda d: d.update(risk={"max_trade_krw": -5}), "risk.max_trade_krw: must not be negative"),
        (lambda d: d.update(strategy={"max_volume": {"KRW-BTC": "-0.1"}}), "strategy.max_volume.KRW-BTC: must not be negative"),
        (lambda d: d.update(execution={"workers": 0}), "execution.workers: must be at least 2"),
        (lambda d: d.update(execution={"workers": True}), "execution.workers: expected a number"),
        (lambda d: d.update(mode="yolo"), "mode: must be one of dry_run, live"),
        (lambda d: d["venues"]["bithumb"].pop("ws_url"), "venues.bithumb.ws_url: required key is missing"),
        (lambda d: d.pop("markets"), "markets: required key is missing"),
        (lambda d: d.update(markets=["BTC-KRW"]), "markets[0]: expected a KRW market"),
        (lambda d: d.update(markets=[]), "markets: at least one market"),
        (lambda d: d.update(strategy={"max_volume": {"KRW-ETH": 1}}), "strategy.max_volume.KRW-ETH: not one of"),
        (lambda d: d.update(inventory={"bands": {"binance": {}}}), "inventory.bands.binance: unknown venue"),
        (lambda d: d.update(feed=[1]), "feed: expected a mapping"),
    ],
)
def test_parse_config_with_mistake_names_key_path(mutate, expected):
    data = minimal()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_load_config_with_invalid_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("markets: [KRW-BTC\nvenues: {", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.yaml: line"):
        load_config(path)


def test_load_config_with_missing_file_says_cannot_read(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "mutate,key",
    [
        (lambda d: d["venues"]["upbit"].update(read_timout=5), "venues.upbit.read_timout"),
        (lambda d: d.update(risk={"daily_loss_limit_krw": "lots"}), "risk.daily_loss_limit_krw"),
        (lambda d: d.update(strategy={"max_volume": {"KRW-BTC": -1}}), "strategy.max_volume.KRW-BTC"),
    ],
)
def test_cli_with_bad_config_exits_2_with_one_line_naming_key(tmp_path, mutate, key):
    data = minimal()
    mutate(data)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "markets", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "mutate,expected",
    [
        (lambda d: d.update(execution={"unwind_tolerance_bps": float("nan")}), "execution.unwind_tolerance_bps: expected a finite number"),
        (lambda d: d.update(execution={"fill_timeout_s": float("inf")}), "execution.fill_timeout_s: expected a finite number"),
        (lambda d: d.update(inventory={"skew_bps": float("nan")}), "inventory.skew_bps: expected a finite number"),
        (lambda d: d.update(execution={"workers": 1}), "execution.workers: must be at least 2"),
        (lambda d: d["venues"]["upbit"].update(rest_url="127.0.0.1:8080"), "venues.upbit.rest_url: expected a URL starting http:// or https:// with a host"),
        (lambda d: d["venues"]["bithumb"].update(ws_url="api.bithumb.com/pub"), "venues.bithumb.ws_url: expected a URL starting ws:// or wss:// with a host"),
        (lambda d: d["venues"]["bithumb"].update(ws_url="http://127.0.0.1:2"), "venues.bithumb.ws_url: expected a URL starting ws:// or wss:// with a host"),
        (lambda d: d["venues"]["upbit"].update(rest_url="https://"), "venues.upbit.rest_url: expected a URL starting http:// or https:// with a host"),
        (lambda d: d.update(journal={"path": ""}), "journal.path: must not be empty"),
    ],
)
def test_config_that_cannot_work_is_refused_naming_the_key(mutate, expected):
    data = minimal()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_config_with_journal_path_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^journal.path: is a directory"):
        parse_config(minimal(journal={"path": str(tmp_path)}))


def test_config_with_journal_path_under_a_file_is_refused_as_unwritable(tmp_path):
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"^journal.path: cannot be written"):
        parse_config(minimal(journal={"path": str(blocker / "sub" / "karb.sqlite")}))


@pytest.mark.skipif(sys.platform == "win32" or __import__("os").geteuid() == 0,
                    reason="root can write anywhere")
def test_config_with_journal_in_read_only_directory_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match=r"^journal.path: cannot be written"):
            parse_config(minimal(journal={"path": str(ro / "karb.sqlite")}))
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize(
    "yaml_patch,key",
    [
        ("execution: {unwind_tolerance_bps: .nan}\n", "execution.unwind_tolerance_bps"),
        ("execution: {workers: 1}\n", "execution.workers"),
        ("journal: {path: ''}\n", "journal.path"),
    ],
)
def test_run_with_config_that_cannot_work_exits_2_with_one_line(tmp_path, yaml_patch, key):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(minimal()) + yaml_patch, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "run", "--config", str(path),
                           "--duration", "0.1", "--no-panel"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in proc.stderr


def test_run_with_journal_path_that_is_a_directory_exits_2(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(minimal(journal={"path": str(tmp_path)})), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "run", "--config", str(path),
                           "--duration", "0.1", "--no-panel"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "journal.path" in proc.stderr and "Traceback" not in proc.stderr
