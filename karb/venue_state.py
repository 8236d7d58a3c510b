"""The ``venue-state`` thread: keep markets a venue flags out of trading.

Every ``strategy.venue_state_s`` it asks each venue which of its KRW markets it flags
(``get_market_states``: investment warnings, cautions such as Upbit's
``GLOBAL_PRICE_DIFFERENCES``, Bithumb's alerts), which it lists at all, and, with keys, whose
coin's wallet is suspended (``get_wallet_status``: no network that can withdraw, or none that
can deposit: the coin cannot move between the venues), and tells the strategy (``Strategy.set_venue_state``): a flagged or unlisted market is held with the venue's
reason, shown in the panel and raised as the ``market_skipped`` alert; a market whose flag
cleared trades again. With ``strategy.skip_flagged_markets: false`` flags are only logged.

A venue that cannot say (an error, or a client without the call, such as Bithumb's legacy API)
keeps its last known states: a failed read neither holds nor frees a market.
"""
from __future__ import annotations

import threading

from loguru import logger

from karb.config import Config
from karb.exchanges.errors import AuthError
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
        self._no_keys: set[Venue] = set()  # venues whose wallet status needs keys we lack
        self._wallet_last: dict[Venue, dict[str, str]] = {}
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
            wallets = self._wallets(venue, client)
            for market in self.markets:
                reasons = [listed[market] if market in listed else "not listed (delisted?)"]
                reasons.append(wallets.get(market.split("-", 1)[1]))
                self._set(venue, market, "; ".join(r for r in reasons if r) or None)

    def _wallets(self, venue: Venue, client) -> dict[str, str]:
        """Coin -> why it cannot move from or to ``venue``; {} when the venue cannot say."""
        read = getattr(client, "get_wallet_status", None)
        if read is None or venue in self._no_keys:
            return {}
        try:
            statuses = read()
        except AuthError as exc:
            self._no_keys.add(venue)
            logger.info("{} wallet states not read ({}): only listings and warnings guard markets",
                        venue.value, exc)
            return {}
        except Exception as exc:
            self.errors += 1
            logger.warning("wallet states of {} not read: {}", venue.value, exc)
            return self._wallet_last.get(venue, {})  # a failed read keeps the last word
        by_coin: dict[str, list] = {}
        for status in statuses:
            by_coin.setdefault(status.currency, []).append(status)
        out = {}
        for coin, nets in by_coin.items():
            states = ",".join(sorted({s.wallet_state for s in nets}))
            if not any(s.can_withdraw for s in nets):
                out[coin] = f"wallet: withdrawals suspended ({states})"
            elif not any(s.can_deposit for s in nets):
                out[coin] = f"wallet: deposits suspended ({states})"
        self._wallet_last[venue] = out
        return out

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
