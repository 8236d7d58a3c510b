"""Engine lifecycle without venues: failed start-up stops cleanly; run's mode rules."""
import argparse
import os
import threading
from decimal import Decimal as D

import pytest
import yaml

from karb.commands.run import _mode
from karb.config import parse_config
from karb.engine import Engine
from karb.model import Venue
from karb.rules import MarketInfo
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


# --- the daily rules pass (review 3, defect 3) ----------------------------------------------

def _fee_config(tmp_path, markets):
    return parse_config({
        "markets": markets,
        "venues": {v: {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9",
                       "taker_fee": "0.0005", "maker_fee": "0.0005"} for v in ("upbit", "bithumb")},
        "journal": {"path": str(tmp_path / "j.sqlite")},
        "risk": {"kill_switch_file": str(tmp_path / "KILL")},
        "monitor": {"metrics_port": 0},
    })


def test_daily_rules_pass_never_plans_an_own_fee_market_at_the_venue_wide_fee(tmp_path, monkeypatch):
    """KRW-ETH on Upbit charges 0.25% (its own schedule, found by the fee check); the venue-wide
    read says 0.05%. While the daily pass re-reads the *next* venue (an HTTP call: 50 ms to
    seconds with retries), the strategy must still plan KRW-ETH at 0.25%, or it trades an edge
    that is a loss at the real fee."""
    from karb import engine as engine_module
    from karb.risk import taker_fee

    planned_while_reading_bithumb = []

    class Client:
        def __init__(self, venue):
            self.venue = venue

        def get_market_info(self, markets):
            if self.venue is Venue.BITHUMB:  # what the strategy would plan with meanwhile
                planned_while_reading_bithumb.append(
                    taker_fee(engine.config, engine.rules, Venue.UPBIT, "KRW-ETH"))
            return [MarketInfo(m, taker_fee=D("0.0005"), maker_fee=D("0.0005")) for m in markets]

        def get_market_fees(self, market):
            fee = D("0.0025") if (self.venue, market) == (Venue.UPBIT, "KRW-ETH") else D("0.0005")
            return MarketInfo(market, taker_fee=fee, maker_fee=fee)

        def close(self):
            pass

    monkeypatch.setattr(engine_module, "FEE_CHECK_INTERVAL_S", 0.0)
    engine = Engine(_fee_config(tmp_path, ["KRW-BTC", "KRW-ETH"]), {v: Client(v) for v in Venue},
                    "dry_run")
    try:
        engine._check_market_fees()
        assert taker_fee(engine.config, engine.rules, Venue.UPBIT, "KRW-ETH") == D("0.0025")
        planned_while_reading_bithumb.clear()
        engine._daily_rules_pass()
    finally:
        engine.market_data.stop(1.0)
    assert planned_while_reading_bithumb == [D("0.0025")], (
        "during the daily refresh KRW-ETH was planned at the venue-wide fee")


def test_daily_rules_pass_publishes_each_venue_once_with_the_new_ticks_and_the_own_fee(tmp_path,
                                                                                       monkeypatch):
    """The pass still takes what the venue says now (a new minimum order) for every market,
    the own fee stays on the market that has one, and each venue's rules change in one swap."""
    from karb import engine as engine_module
    from karb.exchanges.errors import VenueUnavailable

    class Client:
        def __init__(self, venue):
            self.venue, self.min_total, self.down = venue, D("5000"), False

        def get_market_info(self, markets):
            if self.down:
                raise VenueUnavailable(self.venue, "maintenance", "market_offline", 503)
            return [MarketInfo(m, taker_fee=D("0.0005"), maker_fee=D("0.0005"),
                               min_total=self.min_total) for m in markets]

        def get_market_fees(self, market):
            fee = D("0.0025") if (self.venue, market) == (Venue.UPBIT, "KRW-ETH") else D("0.0005")
            return MarketInfo(market, taker_fee=fee, maker_fee=fee)

        def close(self):
            pass

    monkeypatch.setattr(engine_module, "FEE_CHECK_INTERVAL_S", 0.0)
    clients = {v: Client(v) for v in Venue}
    engine = Engine(_fee_config(tmp_path, ["KRW-BTC", "KRW-ETH"]), clients, "dry_run")
    swaps = []
    update = engine.rules.update
    monkeypatch.setattr(engine.rules, "update",
                        lambda venue, infos: (swaps.append(venue), update(venue, infos)))
    try:
        engine._check_market_fees()
        swaps.clear()
        clients[Venue.UPBIT].min_total = D("6000")
        clients[Venue.BITHUMB].down = True  # its rules stay as they were
        engine._daily_rules_pass()
    finally:
        engine.market_data.stop(1.0)
    assert swaps == [Venue.UPBIT]
    eth = engine.rules.get(Venue.UPBIT, "KRW-ETH")
    assert (eth.taker_fee, eth.min_total) == (D("0.0025"), D("6000"))
    assert engine.rules.get(Venue.UPBIT, "KRW-BTC").min_total == D("6000")
    assert engine.rules.get(Venue.BITHUMB, "KRW-ETH").taker_fee == D("0.0005")


