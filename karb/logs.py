"""Logging setup (loguru): readable console, JSON-lines file with rotation, secret redaction.

``register_secret`` adds a string that must never appear in a log line; a patcher replaces it
with ``***`` in the message and in every bound value before any sink sees the record.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

if TYPE_CHECKING:
    from karb.config import LogConfig

REDACTED = "***"
_secrets: tuple[str, ...] = ()
_secrets_lock = threading.Lock()
CONSOLE_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{thread.name: <11}</cyan> {message}"
)


def register_secret(value: str) -> None:
    """Redact ``value`` from every log record from now on (values shorter than 6 are ignored)."""
    global _secrets
    if len(value) < 6:
        return
    with _secrets_lock:
        if value not in _secrets:
            _secrets = tuple(sorted((*_secrets, value), key=len, reverse=True))


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _patch(record) -> None:
    if not _secrets:
        return
    record["message"] = redact(record["message"])
    extra = record["extra"]
    for key, value in extra.items():
        if isinstance(value, str):
            extra[key] = redact(value)
    exc = record["exception"]
    if exc is not None and exc.value is not None:
        text = str(exc.value)
        if redact(text) != text:  # do not print an exception that carries a key
            record["exception"] = None
            record["message"] += f" [{type(exc.value).__name__}: {redact(text)}]"


logger.configure(patcher=_patch)


def setup_logging(config: "LogConfig", console: bool = True) -> None:
    """Install the console sink (stderr) and, if configured, the JSON-lines file sink."""
    logger.remove()
    logger.configure(patcher=_patch)
    if console:
        logger.add(sys.stderr, level=config.level, format=CONSOLE_FORMAT, backtrace=False, diagnose=False)
    if config.file:
        Path(config.file).parent.mkdir(parents=True, exist_ok=True)
        logger.add(
            config.file,
            level=config.level,
            serialize=True,
            rotation=config.rotation,
            retention=config.retention,
            enqueue=True,  # file I/O on loguru's own thread, not the caller's
            backtrace=False,
            diagnose=False,
        )
