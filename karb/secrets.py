"""API keys: from the environment or a 0600 key file, never from the repo, never into a log.

Environment variables win over the key file:

=========================  ==================================
``KARB_UPBIT_ACCESS_KEY``  Upbit access key
``KARB_UPBIT_SECRET_KEY``  Upbit secret key
``KARB_BITHUMB_API_KEY``   Bithumb API (access) key
``KARB_BITHUMB_SECRET_KEY`` Bithumb secret key
=========================  ==================================

Alert destinations (``karb.notifiers``) are secrets too:

==============================  =========================================
``KARB_TELEGRAM_BOT_TOKEN``     Telegram bot token (with the chat id below)
``KARB_TELEGRAM_CHAT_ID``       Telegram chat to post to
``KARB_SLACK_WEBHOOK_URL``      Slack incoming webhook URL
``KARB_DISCORD_WEBHOOK_URL``    Discord webhook URL
==============================  =========================================

A key file is YAML ``{upbit: {access_key, secret_key}, bithumb: {access_key, secret_key},
alerts: {telegram_bot_token, telegram_chat_id, slack_webhook_url, discord_webhook_url}}``
and must not be readable by group or others (``chmod 600``). Every loaded secret is registered
with ``karb.logs`` so that any log line containing it is redacted.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml

from karb import logs
from karb.model import Venue

ENV_NAMES: dict[Venue, tuple[str, str]] = {
    Venue.UPBIT: ("KARB_UPBIT_ACCESS_KEY", "KARB_UPBIT_SECRET_KEY"),
    Venue.BITHUMB: ("KARB_BITHUMB_API_KEY", "KARB_BITHUMB_SECRET_KEY"),
}

# keys file ``alerts`` entry (and the config key a careless user might try) -> environment name
ALERT_ENV_NAMES: dict[str, str] = {
    "telegram_bot_token": "KARB_TELEGRAM_BOT_TOKEN",
    "telegram_chat_id": "KARB_TELEGRAM_CHAT_ID",
    "slack_webhook_url": "KARB_SLACK_WEBHOOK_URL",
    "discord_webhook_url": "KARB_DISCORD_WEBHOOK_URL",
}


class SecretsError(RuntimeError):
    """Keys are missing or stored unsafely. The message never contains a key."""


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str

    def __repr__(self) -> str:  # never print a key, even by accident in a traceback
        return f"Credentials(access_key={_mask(self.access_key)}, secret_key=***)"

    __str__ = __repr__


def _mask(key: str) -> str:
    return f"{key[:4]}***" if len(key) > 8 else "***"


def load_credentials(venue: Venue, keys_file: str | None = None) -> Credentials:
    """Return ``venue``'s keys from the environment, else from ``keys_file``.

    Raises ``SecretsError`` naming what is missing (never the key itself).
    """
    access_env, secret_env = ENV_NAMES[venue]
    access, secret = os.environ.get(access_env), os.environ.get(secret_env)
    if not (access and secret) and keys_file:
        access, secret = _from_file(venue, Path(keys_file))
    if not (access and secret):
        where = f" or {keys_file}" if keys_file else ""
        raise SecretsError(
            f"no {venue.value} API keys: set {access_env} and {secret_env}{where} "
            f"(or keys_file: in the config, a chmod 600 YAML file)"
        )
    logs.register_secret(access)
    logs.register_secret(secret)
    return Credentials(access, secret)


def load_alert_secrets(keys_file: str | None) -> dict[str, str]:
    """The key file's ``alerts`` entries by environment name (``{}`` without a key file or
    entry). The caller lets the environment win and registers what it uses for redaction."""
    if not keys_file:
        return {}
    entry = _read_key_file(Path(keys_file)).get("alerts")
    if not isinstance(entry, dict):
        return {}
    return {env: str(entry[key]) for key, env in ALERT_ENV_NAMES.items() if entry.get(key)}


def _from_file(venue: Venue, path: Path) -> tuple[str | None, str | None]:
    entry = _read_key_file(path).get(venue.value)
    if not isinstance(entry, dict):
        return None, None
    access, secret = entry.get("access_key"), entry.get("secret_key")
    return (str(access) if access else None), (str(secret) if secret else None)


def _read_key_file(path: Path) -> dict:
    try:
        mode = path.stat().st_mode
    except OSError:
        raise SecretsError(f"keys_file {path} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsError(
            f"keys_file {path} is readable by others (mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        raise SecretsError(f"keys_file {path} is not readable YAML") from None
    return data if isinstance(data, dict) else {}
