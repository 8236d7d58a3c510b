"""Where an alert goes besides the log: the generic JSON webhook, Telegram, Slack and Discord.

Each notifier turns an ``Alert`` into the one POST its service documents; ``deliver`` sends it
with bounded retries (connection errors and 5xx with exponential backoff, a 429 after the wait
the service asks for, capped) within a bounded total time per alert, on the caller's thread
(that notifier's own ``alerts-<name>`` thread, so one slow service delays no other). Secrets (bot
token, webhook URLs) are registered with ``karb.logs`` so no log line can carry them, and no
line here ever names a URL: a notifier is named by its service and host only.

Shapes, as each service documents them:

* Telegram Bot API ``sendMessage`` (https://core.telegram.org/bots/api#sendmessage):
  ``POST {base}/bot<token>/sendMessage``, JSON ``{"chat_id", "text"}``, text 1-4096 characters.
  Sent without ``parse_mode`` (plain text: an alert never fails on an unescaped ``<`` or ``_``).
  A 429 answers ``{"ok": false, "error_code": 429, "parameters": {"retry_after": N}}``
  (https://core.telegram.org/bots/api#responseparameters). ``base`` is configurable
  (``monitor.telegram_api_url``) for a self-hosted Bot API server.
* Slack incoming webhook (https://api.slack.com/messaging/webhooks): ``POST <webhook URL>``,
  JSON ``{"text": ...}`` (plus a ``section`` block); ``&``, ``<`` and ``>`` escaped as
  https://api.slack.com/reference/surfaces/formatting#escaping says; a 429 carries
  ``Retry-After`` (https://api.slack.com/docs/rate-limits). Section text is at most 3000.
* Discord execute webhook (https://discord.com/developers/docs/resources/webhook#execute-webhook):
  ``POST <webhook URL>``, JSON ``{"content": ...}`` of at most 2000 characters, ``username``,
  ``allowed_mentions: {"parse": []}`` (an alert text never pings @everyone); a 429 carries
  ``Retry-After`` (https://discord.com/developers/docs/topics/rate-limits).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import requests
from loguru import logger

from karb import logs

TELEGRAM_TEXT_MAX = 4096
SLACK_TEXT_MAX = 3000  # a section block's text limit; the plain text stays the same
DISCORD_CONTENT_MAX = 2000
ATTEMPTS = 3  # per alert and notifier
BACKOFF_S = 0.5  # then 1 s, 2 s...
RETRY_AFTER_MAX_S = 30.0  # a 429 asking for longer than this is not waited for
BUDGET_S = 15.0  # total time one alert may take at one notifier, retries and waits included
ELLIPSIS = "…"


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in an ellipsis when cut."""
    return text if len(text) <= limit else text[:limit - 1] + ELLIPSIS


def headline(alert) -> str:
    return f"K-Arb {alert.severity.upper()} {alert.kind} [{alert.key}]"


@dataclass
class Request:
    url: str
    body: dict


class Notifier:
    """One destination. Subclasses build the request and read a 429's wait."""

    name = "webhook"

    def __init__(self, url: str) -> None:
        self.url = url
        self.label = f"{self.name} ({urlsplit(url).hostname})"
        self.sent = 0
        self.failed = 0  # alerts given up on after every attempt
        self.resume_at = 0.0  # monotonic: the service asked (429) for nothing before this

    def request(self, alert) -> Request:
        return Request(self.url, {"kind": alert.kind, "key": alert.key, "message": alert.message,
                                  "severity": alert.severity, "source": "karb", "time": time.time()})

    def retry_after_s(self, response: requests.Response) -> float | None:
        value = response.headers.get("Retry-After")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class JsonWebhook(Notifier):
    name = "webhook"


