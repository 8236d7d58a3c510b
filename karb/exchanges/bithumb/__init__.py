"""Bithumb REST clients: API 2.0 (JWT, default) and legacy (HMAC ``Api-Sign``)."""
from karb.exchanges.bithumb.auth import BithumbAuth, BithumbLegacyAuth
from karb.exchanges.bithumb.client import BithumbClient
from karb.exchanges.bithumb.legacy import BithumbLegacyClient

__all__ = ["BithumbAuth", "BithumbClient", "BithumbLegacyAuth", "BithumbLegacyClient"]
