"""Sim market profiles: which parameters drive each market's generated books (``sim.profile``).

``demo`` (the default) is the sim as it always was: every market gets the global ``sim.*``
knobs (``update_hz``, ``gaps_per_min``, ``gap_bps_*``, ``gap_life_*``, ``premium_*``), 3,000,000
KRW levels and a 1-tick spread, and the cross-venue gap is nothing but frequent 5-100 bps jumps
on a 1 bps noise floor. It exists to exercise the engine (``run --sim`` trades every few
seconds); it says nothing about what the strategy would earn.

``realistic`` is calibrated to the public facts below, and where there is none the value is an
assumption, marked so, and a parameter. Nothing here was tuned to make the strategy look good;
change it only with a source. Model per market: the cross-venue mid gap is a slow
Ornstein-Uhlenbeck process (each venue's premium has std ``gap_std_bps / sqrt(2)``, e-folding
time ``gap_reversion_s``; started from its stationary distribution, so no warm-up) plus rare
jumps (``gaps_per_min`` per venue, log-uniform ``gap_bps_min..max``, exponential decay with
lifetime log-uniform ``gap_life_min_s..max_s``) plus the demo's 1 bps fast noise.

====================  ==========================================================================
fact                  source, and what was taken from it
====================  ==========================================================================
taker fees 9 bps      Upbit KRW market 0.05%, Bithumb 0.04% since 2024-02 (issue 10). Not a sim
round trip            parameter: the sim and the engine both read ``venues.<v>.taker_fee``;
                      ``config/sim.yaml`` and ``config/backtest.yaml`` set 0.0005 / 0.0004.
BTC last-trade gap    13 same-time news snapshots 2018-2021 (issue 10's summary): 1.5-74 bps,
                      median ~16, two near or above 60 (one a crash day). Checked here: News1
                      2021-05-13 10:05 KST (news.zum.com/articles/68102254), Bithumb 62,514,000
                      vs Upbit 62,976,000 KRW = 74 bps, the crash day; Nation Thailand / Korea
                      Herald 2021-10-21 13:50 KST (nationthailand.com/international/40007826),
                      Upbit 79.0M vs Bithumb 78.7M = 38 bps (prices rounded to 0.1M, +-13 bps).
                      The other 11 were not re-checked. Taken: ``gap_std_bps`` 23.7, so the
                      stationary |gap| is half-normal with median 0.674 x 23.7 = 16 bps, p95 46
                      bps. Not taken: the snapshots' tail (2 of 13 >= 60 bps) is heavier than
                      that; news snapshots are picked on eventful days, so it is not chased.
mid vs executable     The touch is inside the spread, so bid(dear) - ask(cheap) = mid gap - the
                      half spreads: structural in the generator, nothing to tune.
gap lifetimes         "sub-second to minutes" (issue 10): jump lifetimes 0.5-180 s log-uniform.
====================  ==========================================================================

No public figure (assumptions, each a parameter, per market in ``sim.markets.<M>``):
``gap_reversion_s`` 1800 (how long the slow gap persists); ``gaps_per_min`` 0.2 and
``gap_bps_min/max`` 5/40 (how often and how far a venue jumps); per-market ``update_hz``
(book messages per second per venue: BTC busiest, tail coins quiet), ``level_krw`` (median
KRW per level) and ``spread_ticks``; ``gap_std_bps`` per market (the snapshots are BTC only,
so every market gets BTC's); ``resized_per_update`` 1 (levels per side whose size changes in
one book message; the demo's 3; a profile constant, not a config key). SHIB and BTT sit at a
1-tick spread with very large levels, as those books do on both venues (issue 10); the tick
itself comes from ``karb.rules``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from karb.schema import ConfigError
from karb.sim.config import SimConfig


@dataclass(frozen=True)
class MarketParams:
    """Everything the generator needs for one market (both venues)."""

    update_hz: float  # book messages per second per venue (Poisson)
    level_krw: float  # median KRW per level
    spread_ticks: int  # minimum best-bid/best-ask distance in ticks
    resized_per_update: int  # levels per side whose size changes on each update
    gap_std_bps: float  # stationary std of the slow cross-venue mid gap (0 = none)
    gap_reversion_s: float  # e-folding time of the slow gap
    gaps_per_min: float  # premium jumps per venue per minute
    gap_bps_min: float
    gap_bps_max: float
    gap_life_min_s: float  # e-folding time of a jump's decay, log-uniform
    gap_life_max_s: float
    noise_bps: float  # fast premium noise, stationary std per venue
    noise_reversion_per_s: float


_OVERRIDES = ("update_hz", "level_krw", "spread_ticks", "gap_std_bps", "gap_reversion_s",
              "gaps_per_min", "gap_bps_min", "gap_bps_max", "gap_life_min_s", "gap_life_max_s")
_DEMO_ONLY = ("update_hz", "gaps_per_min", "gap_bps_min", "gap_bps_max", "gap_life_min_s",
              "gap_life_max_s", "premium_vol_bps", "premium_reversion_per_s")

REALISTIC = MarketParams(
    update_hz=1.0, level_krw=2_000_000.0, spread_ticks=1, resized_per_update=1,
    gap_std_bps=23.7, gap_reversion_s=1800.0,
    gaps_per_min=0.2, gap_bps_min=5.0, gap_bps_max=40.0, gap_life_min_s=0.5, gap_life_max_s=180.0,
    noise_bps=1.0, noise_reversion_per_s=2.0,
)

# Per market (no public figure; see the module docstring): update_hz, level_krw, spread_ticks.
REALISTIC_MARKETS: dict[str, dict] = {
    "KRW-BTC": {"update_hz": 5.0, "level_krw": 20_000_000.0, "spread_ticks": 1},
    "KRW-ETH": {"update_hz": 3.0, "level_krw": 10_000_000.0, "spread_ticks": 1},
    "KRW-XRP": {"update_hz": 3.0, "level_krw": 10_000_000.0, "spread_ticks": 1},
    "KRW-SOL": {"update_hz": 2.0, "level_krw": 5_000_000.0, "spread_ticks": 2},
    "KRW-DOGE": {"update_hz": 2.0, "level_krw": 5_000_000.0, "spread_ticks": 1},
    "KRW-LINK": {"update_hz": 1.0, "level_krw": 2_000_000.0, "spread_ticks": 2},
    "KRW-ADA": {"update_hz": 1.0, "level_krw": 3_000_000.0, "spread_ticks": 1},
    "KRW-SEI": {"update_hz": 1.0, "level_krw": 1_000_000.0, "spread_ticks": 3},
    "KRW-MVL": {"update_hz": 0.5, "level_krw": 1_000_000.0, "spread_ticks": 1},
    "KRW-SHIB": {"update_hz": 0.5, "level_krw": 30_000_000.0, "spread_ticks": 1},
    "KRW-BTT": {"update_hz": 0.5, "level_krw": 30_000_000.0, "spread_ticks": 1},
}


def demo_params(sim: SimConfig) -> MarketParams:
    return MarketParams(
        update_hz=sim.update_hz, level_krw=3_000_000.0, spread_ticks=1, resized_per_update=3,
        gap_std_bps=0.0, gap_reversion_s=1800.0,
        gaps_per_min=sim.gaps_per_min, gap_bps_min=sim.gap_bps_min, gap_bps_max=sim.gap_bps_max,
        gap_life_min_s=sim.gap_life_min_s, gap_life_max_s=sim.gap_life_max_s,
        noise_bps=sim.premium_vol_bps, noise_reversion_per_s=sim.premium_reversion_per_s,
    )


def market_params(sim: SimConfig, market: str) -> MarketParams:
    """The profile's parameters for ``market``, with ``sim.markets.<market>`` overrides applied."""
    if sim.profile == "realistic":
        params = dataclasses.replace(REALISTIC, **REALISTIC_MARKETS.get(market, {}))
    else:
        params = demo_params(sim)
    mc = sim.markets.get(market)
    if mc is not None:
        overrides = {k: getattr(mc, k) for k in _OVERRIDES if getattr(mc, k) is not None}
        params = dataclasses.replace(params, **overrides)
    if params.gap_bps_max < params.gap_bps_min or params.gap_life_max_s < params.gap_life_min_s:
        raise ConfigError(f"sim.markets.{market}: gap_bps_max/gap_life_max_s must not be below "
                          "their *_min")
    return params


def check(sim: SimConfig) -> None:
    """Refuse demo-only global knobs under ``realistic`` (they would be silently ignored)."""
    if sim.profile != "realistic":
        return
    default = SimConfig()
    for key in _DEMO_ONLY:
        if getattr(sim, key) != getattr(default, key):
            raise ConfigError(f"sim.{key}: applies to profile demo only; under profile realistic "
                              f"set it per market (sim.markets.<M>), see karb/sim/profiles.py")
