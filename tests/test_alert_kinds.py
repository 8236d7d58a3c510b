"""The alert kinds a person must hear about: a halt naming its kind, a low coin balance, a market
held by a venue state, and the start-up and shutdown notices with the summary."""
import io
import json
import threading
from decimal import Decimal as D
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from karb import logs
from karb.alerts import Alerter
from karb.clock import NS_PER_S, ManualClock
from karb.config import parse_config
from karb.engine import Engine
from karb.exchanges.factory import make_client
from karb.metrics import render_metrics
from karb.model import Venue
from karb.risk import Risk
from karb.schema import ConfigError
from karb.sim.cluster import SimCluster
from karb.status import EngineSnapshot, render_panel
from tests.conftest import wait_until
from tests.trading_fixtures import MARKET, make_config, make_rules

ROOT = Path(__file__).resolve().parent.parent


def snap(**kw) -> EngineSnapshot:
    return EngineSnapshot(mode="sim", uptime_s=1, feeds={}, markets=kw.pop("markets", []), **kw)


def test_a_risk_halt_alerts_once_per_kind_naming_it_and_rearms_after_resume(tmp_path):
    config = make_config(tmp_path, risk={"max_stale_s": 60})
    clock = ManualClock()
    risk = Risk(config, make_rules(config), clock)
    alerter = Alerter(None, D(0), 60.0)
    t0 = clock.monotonic_ns()
    risk.note_market_data(False, t0)
    risk.note_market_data(False, t0 + 61 * NS_PER_S)  # stale for longer than max_stale_s
    risk.halt("drawdown 300000 KRW reached the limit 300000", key="drawdown")

    def check():
        return alerter.check(snap(trading_state=risk.state.value, halts=risk.summary()["halts"]))

    fired = {a.key: a.message for a in check()}
    assert set(fired) == {"stale market data", "drawdown"}
    assert fired["stale market data"].startswith("trading HALTED (stale market data): market data "
                                                 "stale for 61 s") and "karb resume" in fired["drawdown"]
    assert check() == []  # the same episode
    risk.resume()
    assert check() == []
    risk.halt("daily realised loss 200001 KRW reached the limit 200000", key="daily loss")
    assert [(a.kind, a.key) for a in check()] == [("halted", "daily loss")]


def test_low_coin_balance_alerts_per_venue_and_asset_and_rearms_on_clear():
    alerter = Alerter(None, D("100000"), 60.0, low_balance={"BTC": D("0.01"), "XRP": D("500")})
    low = snap(balances={"upbit": {"KRW": D("5000000"), "BTC": D("0.004"), "XRP": D("1000")},
                         "bithumb": {"KRW": D("50000"), "BTC": D("0.5"), "XRP": D("20")}})
    fired = {a.key: a.message for a in alerter.check(low)}
    assert fired == {"upbit BTC": "upbit BTC balance 0.004 below 0.01",
                     "bithumb KRW": "bithumb KRW balance 50,000 below 100,000",
                     "bithumb XRP": "bithumb XRP balance 20 below 500"}
    assert alerter.check(low) == []
    topped_up = snap(balances={"upbit": {"KRW": D("5000000"), "BTC": D("0.02"), "XRP": D("1000")},
                               "bithumb": {"KRW": D("50000"), "BTC": D("0.5"), "XRP": D("20")}})
    assert alerter.check(topped_up) == []
    assert [a.key for a in alerter.check(low)] == ["upbit BTC"]  # re-armed on clear


def test_low_balance_config_takes_coins_and_refuses_krw_there():
    venue = {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9",
             "taker_fee": "0.0005", "maker_fee": "0.0005"}
    base = {"markets": ["KRW-BTC"], "venues": {"upbit": venue, "bithumb": venue}}
    config = parse_config({**base, "monitor": {"low_balance": {"BTC": "0.01"}}})
    assert config.monitor.low_balance == {"BTC": D("0.01")}
    with pytest.raises(ConfigError, match=r"^monitor.low_balance.KRW: .*low_balance_krw"):
        parse_config({**base, "monitor": {"low_balance": {"KRW": "1"}}})


class _Client:
    def __init__(self, venue):
        self.venue = venue

    def close(self):
        pass