# --- alert secrets from a keys file the run does not need (review 3, defect 6) ----------------

class PublicClient:
    def __init__(self, venue):
        self.venue = venue

    def close(self):
        pass


def _keys_config(tmp_path, keys_file, mode="dry_run"):
    return parse_config({
        "markets": ["KRW-BTC"], "keys_file": str(keys_file), "mode": mode,
        "venues": {v: {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9",
                       "taker_fee": "0.0005", "maker_fee": "0.0005"} for v in ("upbit", "bithumb")},
        "journal": {"path": str(tmp_path / "j.sqlite")},
        "risk": {"kill_switch_file": str(tmp_path / "KILL")},
        "monitor": {"metrics_port": 0},
    })


def _open_keys_file(tmp_path):
    """A keys file with an ``alerts`` entry, left chmod 644."""
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"alerts": {"slack_webhook_url": "https://hooks.example/FILE"}}))
    os.chmod(path, 0o644)
    return path


def test_dry_run_with_a_missing_keys_file_still_builds_the_engine(tmp_path):
    """``karb run`` in dry-run mode catches ``SecretsError`` from ``load_credentials`` on
    purpose ("dry-run without keys: public data, paper balances"). The alerts merge added
    ``load_alert_secrets(config.keys_file)`` to ``Engine.__init__``, which raises the same
    ``SecretsError`` for a configured keys_file that does not exist (or is chmod 644), so the
    dry run (and ``run --sim`` with such a config) now exits 3 "keys error" before it starts."""
    config = _keys_config(tmp_path, tmp_path / "not-yet" / "keys.yaml")
    engine = Engine(config, {v: PublicClient(v) for v in Venue}, "dry_run")
    engine.market_data.stop(1.0)


@pytest.mark.parametrize("mode", ["dry_run", "sim"])
def test_an_open_keys_file_in_a_run_without_trading_keys_warns_and_alerts_use_the_environment(
        tmp_path, monkeypatch, mode):
    from loguru import logger

    path = _open_keys_file(tmp_path)
    monkeypatch.setenv("KARB_DISCORD_WEBHOOK_URL", "https://discord.example/api/webhooks/1/ENV")
    lines = []
    sink = logger.add(lambda m: lines.append((m.record["level"].name, m.record["message"])),
                      level="WARNING")
    try:
        engine = Engine(_keys_config(tmp_path, path), {v: PublicClient(v) for v in Venue}, mode)
    finally:
        logger.remove(sink)
    engine.market_data.stop(1.0)
    assert [n.name for n in engine.alerter.notifiers] == ["discord"]  # none from the file
    warned = [msg for level, msg in lines if level == "WARNING" and "alert secrets" in msg]
    assert len(warned) == 1
    assert str(path) in warned[0] and "chmod 600" in warned[0] and "FILE" not in warned[0]


