"""Start-up checks, run before any feed or order: markets exist on both venues, keys work,
clocks agree. Each failure is one clear sentence (``StartupError``) and a distinct exit code.
"""
from __future__ import annotations

import email.utils
import time

import requests
from loguru import logger

from karb.exchanges.base import VenueClient
from karb.exchanges.errors import AuthError, VenueError
from karb.model import Venue

CLOCK_WARN_S = 1.0
CLOCK_FAIL_S = 10.0  # Bithumb's JWT carries a ms timestamp the venue checks against its clock


class StartupError(RuntimeError):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def check_markets(clients: dict[Venue, VenueClient], markets: list[str]) -> None:
    """Every configured market must be listed on both venues."""
    for venue, client in clients.items():
        try:
            listed = set(client.get_markets())
        except VenueError as exc:
            raise StartupError(f"cannot list {venue.value} markets: {exc}", 4) from None
        missing = [m for m in markets if m not in listed]
        if missing:
            raise StartupError(f"markets not listed on {venue.value}: {', '.join(missing)} "
                               f"(remove them from `markets:`)", 2)


def check_keys(clients: dict[Venue, VenueClient]) -> dict:
    """Read balances with the keys; a refusal names the venue and the venue's reason."""
    balances = {}
    for venue, client in clients.items():
        try:
            balances[venue] = client.get_balances()
        except AuthError as exc:
            raise StartupError(f"{venue.value} rejected the API keys ({exc.code}: {exc.venue_message})", 3) from None
        except VenueError as exc:
            raise StartupError(f"cannot read {venue.value} balances: {exc}", 4) from None
    return balances


def clock_skew_s(rest_url: str, timeout_s: float = 3.0) -> float | None:
    """Venue clock minus ours, from the HTTP ``Date`` header (1 s resolution); None if unknown."""
    try:
        sent = time.time()
        response = requests.head(rest_url.rstrip("/") + "/", timeout=timeout_s)
        received = time.time()
    except requests.RequestException:
        return None
    header = response.headers.get("Date")
    if not header:
        return None
    venue_time = email.utils.parsedate_to_datetime(header).timestamp()
    return venue_time - (sent + received) / 2


def check_clocks(rest_urls: dict[Venue, str]) -> None:
    for venue, url in rest_urls.items():
        skew = clock_skew_s(url)
        if skew is None:
            logger.warning("could not read {}'s clock; make sure NTP runs", venue.value)
        elif abs(skew) > CLOCK_FAIL_S:
            raise StartupError(f"local clock differs from {venue.value}'s by {skew:+.1f}s: fix NTP first", 4)
        elif abs(skew) > CLOCK_WARN_S + 1.0:  # +1 s for the Date header's resolution
            logger.warning("clock skew with {} is {:+.1f}s", venue.value, skew)
