"""The ``venue-state`` thread: keep markets a venue flags out of trading.

Every ``strategy.venue_state_s`` it asks each venue which of its KRW markets it flags
(``get_market_states``: investment warnings, cautions such as Upbit's
``GLOBAL_PRICE_DIFFERENCES``, Bithumb's alerts) and which it lists at all, and tells the
strategy (``Strategy.set_venue_state``): a flagged or unlisted market is held with the venue's
reason, shown in the panel and raised as the ``market_skipped`` alert; a market whose flag
cleared trades again. With ``strategy.skip_flagged_markets: false`` flags are only logged.

A venue that cannot say (an error, or a client without the call, such as Bithumb's legacy API)
keeps its last known states: a failed read neither holds nor frees a market.
"""
from __future__ import annotations

import threading

from loguru import logger

from karb.config import Config
from karb.model import Venue
from karb.threads import stop_thread


class VenueStateWatch:
    def __init__(self, clients: dict, strategy, config: Config):
        self.clients = clients
        self.strategy = strategy
        self.markets = config.markets
        self.skip = config.strategy.skip_flagged_markets
        self.interval_s = config.strategy.venue_state_s
        self.states: dict[tuple[Venue, str], str] = {}  # what each venue flags now
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.poll()  # before the first trade can be decided
        self._thread = threading.Thread(target=self._run, name="venue-state", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        stop_thread(self._thread, timeout, self._stop)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def poll(self) -> None:
        """Read every venue once and hold or free the configured markets (tests call it)."""
        for venue, client in self.clients.items():
            read = getattr(client, "get_market_states", None)
            if read is None:
                continue
            try:
                listed = read()
            except Exception as exc:  # a venue error (or a bug) must not end the thread
                self.errors += 1
                logger.warning("venue state of {} not read (kept as it was): {}", venue.value, exc)
                continue
            for market in self.markets:
                reason = listed[market] if market in listed else "not listed (delisted?)"
                self._set(venue, market, reason)

    def _set(self, venue: Venue, market: str, reason: str | None) -> None:
        key = (venue, market)
        if self.states.get(key) == reason:
            return
        if reason:
            self.states[key] = reason
            logger.warning("{} flags {}: {}{}", venue.value, market, reason,
                           "" if self.skip else " (traded anyway: strategy.skip_flagged_markets is off)")
        else:
            self.states.pop(key, None)
            logger.info("{} no longer flags {}", venue.value, market)
        if self.skip:
            self.strategy.set_venue_state(venue, market, reason)