def test_a_live_engine_with_an_open_keys_file_is_refused_naming_it(tmp_path):
    from karb.secrets import SecretsError

    path = _open_keys_file(tmp_path)
    with pytest.raises(SecretsError, match=r"readable by others .*chmod 600"):
        Engine(_keys_config(tmp_path, path, "live"), {v: PublicClient(v) for v in Venue}, "live")


def test_karb_run_live_with_an_open_keys_file_exits_3_naming_it_even_with_keys_in_the_environment(
        tmp_path, monkeypatch, capsys):
    from karb.cli import EXIT_KEYS, main

    path = _open_keys_file(tmp_path)
    for name in ("KARB_UPBIT_ACCESS_KEY", "KARB_UPBIT_SECRET_KEY", "KARB_BITHUMB_API_KEY",
                 "KARB_BITHUMB_SECRET_KEY"):
        monkeypatch.setenv(name, f"{name.lower()}-0123456789")
    config = tmp_path / "karb.yaml"
    data = {"markets": ["KRW-BTC"], "keys_file": str(path), "mode": "live",
            "venues": {v: {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9",
                           "taker_fee": "0.0005", "maker_fee": "0.0005"} for v in ("upbit", "bithumb")},
            "journal": {"path": str(tmp_path / "j.sqlite")}, "log": {"level": "INFO", "file": None},
            "risk": {"kill_switch_file": str(tmp_path / "KILL")}, "monitor": {"metrics_port": 0}}
    config.write_text(yaml.safe_dump(data))
    assert main(["run", "--live", "--no-panel", "--config", str(config)]) == EXIT_KEYS
    err = [line for line in capsys.readouterr().err.splitlines() if "keys" in line]
    assert err == [f"keys error: keys_file {path} is readable by others (mode 644); "
                   f"run: chmod 600 {path}"]


@pytest.mark.integration
def test_karb_run_sim_with_an_open_keys_file_runs_and_says_why_alerts_skip_it(tmp_path, capsys):
    from pathlib import Path

    from karb.cli import EXIT_OK, main

    path = _open_keys_file(tmp_path)
    root = Path(__file__).resolve().parent.parent
    data = yaml.safe_load((root / "config" / "sim.yaml").read_text(encoding="utf-8"))
    data.update({"keys_file": str(path), "journal": {"path": str(tmp_path / "j.sqlite")},
                 "log": {"level": "INFO", "file": None},
                 "risk": {**data.get("risk", {}), "kill_switch_file": str(tmp_path / "KILL")},
                 "monitor": {**data.get("monitor", {}), "metrics_port": 0}})
    config = tmp_path / "karb.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["run", "--sim", "--no-panel", "--config", str(config), "--duration", "1"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "keys error" not in err
    (warned,) = [line for line in err.splitlines() if "alert secrets from keys_file not loaded" in line]
    assert "WARNING" in warned and f"chmod 600 {path}" in warned


def test_inventory_targets_are_where_the_journal_first_saw_the_balances(tmp_path):
    """A restart with drained balances keeps the first start's targets (not today's)."""
    from karb.model import Balance

    def start(btc_up, btc_bt):
        engine = Engine(_config(tmp_path), {v: NoMarketsClient(v) for v in Venue}, "dry_run")
        engine.journal.start()
        try:
            balances = {Venue.UPBIT: {"BTC": Balance("BTC", D(btc_up)), "KRW": Balance("KRW", D(10**7))},
                        Venue.BITHUMB: {"BTC": Balance("BTC", D(btc_bt)), "KRW": Balance("KRW", D(10**7))}}
            for venue, venue_balances in balances.items():
                engine.risk.ledger.load(venue, venue_balances)
            engine._set_inventory_targets(balances)
            return engine.inventory
        finally:
            engine.journal.stop()

    first = start("1", "1")
    assert first.target_share(Venue.UPBIT, "BTC") == 0.5
    again = start("0.2", "1.8")  # the engine drained Upbit's BTC, then restarted
    assert again.target_share(Venue.UPBIT, "BTC") == 0.5
    assert again.threshold_bps("KRW-BTC", Venue.UPBIT, 10) == float("inf")  # at its floor (0.2)
