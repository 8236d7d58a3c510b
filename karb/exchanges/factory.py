"""Build the REST client for a venue from the config (the one place that picks the class)."""
from __future__ import annotations

from karb.config import Config
from karb.exchanges.base import VenueClient
from karb.model import Venue
from karb.secrets import Credentials


def make_client(venue: Venue, config: Config, credentials: Credentials | None) -> VenueClient:
    """Return ``venue``'s client. ``credentials=None`` gives a public-only client whose
    private methods raise ``AuthError`` (code ``no_credentials``).

    Bithumb uses API 2.0 (JWT) unless ``venues.bithumb.api`` is ``legacy`` (HMAC ``Api-Sign``).
    """
    venue_config = config.venues[venue]
    if venue is Venue.UPBIT:
        from karb.exchanges.upbit.client import UpbitClient
        return UpbitClient(venue_config, credentials)
    if venue_config.api == "legacy":
        from karb.exchanges.bithumb.legacy import BithumbLegacyClient
        return BithumbLegacyClient(venue_config, credentials, markets=list(config.markets))
    from karb.exchanges.bithumb.client import BithumbClient
    return BithumbClient(venue_config, credentials)
