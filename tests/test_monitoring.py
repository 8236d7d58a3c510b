"""Status panel, Prometheus endpoint and alert webhooks, all driven by one EngineSnapshot."""
import io
import json
import os
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from loguru import logger
from prometheus_client.parser import text_string_to_metric_families

from karb.alerts import Alerter
from karb.config import RateLimitConfig
from karb.exchanges.ratelimit import Group, RateLimiter
from karb.metrics import MetricsServer, render_metrics
from karb.status import EngineSnapshot, FeedStatus, MarketStatus, render_line, render_panel
from tests.conftest import wait_until
from tests.exchanges_support import FakeClock


def snapshot(**overrides) -> EngineSnapshot:
    base = dict(
        mode="sim",
        uptime_s=12.5,
        feeds={"upbit": FeedStatus("connected", 1200, 100.5, 1, 2, 0.01),
               "bithumb": FeedStatus("connected", 1100, 99.0, 0, 0, 0.02)},
        markets=[MarketStatus("KRW-BTC", {"upbit": 12.0, "bithumb": 30.0},
                              {"upbit": True, "bithumb": True},
                              {"upbit_sell": 4.5, "bithumb_sell": -22.1})],
        signals=7, trades=6, successes=5, failures=1, realised_pnl_krw=Decimal("12345.5"),
        fees_krw=Decimal("321.25"),
        balances={"upbit": {"KRW": Decimal("50000000"), "BTC": Decimal("1.5")},
                  "bithumb": {"KRW": Decimal("49000000"), "BTC": Decimal("0.5")}},
        latencies_us={"book_to_signal": (35.0, 120.0), "signal_to_sent": (400.0, 900.0)},
    )
    base.update(overrides)
    return EngineSnapshot(**base)


def test_render_metrics_parses_with_prometheus_parser_and_carries_values():
    families = {f.name: f for f in text_string_to_metric_families(render_metrics(snapshot()))}
    spread = {tuple(sorted(s.labels.items())): s.value for s in families["karb_spread_net_bps"].samples}
    assert spread[(("direction", "upbit_sell"), ("market", "KRW-BTC"))] == 4.5
    assert families["karb_trade_success_ratio"].samples[0].value == pytest.approx(5 / 6)
    balances = {(s.labels["venue"], s.labels["currency"]): s.value for s in families["karb_balance"].samples}
    assert balances[("bithumb", "BTC")] == 0.5
    circuit = {s.labels["state"]: s.value for s in families["karb_circuit_state"].samples}
    assert circuit == {"closed": 1.0, "open": 0.0, "half_open": 0.0}
    lat = {(s.labels["stage"], s.labels["quantile"]): s.value for s in families["karb_stage_latency_seconds"].samples}
    assert lat[("signal_to_sent", "0.99")] == pytest.approx(900e-6)
    assert families["karb_feed_reconnects"].samples[0].value in (0.0, 1.0)


def test_render_metrics_shows_each_rate_limit_groups_use_waits_and_429s():
    clock = FakeClock()
    limiter = RateLimiter(RateLimitConfig(public_per_s=10, private_per_s=30, order_per_s=8),
                          clock, clock.wait)
    for _ in range(11):  # the eleventh waits for the next window
        with limiter.slot(Group.PUBLIC):
            pass
    limiter.windows[Group.ORDER].acquire()  # in flight
    limiter.penalise(Group.PRIVATE)
    stats = {"upbit": {g.value: st for g, st in limiter.stats().items()}}

    families = {f.name: f for f in text_string_to_metric_families(
        render_metrics(snapshot(rate_limits=stats)))}

    def value(name, group):
        return next(s.value for s in families[name].samples
                    if s.labels == {"venue": "upbit", "group": group} and s.name.startswith(name))
    assert value("karb_ratelimit_limit", "order") == 8
    assert value("karb_ratelimit_used", "public") == 1
    assert value("karb_ratelimit_used_ratio", "order") == pytest.approx(1 / 8)
    assert value("karb_ratelimit_requests", "public") == 11
    assert value("karb_ratelimit_waits", "public") == 1
    assert value("karb_ratelimit_wait_seconds", "public") == pytest.approx(1.01)
    assert value("karb_ratelimit_429", "private") == 1
    assert value("karb_ratelimit_429", "public") == 0


