"""Prometheus text-format metrics endpoint on loopback (``GET /metrics``).

The body is rendered from the latest ``EngineSnapshot`` (swapped by reference), so a scrape
never takes an engine lock. Thread: ``metrics`` (stdlib ``ThreadingHTTPServer``).
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from loguru import logger

from karb.status import EngineSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CIRCUIT_STATES = ("closed", "open", "half_open")


def _labels(**labels: str) -> str:
    parts = []
    for key, value in labels.items():
        escaped = str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append(f'{key}="{escaped}"')
    return "{" + ",".join(parts) + "}" if parts else ""


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._declared: set[str] = set()

    def metric(self, name: str, kind: str, help_text: str, value: float, /, **labels: str) -> None:
        # positional-only: a label may be called "kind" or "name"
        if name not in self._declared:
            self._declared.add(name)
            self.lines.append(f"# HELP {name} {help_text}")
            self.lines.append(f"# TYPE {name} {kind}")
        self.lines.append(f"{name}{_labels(**labels)} {float(value)!r}")


def render_metrics(s: EngineSnapshot) -> str:
    """Return the Prometheus exposition text for one snapshot."""
    w = _Writer()
    w.metric("karb_up", "gauge", "1 while the engine runs.", 1)
    w.metric("karb_uptime_seconds", "gauge", "Seconds since start.", s.uptime_s)
    for m in s.markets:
        for direction, bps in sorted(m.net_bps.items()):
            if bps is not None:
                w.metric("karb_spread_net_bps", "gauge", "Best executable net edge, basis points.",
                         bps, market=m.market, direction=direction)
    for m in s.markets:
        for venue, age in sorted(m.book_age_ms.items()):
            if age is not None:
                w.metric("karb_book_age_seconds", "gauge", "Age of the book's last update.",
                         age / 1000, market=m.market, venue=venue)
    w.metric("karb_signals_total", "counter", "Signals produced.", s.signals)
    for result, count in (("success", s.successes), ("shortfall", s.shortfalls),
                          ("failure", s.failures)):
        w.metric("karb_trades_total", "counter", "Two-leg trades by outcome.", count, result=result)
    if s.success_rate is not None:
        w.metric("karb_trade_success_ratio", "gauge", "Successful trades / finished trades.", s.success_rate)
    w.metric("karb_consecutive_failures", "gauge", "Consecutive failed trades.", s.consecutive_failures)
    w.metric("karb_realised_pnl_krw", "gauge", "Realised PnL, KRW.", float(s.realised_pnl_krw))
    w.metric("karb_fees_krw", "counter", "Fees paid, KRW.", float(s.fees_krw))
    for venue, balances in sorted(s.balances.items()):
        for ccy, amount in sorted(balances.items()):
            w.metric("karb_balance", "gauge", "Venue balance (free to trade, incl. what open trades hold) by venue and currency.",
                     float(amount), venue=venue, currency=ccy)
    for index, name, help_text in ((0, "karb_inventory_share", "Share of an asset held on a venue (0..1)."),
                                   (1, "karb_inventory_target_share", "Target share of an asset on a venue.")):
        for asset, shares in sorted(s.inventory.items()):  # one family's samples together
            for venue, pair in sorted(shares.items()):
                w.metric(name, "gauge", help_text, pair[index], asset=asset, venue=venue)
    for asset, amount in sorted(s.residual.items()):
        w.metric("karb_residual_exposure", "gauge", "Unhedged coin left by failed legs.",
                 float(amount), asset=asset)
    for venue, f in sorted(s.feeds.items()):
        w.metric("karb_feed_connected", "gauge", "1 if the feed is connected.",
                 1 if f.state == "connected" else 0, venue=venue)
        if f.last_message_age_s is not None:
            w.metric("karb_feed_lag_seconds", "gauge", "Seconds since the feed's last message.",
                     f.last_message_age_s, venue=venue)
        w.metric("karb_feed_messages_total", "counter", "Messages received.", f.messages, venue=venue)
        w.metric("karb_feed_reconnects_total", "counter", "Reconnects.", f.reconnects, venue=venue)
        w.metric("karb_feed_decode_errors_total", "counter", "Frames dropped as bad.",
                 f.decode_errors, venue=venue)
        w.metric("karb_feed_down_seconds", "gauge", "Seconds since the feed last delivered data.",
                 f.down_for_s, venue=venue)
    for stage, (p50, p99) in sorted(s.latencies_us.items()):
        w.metric("karb_stage_latency_seconds", "gauge", "Stage latency percentiles.",
                 p50 / 1e6, stage=stage, quantile="0.5")
        w.metric("karb_stage_latency_seconds", "gauge", "Stage latency percentiles.",
                 p99 / 1e6, stage=stage, quantile="0.99")
    _rate_limit_metrics(w, s)
    for state in CIRCUIT_STATES:
        w.metric("karb_circuit_state", "gauge", "Circuit breaker state (1 = current).",
                 1 if s.circuit == state else 0, state=state)
    w.metric("karb_journal_errors_total", "counter", "Journal writes that failed.", s.journal_errors)
    w.metric("karb_recorder_failed", "gauge", "1 if frame recording stopped on an error.",
             1 if s.recorder_error else 0)
    w.metric("karb_halted", "gauge", "1 if trading is halted or killed.",
             0 if s.trading_state == "active" else 1)
    for kind in sorted(s.halts):
        w.metric("karb_halt_active", "gauge", "1 per active halt, by kind.", 1, kind=kind)
    for m in s.markets:
        for reason, hold in (("venue_state", m.venue_state), ("sanity", m.sanity)):
            w.metric("karb_market_held", "gauge", "1 while a market is held from trading, by why.",
                     1 if hold else 0, market=m.market, reason=reason)
    for kind, count in sorted(s.alerts_fired.items()):
        w.metric("karb_alerts_total", "counter", "Alerts fired, by kind.", count, kind=kind)
    for notifier, count in sorted(s.alert_failures.items()):
        w.metric("karb_alert_delivery_failures_total", "counter",
                 "Alerts a notifier could not deliver after its retries.", count, notifier=notifier)
    return "\n".join(w.lines) + "\n"


def _rate_limit_metrics(w: _Writer, s: EngineSnapshot) -> None:
    """Each venue's REST request windows: use of the current window, waits, 429s."""
    rows = [(venue, group, st) for venue, groups in sorted(s.rate_limits.items())
            for group, st in sorted(groups.items())]
    for venue, group, st in rows:
        w.metric("karb_ratelimit_limit", "gauge", "Requests the group allows per window.",
                 st.limit, venue=venue, group=group)
    for venue, group, st in rows:
        w.metric("karb_ratelimit_window_seconds", "gauge", "Length of the group's window.",
                 st.window_s, venue=venue, group=group)
    for venue, group, st in rows:
        w.metric("karb_ratelimit_used", "gauge",
                 "Requests in the group's current window, in flight included.",
                 st.used, venue=venue, group=group)
    for venue, group, st in rows:
        w.metric("karb_ratelimit_used_ratio", "gauge", "Requests in the current window / limit.",
                 st.used / st.limit, venue=venue, group=group)
    for venue, group, st in rows:
        w.metric("karb_ratelimit_requests_total", "counter", "Requests sent through the group.",
                 st.requests, venue=venue, group=group)
    for venue, group, st in rows:
        w.metric("karb_ratelimit_waits_total", "counter", "Requests that waited for a slot.",
                 st.waits, venue=venue, group=group)
    for venue, group, st in rows:
        w.metric("karb_ratelimit_wait_seconds_total", "counter", "Seconds spent waiting for slots.",
                 st.wait_s, venue=venue, group=group)
    for venue, group, st in rows:
        w.metric("karb_ratelimit_429_total", "counter", "HTTP 429/418 answers from the venue.",
                 st.rate_limited, venue=venue, group=group)
    for venue, group, st in rows:
        w.metric("karb_ratelimit_venue_corrections_total", "counter",
                 "Remaining-Req answers that said fewer calls were left than we counted.",
                 st.venue_corrections, venue=venue, group=group)
    bans = sorted(s.rate_limit_bans.items())
    for venue, ban in bans:
        w.metric("karb_ratelimit_blocked_seconds", "gauge",
                 "Seconds the venue's HTTP 418 block still closes all its request groups.",
                 ban.blocked_for_s, venue=venue)
    for venue, ban in bans:
        w.metric("karb_ratelimit_bans_total", "counter", "HTTP 418 blocks the venue answered.",
                 ban.bans, venue=venue)


class MetricsServer:
    """Serve ``render_metrics(latest())`` at ``http://host:port/metrics`` (thread ``metrics``)."""

    def __init__(self, host: str, port: int, latest: Callable[[], EngineSnapshot | None]):
        latest_fn = latest

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (stdlib name)
                snapshot = latest_fn()
                if self.path.split("?")[0] != "/metrics" or snapshot is None:
                    self.send_error(404 if snapshot is not None else 503)
                    return
                body = render_metrics(snapshot).encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # scrapes are not log-worthy
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/metrics"

    def start(self) -> "MetricsServer":
        self._thread.start()
        logger.info("metrics at {}", self.url)
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout_s)