class Telegram(Notifier):
    name = "telegram"

    def __init__(self, token: str, chat_id: str, base_url: str = "https://api.telegram.org") -> None:
        super().__init__(f"{base_url.rstrip('/')}/bot{token}/sendMessage")
        self.chat_id = chat_id

    def request(self, alert) -> Request:
        text = truncate(f"{headline(alert)}\n{alert.message}", TELEGRAM_TEXT_MAX)
        return Request(self.url, {"chat_id": self.chat_id, "text": text,
                                  "disable_web_page_preview": True})

    def retry_after_s(self, response: requests.Response) -> float | None:
        try:
            return float(response.json()["parameters"]["retry_after"])
        except (ValueError, KeyError, TypeError):
            return super().retry_after_s(response)


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Slack(Notifier):
    name = "slack"

    def request(self, alert) -> Request:
        # cut before escaping, so an entity is never cut in half (the escaped text stays far
        # below Slack's 40,000-character limit for ``text``)
        plain = truncate(f"{headline(alert)}\n{alert.message}", SLACK_TEXT_MAX)
        return Request(self.url, {"text": slack_escape(plain), "blocks": [
            {"type": "section", "text": {"type": "plain_text", "text": plain}}]})


class Discord(Notifier):
    name = "discord"

    def request(self, alert) -> Request:
        return Request(self.url, {"content": truncate(f"**{headline(alert)}**\n{alert.message}",
                                                      DISCORD_CONTENT_MAX),
                                  "username": "K-Arb", "allowed_mentions": {"parse": []}})


def deliver(notifier: Notifier, alert, session: requests.Session, timeout_s: float,
            sleep: Callable[[float], object] = time.sleep, budget_s: float = BUDGET_S,
            until: Callable[[], float] = lambda: math.inf) -> bool:
    """POST ``alert`` to ``notifier``; True once accepted. At most ``ATTEMPTS`` tries: a
    connection error or 5xx backs off, a 429 waits what the service asks (up to
    ``RETRY_AFTER_MAX_S``), any other 4xx is final (retrying the same body cannot help).
    Everything ends within ``budget_s`` and before ``until()`` (a monotonic time that a stop
    may bring forward): no request outlives it and no wait that would pass it is begun."""
    req = notifier.request(alert)
    started = time.monotonic()
    why = ""
    for attempt in range(ATTEMPTS):
        left = min(started + budget_s, until()) - time.monotonic()
        if left <= 0:
            why = f"{why}; out of time" if why else "out of time"
            break
        wait = BACKOFF_S * 2 ** attempt
        try:
            response = session.post(req.url, json=req.body, timeout=min(timeout_s, left))
        except requests.RequestException as exc:
            why = type(exc).__name__
        else:
            if response.status_code < 300:
                notifier.sent += 1
                return True
            why = f"HTTP {response.status_code}"
            if response.status_code == 429:
                asked = notifier.retry_after_s(response)
                if asked is not None:
                    notifier.resume_at = time.monotonic() + min(max(asked, 0.0), RETRY_AFTER_MAX_S)
                    if asked > RETRY_AFTER_MAX_S:
                        break
                    wait = max(asked, 0.0)
            elif response.status_code < 500:
                break
        if attempt + 1 < ATTEMPTS:
            if time.monotonic() + wait >= min(started + budget_s, until()):
                why += f"; the next try would pass the {budget_s:g} s limit"
                break
            sleep(wait)
    notifier.failed += 1
    logger.error("alert {} not delivered to {}: {}", alert.kind, notifier.label, logs.redact(why))
    return False


def from_environment(env: dict[str, str], telegram_api_url: str,
                     file_secrets: dict[str, str] | None = None) -> list[Notifier]:
    """The native notifiers whose secrets are set (environment first, then the keys file's
    ``alerts`` section); every secret is registered for redaction."""
    def get(name: str) -> str | None:
        value = env.get(name) or (file_secrets or {}).get(name)
        if value:
            logs.register_secret(value)
        return value or None

    notifiers: list[Notifier] = []
    token, chat = get("KARB_TELEGRAM_BOT_TOKEN"), get("KARB_TELEGRAM_CHAT_ID")
    if token and chat:
        notifiers.append(Telegram(token, chat, telegram_api_url))
    elif token or chat:
        logger.warning("Telegram alerts off: set both KARB_TELEGRAM_BOT_TOKEN and KARB_TELEGRAM_CHAT_ID")
    for name, cls in (("KARB_SLACK_WEBHOOK_URL", Slack), ("KARB_DISCORD_WEBHOOK_URL", Discord)):
        url = get(name)
        if url:
            _register_url(url)
            notifiers.append(cls(url))
    return notifiers


def _register_url(url: str) -> None:
    # the path of a webhook URL is its secret; an exception text may carry it without the host
    path = urlsplit(url).path
    if path.strip("/"):
        logs.register_secret(path)