def test_a_418_block_shows_in_metrics_and_the_panel_and_raises_the_rate_limit_ban_alert():
    clock = FakeClock()
    limiter = RateLimiter(RateLimitConfig(), clock, clock.wait)
    limiter.ban(Group.PRIVATE)
    clock.now += 15
    s = snapshot(rate_limit_bans={"upbit": limiter.ban_stats()})

    families = {f.name: f for f in text_string_to_metric_families(render_metrics(s))}
    blocked = families["karb_ratelimit_blocked_seconds"].samples
    assert [(x.labels, x.value) for x in blocked] == [({"venue": "upbit"}, pytest.approx(45.0))]
    assert families["karb_ratelimit_bans"].samples[0].value == 1
    assert "UPBIT BLOCKED US (HTTP 418) for 45s more" in render_panel(s)
    alerter = Alerter(None, Decimal(0), 60.0)
    (alert,) = [a for a in alerter.check(s) if a.kind == "rate_limit_ban"]
    assert alert.key == "upbit" and alert.severity == "critical" and "45s more" in alert.message
    clock.now += 45  # the block is over: the alert re-arms
    assert not [a for a in alerter.check(snapshot(rate_limit_bans={"upbit": limiter.ban_stats()}))
                if a.kind == "rate_limit_ban"]


def test_metrics_server_on_loopback_scrapes_cleanly():
    server = MetricsServer("127.0.0.1", 0, lambda: snapshot()).start()
    try:
        response = requests.get(server.url, timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        names = {f.name for f in text_string_to_metric_families(response.text)}
        assert {"karb_up", "karb_feed_lag_seconds", "karb_realised_pnl_krw"} <= names
        assert requests.get(server.url.replace("/metrics", "/other"), timeout=5).status_code == 404
    finally:
        server.stop()


def test_render_panel_and_line_show_feeds_spreads_and_pnl():
    panel = render_panel(snapshot(halt_reason="kill switch", trading_state="killed"))
    assert "upbit" in panel and "KRW-BTC" in panel and "+4.5" in panel
    assert "12,346 KRW" in panel and "HALT: kill switch" in panel and "83.3%" in panel
    line = render_line(snapshot())
    assert "\n" not in line and "best_net=+4.5bps" in line and "trades=6" in line


class _Receiver:
    """A loopback webhook receiver collecting JSON bodies."""

    def __init__(self):
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-webhook", daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_alerter_with_every_condition_posts_each_alert_type_once():
    receiver = _Receiver()
    alerter = Alerter(receiver.url, low_balance_krw=Decimal("1000000"), feed_down_s=60).start()
    bad = snapshot(
        balances={"upbit": {"KRW": Decimal("500")}, "bithumb": {"KRW": Decimal("5000000")}},
        consecutive_failures=5,
        feeds={"upbit": FeedStatus("reconnecting", down_for_s=61.0), "bithumb": FeedStatus("connected")},
        residual={"BTC": Decimal("0.0012")},
        circuit="open",
    )
    try:
        first = alerter.check(bad)
        again = alerter.check(bad)  # still true: not fired twice
        wait_until(lambda: len(receiver.bodies) == 5, message="5 webhook posts")
    finally:
        alerter.stop()
        receiver.close()
    kinds = sorted(b["kind"] for b in receiver.bodies)
    assert kinds == ["circuit_open", "feed_down", "low_balance", "order_failures", "residual_exposure"]
    assert len(first) == 5 and again == []
    assert all(b["source"] == "karb" and b["message"] for b in receiver.bodies)


def test_alerter_with_cleared_condition_rearms():
    alerter = Alerter(None, low_balance_krw=Decimal("1000"), feed_down_s=60)
    low = snapshot(balances={"upbit": {"KRW": Decimal("1")}})
    ok = snapshot()
    assert [a.kind for a in alerter.check(low)] == ["low_balance"]
    assert alerter.check(ok) == []
    assert [a.kind for a in alerter.check(low)] == ["low_balance"]


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_monitor_on_terminal_redraws_panel_with_log_tail(monkeypatch):
    from karb.config import MonitorConfig
    from karb.monitor import CLEAR_HOME, Monitor

    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=None: os.terminal_size((100, 60)))
    out = _Tty()
    monitor = Monitor(MonitorConfig(status_interval_s=0.01, metrics_port=0), snapshot, out=out)
    monitor.log_sink("12:00:00.000 INFO strategy Signal upbit_sell KRW-BTC\n")
    monitor.start()
    try:
        wait_until(lambda: out.getvalue().count(CLEAR_HOME) >= 2, message="two redraws")
    finally:
        monitor.stop()
    frame = out.getvalue().split(CLEAR_HOME)[-1]
    assert monitor.panel and "K-Arb  mode=sim" in frame and frame.rstrip().endswith("Signal upbit_sell KRW-BTC")
    assert monitor.latest is not None and monitor.latest.trades == 6


def test_monitor_off_terminal_logs_status_lines_and_survives_a_failing_snapshot():
    from karb.config import MonitorConfig
    from karb.monitor import Monitor

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return snapshot()

    lines = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO", format="{message}")
    monitor = Monitor(MonitorConfig(status_interval_s=0.01, metrics_port=0), flaky, out=io.StringIO(),
                      line_every_s=0.0)
    monitor.start()
    try:
        wait_until(lambda: any(line.startswith("status active") for line in lines), message="a status line")
    finally:
        monitor.stop()
        logger.remove(sink)
    assert not monitor.panel and len(calls) >= 2