def test_a_market_held_by_a_venue_state_is_skipped_shown_and_alerted_once(tmp_path):
    config = parse_config({
        "markets": [MARKET],
        "venues": {v: {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9",
                       "taker_fee": "0.0005", "maker_fee": "0.0005"} for v in ("upbit", "bithumb")},
        "journal": {"path": str(tmp_path / "j.sqlite")}, "monitor": {"metrics_port": 0},
        "risk": {"kill_switch_file": str(tmp_path / "KILL")}})
    engine = Engine(config, {v: _Client(v) for v in Venue}, "dry_run")
    try:
        engine.strategy.set_venue_state(Venue.BITHUMB, MARKET, "deposits and withdrawals suspended")
        now = engine.clock.monotonic_ns()
        for second in (0, 200, 400):  # longer than risk.max_stale_s (300): held is not stale
            t = now + second * NS_PER_S
            engine.board.get(Venue.UPBIT, MARKET).apply_snapshot([(141e6, 1.0)], [(142e6, 1.0)], 1, t)
            engine.board.get(Venue.BITHUMB, MARKET).apply_snapshot([(139e6, 1.0)], [(140e6, 1.0)], 1, t)
            assert engine.strategy.evaluate(t) == []  # a 1.3% gap, not traded
        assert engine.strategy.last_reason[MARKET] == \
            "venue state: bithumb deposits and withdrawals suspended"
        assert engine.risk.state.value == "active"
        alerter = Alerter(None, D(0), 60.0)
        s = engine.snapshot()
        (alert,) = alerter.check(s)
        assert (alert.kind, alert.key) == ("market_skipped", MARKET)
        assert alert.message == f"{MARKET} not traded: bithumb deposits and withdrawals suspended"
        assert f"{MARKET} held: bithumb deposits" in render_panel(s)
        assert f'karb_market_held{{market="{MARKET}",reason="venue_state"}} 1.0' in render_metrics(s)
        assert alerter.check(engine.snapshot()) == []
        engine.strategy.set_venue_state(Venue.BITHUMB, MARKET, None)
        assert alerter.check(engine.snapshot()) == []
        engine.strategy.set_venue_state(Venue.BITHUMB, MARKET, "trading suspended")
        assert [a.kind for a in alerter.check(engine.snapshot())] == ["market_skipped"]
    finally:
        engine.market_data.stop(1.0)


class _Telegram:
    """A loopback Bot API server: records sendMessage bodies by path."""

    def __init__(self):
        self.posts: list[tuple[str, dict]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                posts.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                body = b'{"ok":true,"result":{"message_id":1}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, name="test-telegram", daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def texts(self):
        return [body["text"] for _, body in self.posts]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.integration
def test_engine_sends_startup_and_shutdown_notices_with_the_summary_to_telegram(tmp_path, monkeypatch):
    token, chat = "987654:AAE-engine-test-token", "424242"
    telegram = _Telegram()
    monkeypatch.setenv("KARB_TELEGRAM_BOT_TOKEN", token)
    monkeypatch.setenv("KARB_TELEGRAM_CHAT_ID", chat)
    data = yaml.safe_load((ROOT / "config" / "sim.yaml").read_text())
    data["markets"] = [MARKET]
    data["sim"]["markets"] = {MARKET: data["sim"]["markets"][MARKET]}
    data["journal"] = {"path": str(tmp_path / "j.sqlite")}
    data["risk"]["kill_switch_file"] = str(tmp_path / "KILL")
    data["log"] = {"file": None}
    data["monitor"] = {"metrics_port": 0, "telegram_api_url": telegram.base}
    config = parse_config(data)
    try:
        with SimCluster.from_config(config).start() as cluster:
            config = cluster.apply_to(config)
            clients = {v: make_client(v, config, cluster.credentials(v)) for v in Venue}
            engine = Engine(config, clients, "sim", out=io.StringIO(), panel=False)
            engine.start()
            try:
                wait_until(lambda: telegram.posts, timeout=10, message="start-up notice")
            finally:
                engine.stop()
            wait_until(lambda: len(telegram.posts) >= 2, timeout=10, message="shutdown notice")
    finally:
        telegram.close()
        logs._secrets = tuple(s for s in logs._secrets if s not in (token, chat))
    paths = {path for path, _ in telegram.posts}
    assert paths == {f"/bot{token}/sendMessage"}
    started, stopped = telegram.texts()[:2]
    assert started.startswith("K-Arb INFO startup [engine]\nK-Arb started (sim, ")
    assert stopped.startswith("K-Arb INFO shutdown [engine]\nK-Arb stopped (sim, ")
    for text in (started, stopped):
        assert "realised PnL" in text and "upbit: BTC" in text and "residual exposure: none" in text
    assert engine.alerter.stats()["fired"] == {"startup": 1, "shutdown": 1}
