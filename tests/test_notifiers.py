"""Every alert kind reaches a loopback Telegram, Slack, Discord and JSON-webhook receiver in the
shape each service documents; retries, 429 waits, length limits and secret handling."""
import io
import json
import os
import threading
import time
from decimal import Decimal as D
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from loguru import logger

from karb import logs
from karb.alerts import Alert, Alerter, evaluate
from karb.config import parse_config
from karb.notifiers import (ATTEMPTS, DISCORD_CONTENT_MAX, TELEGRAM_TEXT_MAX, Discord, JsonWebhook,
                            Slack, Telegram, deliver, from_environment)
from karb.schema import ConfigError
from karb.secrets import SecretsError, load_alert_secrets
from karb.exchanges.ratelimit import BanStats
from karb.status import EngineSnapshot, FeedStatus, MarketStatus
from tests.conftest import wait_until

TOKEN = "123456789:AAH-test_token_value_xyz"
CHAT = "-1001234567890"
SLACK_PATH = "/services/T0000/B0000/slacksecretXXXX"
DISCORD_PATH = "/api/webhooks/4242/discordsecretYYYY"


class Receiver:
    """A loopback HTTP server recording each request; ``answers`` scripts the replies
    (status, headers, body), then 200 ``ok``."""

    def __init__(self):
        self.requests: list[dict] = []
        self.answers: list[tuple[int, dict, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append({"method": "POST", "path": self.path,
                                       "content_type": self.headers["Content-Type"],
                                       "json": json.loads(body)})
                status, headers, reply = outer.answers.pop(0) if outer.answers else (200, {}, b"ok")
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-receiver",
                                       daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


def make_notifier(service: str, base: str):
    return {
        "telegram": lambda: Telegram(TOKEN, CHAT, base),
        "slack": lambda: Slack(base + SLACK_PATH),
        "discord": lambda: Discord(base + DISCORD_PATH),
        "webhook": lambda: JsonWebhook(base + "/hook"),
    }[service]()


def check_shape(service: str, request: dict) -> str:
    """Assert the documented request shape; return the text a person reads."""
    assert request["method"] == "POST"
    assert request["content_type"] == "application/json"
    body = request["json"]
    if service == "telegram":  # https://core.telegram.org/bots/api#sendmessage
        assert request["path"] == f"/bot{TOKEN}/sendMessage"
        assert body["chat_id"] == CHAT
        assert 1 <= len(body["text"]) <= TELEGRAM_TEXT_MAX
        assert "parse_mode" not in body  # plain text: nothing in an alert can break parsing
        return body["text"]
    if service == "slack":  # https://api.slack.com/messaging/webhooks
        assert request["path"] == SLACK_PATH
        assert body["text"]
        (block,) = body["blocks"]
        assert block["type"] == "section" and block["text"]["type"] == "plain_text"
        assert 1 <= len(block["text"]["text"]) <= 3000
        return block["text"]["text"]
    if service == "discord":  # https://discord.com/developers/docs/resources/webhook#execute-webhook
        assert request["path"] == DISCORD_PATH
        assert 1 <= len(body["content"]) <= DISCORD_CONTENT_MAX
        assert body["username"] == "K-Arb" and body["allowed_mentions"] == {"parse": []}
        return body["content"]
    assert request["path"] == "/hook"
    assert {"kind", "key", "message", "severity", "source", "time"} <= set(body)
    return f"{body['kind']} {body['message']}"


def bad_snapshot() -> EngineSnapshot:
    """A snapshot in which every condition alert is true."""
    return EngineSnapshot(
        mode="sim", uptime_s=10,
        feeds={"upbit": FeedStatus("reconnecting", down_for_s=120.0)},
        markets=[MarketStatus("KRW-XRP", venue_state="bithumb deposit/withdrawal suspended")],
        consecutive_failures=6,
        balances={"upbit": {"KRW": D("5000"), "BTC": D("0.0001")}},
        residual={"BTC": D("0.01")}, residual_krw={"BTC": D("1400000")},
        unresolved=["abc on upbit (wait)"], circuit="open", trading_state="halted",
        halt_reason="daily realised loss 250000 KRW reached the limit 200000",
        halts={"daily loss": "daily realised loss 250000 KRW reached the limit 200000"},
        journal_errors=3, journal_failing=True, recorder_error="disk full",
        rate_limit_bans={"upbit": BanStats(blocked_for_s=55.0, bans=1, last_block_s=60.0)})


CONDITION_ALERTS = {a.kind: a for a in evaluate(bad_snapshot(), D("100000"), 60.0,
                                                low_balance={"BTC": D("0.01")})}
NOTICES = {
    "startup": Alert("startup", "engine", "K-Arb started (sim, 0s)\n  signals 0", "info"),
    "shutdown": Alert("shutdown", "engine", "K-Arb stopped (sim, 60s)\n  trades 3", "info"),
    "sanity_confirmed": Alert("sanity_confirmed", "KRW-BTC", "KRW-BTC upbit_sell: net +420.0 bps "
                              "on the feeds; REST books show +415.2 bps", "warning"),
    "sanity_refuted": Alert("sanity_refuted", "KRW-BTC", "KRW-BTC upbit_sell: net +5000.0 bps on "
                            "the feeds; REST books show +12.0 bps", "warning"),
}
ALL_KINDS = {**CONDITION_ALERTS, **NOTICES}
SERVICES = ("telegram", "slack", "discord", "webhook")


def test_the_bad_snapshot_raises_every_condition_kind():
    assert set(CONDITION_ALERTS) == {
        "low_balance", "order_failures", "feed_down", "residual_exposure", "halted",
        "market_skipped", "unresolved_orders", "circuit_open", "journal_error", "recorder_failed",
        "rate_limit_ban"}


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("kind", sorted(ALL_KINDS))
def test_each_alert_kind_reaches_each_receiver_in_the_documented_shape(receiver, service, kind):
    receiver.requests.clear()
    alerter = Alerter(None, D(0), 60.0, notifiers=[make_notifier(service, receiver.base)]).start()
    try:
        alert = ALL_KINDS[kind]
        alerter.notify(alert)
        wait_until(lambda: receiver.requests, message=f"{service} receives {kind}")
    finally:
        alerter.stop()
    (request,) = receiver.requests
    text = check_shape(service, request)
    assert kind in text and alert.message.splitlines()[0][:40].replace("&", "") in text.replace("&", "")
    assert alerter.notifiers[0].sent == 1 and alerter.notifiers[0].failed == 0


@pytest.mark.parametrize("service, limit", [("telegram", TELEGRAM_TEXT_MAX), ("discord", DISCORD_CONTENT_MAX),
                                            ("slack", 3000)])
def test_a_long_message_is_cut_to_the_services_limit_and_still_accepted(receiver, service, limit):
    receiver.requests.clear()
    notifier = make_notifier(service, receiver.base)
    alert = Alert("unresolved_orders", "all", "x" * 10_000 + "TAIL")
    import requests
    with requests.Session() as session:
        assert deliver(notifier, alert, session, 3.0)
    text = check_shape(service, receiver.requests[0])
    assert len(text) == limit and text.endswith("…") and "TAIL" not in text


def test_slack_text_escapes_the_three_control_characters(receiver):
    receiver.requests.clear()
    import requests
    with requests.Session() as session:
        deliver(make_notifier("slack", receiver.base), Alert("feed_down", "a<b>", "x & <y>"), session, 3.0)
    body = receiver.requests[0]["json"]
    assert "x &amp; &lt;y&gt;" in body["text"] and "<" not in body["text"]


@pytest.mark.parametrize("service, answer", [
    ("telegram", (429, {"Content-Type": "application/json"},
                  b'{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7",'
                  b'"parameters":{"retry_after":7}}')),
    ("slack", (429, {"Retry-After": "7"}, b"rate_limited")),
    ("discord", (429, {"Retry-After": "7", "Content-Type": "application/json"},
                 b'{"message":"You are being rate limited.","retry_after":7.0,"global":false}')),
])
def test_a_429_waits_what_the_service_asks_then_delivers_once(receiver, service, answer):
    receiver.requests.clear()
    receiver.answers[:] = [answer]
    waits = []
    notifier = make_notifier(service, receiver.base)
    import requests
    with requests.Session() as session:
        assert deliver(notifier, NOTICES["startup"], session, 3.0, sleep=waits.append)
    assert waits == [7.0] and len(receiver.requests) == 2 and notifier.sent == 1


def test_a_429_asking_for_too_long_is_given_up_and_counted(receiver):
    receiver.requests.clear()
    receiver.answers[:] = [(429, {"Retry-After": "3600"}, b"")]
    notifier, waits = make_notifier("discord", receiver.base), []
    import requests
    with requests.Session() as session:
        assert not deliver(notifier, NOTICES["startup"], session, 3.0, sleep=waits.append)
    assert waits == [] and notifier.failed == 1


def test_5xx_is_retried_with_backoff_a_bounded_number_of_times(receiver):
    receiver.requests.clear()
    receiver.answers[:] = [(502, {}, b"")] * ATTEMPTS
    notifier, waits = make_notifier("slack", receiver.base), []
    import requests
    with requests.Session() as session:
        assert not deliver(notifier, NOTICES["startup"], session, 3.0, sleep=waits.append)
    assert len(receiver.requests) == ATTEMPTS and waits == [0.5, 1.0] and notifier.failed == 1


def test_a_4xx_other_than_429_is_final(receiver):
    receiver.requests.clear()
    receiver.answers[:] = [(400, {}, b'{"ok":false,"description":"Bad Request: chat not found"}')]
    notifier = make_notifier("telegram", receiver.base)
    import requests
    with requests.Session() as session:
        assert not deliver(notifier, NOTICES["startup"], session, 3.0, sleep=lambda s: None)
    assert len(receiver.requests) == 1 and notifier.failed == 1


def test_a_slow_receiver_never_delays_the_caller():
    gate = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            gate.wait(5)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, name="test-slow", daemon=True).start()
    alerter = Alerter(None, D(0), 60.0, notifiers=[
        Discord(f"http://127.0.0.1:{server.server_address[1]}{DISCORD_PATH}")]).start()
    try:
        import time
        started = time.monotonic()
        for _ in range(20):
            alerter.notify(NOTICES["startup"])
        assert time.monotonic() - started < 0.5
    finally:
        gate.set()
        alerter.stop()
        server.shutdown()
        server.server_close()


def test_a_hung_notifier_does_not_delay_a_halt_alert_to_the_others():
    """A Discord webhook that accepts the connection and never answers (a hung receiver) sits
    first in the list; the Slack receiver is healthy. A trading halt must reach Slack promptly,
    not after every retry to the dead one (review 3, defect 4)."""
    import socket
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(16)  # connections complete in the backlog; nobody ever reads or answers
    good = Receiver()
    alerter = Alerter(None, D(0), 60.0, timeout_s=0.5,
                      notifiers=[Discord(f"http://127.0.0.1:{dead.getsockname()[1]}{DISCORD_PATH}"),
                                 Slack(good.base + SLACK_PATH)]).start()
    try:
        sent = time.monotonic()
        alerter.notify(Alert("halted", "daily_loss", "trading HALTED (daily_loss)"))
        deadline = sent + 6.0  # long enough to see when it does arrive
        while not good.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        delay = (time.monotonic() - sent) if good.requests else None
        assert delay is not None and delay < 1.0, (
            f"the halt alert reached the healthy receiver after {delay} s (None: not within 6 s)")
    finally:
        alerter.stop(0.1)
        dead.close()
        good.close()


def test_at_stop_a_dead_and_a_rate_limited_notifier_do_not_cost_the_shutdown_notice_to_the_others():
    """A hung Discord, and a Telegram answering 429 "retry after 20", hold queued alerts; stop
    must still hand the healthy Slack the alerts and the shutdown notice, each notifier draining
    its own queue in parallel within the one deadline, and return by that deadline."""
    import socket
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(16)
    limited, good = Receiver(), Receiver()
    limited.answers[:] = [(429, {"Content-Type": "application/json"},
                           b'{"ok":false,"error_code":429,"parameters":{"retry_after":20}}')] * 10
    alerter = Alerter(None, D(0), 60.0, timeout_s=3.0, notifiers=[
        Discord(f"http://127.0.0.1:{dead.getsockname()[1]}{DISCORD_PATH}"),
        Telegram(TOKEN, CHAT, limited.base), Slack(good.base + SLACK_PATH)]).start()
    try:
        assert sorted(c.thread.name for c in alerter._channels) == [
            "alerts-discord", "alerts-slack", "alerts-telegram"]
        for n in range(3):
            alerter.notify(Alert("feed_down", f"upbit{n}", "upbit feed down", "warning"))
        wait_until(lambda: limited.requests, message="telegram asked to wait")
        alerter.notify(NOTICES["shutdown"])
        started = time.monotonic()
        alerter.stop(1.5)
        took = time.monotonic() - started
    finally:
        dead.close()
    texts = [r["json"]["text"] for r in good.requests]
    assert len(texts) == 4 and "shutdown" in texts[-1], texts
    assert took < 1.8, f"stop took {took:.2f} s for a 1.5 s deadline"
    telegram = alerter.notifiers[1]
    wait_until(lambda: telegram.failed == 4, message="telegram counts each alert it could not send")
    assert telegram.sent == 0 and len(limited.requests) <= 2  # no burst of retries at the deadline
    limited.close()
    good.close()


def test_a_critical_alert_goes_before_info_notices_queued_at_the_same_notifier():
    gate = threading.Event()
    held: list[str] = []
    got: list[str] = []

    class Gated(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            held.append(body["kind"])
            gate.wait(5)
            got.append(body["kind"])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gated)
    threading.Thread(target=server.serve_forever, name="test-gated", daemon=True).start()
    alerter = Alerter(f"http://127.0.0.1:{server.server_address[1]}/hook", D(0), 60.0).start()
    try:
        alerter.notify(NOTICES["startup"])  # in flight, held at the receiver
        wait_until(lambda: held, message="the first notice is in flight")
        alerter.notify(NOTICES["sanity_confirmed"])  # warning
        alerter.notify(Alert("journal_error", "journal", "journal refusing writes", "info"))
        alerter.notify(CONDITION_ALERTS["halted"])  # critical, queued last
        gate.set()
        wait_until(lambda: len(got) == 4, message="all four delivered")
    finally:
        gate.set()
        alerter.stop()
        server.shutdown()
        server.server_close()
    assert got == ["startup", "halted", "sanity_confirmed", "journal_error"]


def test_one_alert_at_one_notifier_takes_no_longer_than_its_budget():
    import socket

    import requests
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(16)
    notifier = Slack(f"http://127.0.0.1:{dead.getsockname()[1]}{SLACK_PATH}")
    try:
        with requests.Session() as session:
            started = time.monotonic()
            assert not deliver(notifier, NOTICES["startup"], session, 3.0, budget_s=1.0)
            took = time.monotonic() - started
    finally:
        dead.close()
    assert 0.9 < took < 1.5 and notifier.failed == 1


def test_failed_delivery_logs_name_the_service_never_the_token_or_url():
    lines = io.StringIO()
    sink = logger.add(lines, level="DEBUG", format="{message}")
    try:
        (telegram, discord) = from_environment(
            {"KARB_TELEGRAM_BOT_TOKEN": TOKEN, "KARB_TELEGRAM_CHAT_ID": CHAT,
             "KARB_DISCORD_WEBHOOK_URL": "http://127.0.0.1:9" + DISCORD_PATH},
            "http://127.0.0.1:9")  # port 9: nothing listens, every attempt fails
        import requests
        with requests.Session() as session:
            for notifier in (telegram, discord):
                assert not deliver(notifier, NOTICES["startup"], session, 1.0, sleep=lambda s: None)
                logger.error("the url was {}", notifier.url)  # even a careless line is redacted
    finally:
        logger.remove(sink)
    text = lines.getvalue()
    assert "not delivered to telegram (127.0.0.1)" in text and "not delivered to discord" in text
    assert TOKEN not in text and "discordsecretYYYY" not in text and CHAT not in text


def test_from_environment_builds_each_configured_notifier_environment_over_key_file(tmp_path):
    file_secrets = {"KARB_SLACK_WEBHOOK_URL": "https://hooks.slack.example/services/FILE",
                    "KARB_DISCORD_WEBHOOK_URL": "https://discord.example/api/webhooks/1/FILE"}
    env = {"KARB_DISCORD_WEBHOOK_URL": "https://discord.example/api/webhooks/1/ENV"}
    built = {n.name: n for n in from_environment(env, "https://api.telegram.org", file_secrets)}
    assert set(built) == {"slack", "discord"}  # no Telegram token: no Telegram
    assert built["discord"].url.endswith("/ENV") and built["slack"].url.endswith("/FILE")
    only_token = from_environment({"KARB_TELEGRAM_BOT_TOKEN": TOKEN}, "https://api.telegram.org")
    assert only_token == []  # a token without a chat cannot post


def test_telegram_base_url_is_overridable_for_a_self_hosted_bot_api_server():
    (telegram,) = from_environment({"KARB_TELEGRAM_BOT_TOKEN": TOKEN, "KARB_TELEGRAM_CHAT_ID": CHAT},
                                   "https://tg.internal:8081/")
    assert telegram.url == f"https://tg.internal:8081/bot{TOKEN}/sendMessage"


def test_key_file_alerts_section_is_read_only_from_a_private_file(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"alerts": {"telegram_bot_token": TOKEN, "telegram_chat_id": CHAT}}))
    os.chmod(path, 0o600)
    assert load_alert_secrets(str(path)) == {"KARB_TELEGRAM_BOT_TOKEN": TOKEN,
                                             "KARB_TELEGRAM_CHAT_ID": CHAT}
    os.chmod(path, 0o644)
    with pytest.raises(SecretsError, match="readable by others"):
        load_alert_secrets(str(path))
    assert load_alert_secrets(None) == {}


@pytest.mark.parametrize("key, env", [("telegram_bot_token", "KARB_TELEGRAM_BOT_TOKEN"),
                                      ("slack_webhook_url", "KARB_SLACK_WEBHOOK_URL"),
                                      ("discord_webhook_url", "KARB_DISCORD_WEBHOOK_URL")])
def test_a_config_carrying_a_notifier_secret_is_refused_naming_the_key(key, env):
    data = {"venues": {}, "markets": ["KRW-BTC"], "monitor": {key: "https://hooks.example/SECRET"}}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    message = str(info.value)
    assert message.startswith(f"monitor.{key}:") and env in message and "SECRET" not in message


def teardown_module():
    # the tokens registered here must not redact other tests' expected text
    logs._secrets = tuple(s for s in logs._secrets
                          if s not in (TOKEN, CHAT, DISCORD_PATH, SLACK_PATH))
