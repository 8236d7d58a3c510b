"""Configuration of the simulated venues (the ``sim:`` section of a config file)."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class SimMarketConfig:
    price: Decimal  # starting fair value, KRW


@dataclass(frozen=True)
class SimConfig:
    seed: int = 7
    host: str = "127.0.0.1"
    markets: dict[str, SimMarketConfig] = field(default_factory=dict)
