"""The ``backtest:`` config section: the execution model of ``karb backtest``.

``BacktestConfig``
    latency - per venue, the time from signal to the order reaching the venue's matching
        engine (our own signal-to-wire plus the network), uniform between ``min_ms`` and
        ``max_ms``. Default 2-5 ms: a server in Seoul near the venues. A home line in Korea
        is more like 20-40 ms; no public figure fits every setup, so measure yours.
    competitor_share (0.5) - the share of each of the top ``competitor_levels`` (1) levels
        other takers have already taken when our order arrives. No public figure exists for
        how often others race for the same gap: a parameter, not a calibration.
    days (1.0) - simulated days to run from the sim's generator (``--days`` overrides).
    progress_s (10.0) - wall seconds between progress lines.
    latency_samples (10000) - leg latencies kept for ``backtest.json``.
    oracle (True) - also run the oracle and the unconstrained oracle (``karb.backtest.run``).

Start balances are the sim's (``sim.venues.<v>.start_krw/start_btc``, other coins
``sim.markets.<m>.start_coin`` or 10,000,000 KRW worth at the first price seen).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LatencyConfig:
    min_ms: float = 2.0
    max_ms: float = 5.0


@dataclass(frozen=True)
class LatenciesConfig:
    upbit: LatencyConfig = field(default_factory=LatencyConfig)
    bithumb: LatencyConfig = field(default_factory=LatencyConfig)


@dataclass(frozen=True)
class BacktestConfig:
    latency: LatenciesConfig = field(default_factory=LatenciesConfig)
    competitor_share: float = field(default=0.5, metadata={"le": 1.0})
    competitor_levels: int = 1
    days: float = field(default=1.0, metadata={"gt": 0})
    progress_s: float = field(default=10.0, metadata={"gt": 0})
    latency_samples: int = 10_000
    oracle: bool = True
