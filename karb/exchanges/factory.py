"""Build the REST client for a venue from the config (the one place that picks the class)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from karb.config import Config
from karb.exchanges.base import VenueClient
from karb.model import Venue
from karb.secrets import Credentials, load_credentials


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


@contextmanager
def venue_clients(config: Config, venues: list[Venue], *, keys: bool,
                  sim: bool = False) -> Iterator[dict[Venue, VenueClient]]:
    """Clients for ``venues`` (for the CLI's one-shot commands), closed on exit.

    ``keys=True`` loads each venue's keys first (``SecretsError`` before any network call);
    ``sim=True`` starts the embedded simulated venues and uses their paper accounts.
    """
    cluster = None
    try:
        if sim:
            from karb.sim.cluster import SimCluster
            cluster = SimCluster.from_config(config).start()
            config = cluster.apply_to(config)
            creds = {v: cluster.credentials(v) if keys else None for v in venues}
        else:
            creds = {v: load_credentials(v, config.keys_file) if keys else None for v in venues}
        clients = {v: make_client(v, config, creds[v]) for v in venues}
        try:
            yield clients
        finally:
            for client in clients.values():
                client.close()
    finally:
        if cluster is not None:
            cluster.stop()
