"""Upbit REST client (JWT auth)."""
from karb.exchanges.upbit.auth import UpbitAuth
from karb.exchanges.upbit.client import UpbitClient

__all__ = ["UpbitAuth", "UpbitClient"]