def test_monitor_with_busy_metrics_port_is_a_config_error_naming_the_key():
    from karb.config import MonitorConfig
    from karb.monitor import Monitor
    from karb.schema import ConfigError

    server = MetricsServer("127.0.0.1", 0, lambda: None)
    port = int(server.url.split(":")[2].split("/")[0])
    try:
        with pytest.raises(ConfigError, match="monitor.metrics_port: cannot listen"):
            Monitor(MonitorConfig(metrics_port=port), snapshot)
    finally:
        server._server.server_close()


def test_alert_halted_fires_once_naming_the_reason_and_karb_resume():
    alerter = Alerter(None, Decimal("100000"), 60.0)
    halted = snapshot(trading_state="halted", halt_reason="daily realised loss 200000 KRW")
    (alert,) = [a for a in alerter.check(halted) if a.kind == "halted"]
    assert "daily realised loss" in alert.message and "karb resume" in alert.message
    assert not [a for a in alerter.check(halted) if a.kind == "halted"]  # once per episode


def test_alert_unresolved_orders_names_the_orders_that_may_still_fill():
    alerter = Alerter(None, Decimal("100000"), 60.0)
    s = snapshot(unresolved=["abc123s on upbit (acknowledged)"])
    (alert,) = [a for a in alerter.check(s) if a.kind == "unresolved_orders"]
    assert "abc123s on upbit" in alert.message
    assert "UNRESOLVED" in render_panel(s) and "unresolved=1" in render_line(s)


def test_alert_residual_within_tolerance_is_dust_and_does_not_page():
    alerter = Alerter(None, Decimal("100000"), 60.0, residual_tolerance_krw=Decimal("5000"))
    dust = snapshot(residual={"BTC": Decimal("0.00000002")}, residual_krw={"BTC": Decimal("2.8")})
    assert not [a for a in alerter.check(dust) if a.kind == "residual_exposure"]
    real = snapshot(residual={"BTC": Decimal("0.01")}, residual_krw={"BTC": Decimal("1400000")})
    assert [a for a in alerter.check(real) if a.kind == "residual_exposure"]


def test_panel_and_line_count_refused_signals_apart():
    s = snapshot(signals=7, refused=3)
    assert "refused 3" in render_panel(s) and "refused=3" in render_line(s)


def test_engine_snapshot_carries_each_venue_clients_request_windows(tmp_path):
    from karb.config import parse_config
    from karb.engine import Engine
    from karb.model import Venue

    class Client:  # a venue client with its limiter; the Upbit and Bithumb clients expose one
        def __init__(self, venue):
            self.venue = venue
            self.limiter = RateLimiter(RateLimitConfig(public_per_s=10, private_per_s=30,
                                                       order_per_s=12))

        def close(self):
            pass

    config = parse_config({
        "markets": ["KRW-BTC"],
        "venues": {v: {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9",
                       "taker_fee": "0.0005", "maker_fee": "0.0005"} for v in ("upbit", "bithumb")},
        "journal": {"path": str(tmp_path / "j.sqlite")},
        "risk": {"kill_switch_file": str(tmp_path / "KILL")},
        "monitor": {"metrics_port": 0},
    })
    clients = {v: Client(v) for v in Venue}
    engine = Engine(config, clients, "dry_run")
    try:
        clients[Venue.UPBIT].limiter.windows[Group.ORDER].acquire()
        s = engine.snapshot()
    finally:
        engine.market_data.stop(1.0)

    assert set(s.rate_limits) == {"upbit", "bithumb"}
    assert s.rate_limits["upbit"]["order"].used == 1 and s.rate_limits["upbit"]["order"].limit == 12
    assert 'karb_ratelimit_used{venue="upbit",group="order"} 1.0' in render_metrics(s)


def test_inventory_shares_show_in_the_panel_and_metrics_beside_their_targets():
    s = snapshot(inventory={"BTC": {"upbit": (0.2, 0.5), "bithumb": (0.8, 0.5)},
                            "KRW": {"upbit": (0.5, 0.5), "bithumb": (0.5, 0.5)}})
    assert "BTC 20%/80% (target 50%/50%)" in render_panel(s)
    families = {f.name: f for f in text_string_to_metric_families(render_metrics(s))}
    shares = {(x.labels["asset"], x.labels["venue"]): x.value for x in families["karb_inventory_share"].samples}
    assert shares[("BTC", "upbit")] == 0.2 and shares[("BTC", "bithumb")] == 0.8
    targets = families["karb_inventory_target_share"].samples
    assert {x.value for x in targets} == {0.5}
