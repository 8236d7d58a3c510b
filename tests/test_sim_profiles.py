"""Sim profiles: ``demo`` is today's sim; ``realistic`` stays inside the cited public facts.

The calibration test fails if someone moves the realistic parameters away from the snapshots
cited in ``karb/sim/profiles.py`` (BTC same-time gaps: median ~16 bps, range 1.5-74 bps).
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import statistics
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from karb.config import load_config, parse_config
from karb.model import Venue
from karb.schema import ConfigError
from karb.sim.config import SimConfig, SimMarketConfig
from karb.sim.grid import GRIDS
from karb.sim.market import MarketGenerator
from karb.sim.profiles import REALISTIC, market_params

ROOT = Path(__file__).resolve().parent.parent
CITED_MEDIAN_BPS = 16.0
CITED_MAX_BPS = 74.0


def btc_gaps(seed: int, seconds: float) -> tuple[list[float], list[float]]:
    """Cross-venue |mid gap| and best executable gap (bps), sampled once a simulated second."""
    sim = SimConfig(seed=seed, profile="realistic",
                    markets={"KRW-BTC": SimMarketConfig(price=Decimal(140_000_000))})
    tops: dict[Venue, tuple[int, int]] = {}
    mid_gaps, exec_gaps, next_ns = [], [], 0
    for event in MarketGenerator(sim, ["KRW-BTC"]).events():
        if event.t_ns > seconds * 1e9:
            break
        tops[event.venue] = (event.bids[0][0], event.asks[0][0])
        if len(tops) == 2 and event.t_ns >= next_ns:
            next_ns = event.t_ns + 1_000_000_000
            (ub, ua), (bb, ba) = tops[Venue.UPBIT], tops[Venue.BITHUMB]
            upbit_mid = (ub + ua) / 2
            mid_gaps.append(abs((bb + ba) / 2 / upbit_mid - 1) * 1e4)
            exec_gaps.append(max(bb - ua, ub - ba) / upbit_mid * 1e4)
    return mid_gaps, exec_gaps


def test_realistic_btc_gaps_match_the_cited_snapshots_over_simulated_hours():
    mids, execs = [], []
    for seed in range(1, 7):  # six independent simulated hours, each started in the stationary law
        m, x = btc_gaps(seed, 3600)
        mids += m
        execs += x
    assert len(mids) > 6 * 3000
    median = statistics.median(mids)
    p95 = statistics.quantiles(mids, n=20)[18]
    assert CITED_MEDIAN_BPS / 2 <= median <= CITED_MEDIAN_BPS * 2, median
    assert p95 < CITED_MAX_BPS, p95
    assert max(mids) > 30  # gaps do open wide at times, not a flat premium
    # The touch is inside the spread: what can be executed is always less than the mid gap.
    assert all(x < m for x, m in zip(execs, mids))
    assert statistics.median(execs) < median


def test_realistic_markets_differ_in_update_rate_depth_and_spread():
    config = load_config(ROOT / "config" / "backtest.yaml")
    assert config.sim.profile == "realistic"
    counts: collections.Counter = collections.Counter()
    spreads: dict[str, set[int]] = collections.defaultdict(set)
    for event in itertools.islice(MarketGenerator(config.sim, config.markets).events(), 40_000):
        counts[event.market] += 1
        grid = GRIDS[event.venue]
        prices = [p for p, _ in event.bids + event.asks]
        assert all(grid.on_grid(p) for p in prices) and all(s > 0 for _, s in event.bids + event.asks)
        assert all(a[0] > b[0] for a, b in zip(event.bids, event.bids[1:]))
        assert all(a[0] < b[0] for a, b in zip(event.asks, event.asks[1:]))
        assert len(event.asks) == config.sim.depth and (len(event.bids) == config.sim.depth
                                                         or event.market == "KRW-BTT")
        spreads[event.market].add((event.asks[0][0] - event.bids[0][0]) // grid.tick(event.bids[0][0]))
    assert set(counts) == set(config.markets)
    assert counts["KRW-BTC"] > 5 * counts["KRW-SHIB"]  # BTC busy, tail markets quiet
    assert min(spreads["KRW-SHIB"]) == 1 and min(spreads["KRW-BTT"]) == 1
    assert min(spreads["KRW-SEI"]) >= 3
    assert market_params(config.sim, "KRW-SHIB").level_krw > market_params(config.sim, "KRW-LINK").level_krw


def test_demo_profile_keeps_the_global_knobs_and_no_slow_gap():
    sim = SimConfig(update_hz=20.0, gaps_per_min=0.0, premium_vol_bps=0.5)
    params = market_params(sim, "KRW-BTC")
    assert (params.update_hz, params.gaps_per_min, params.noise_bps) == (20.0, 0.0, 0.5)
    assert (params.level_krw, params.spread_ticks, params.gap_std_bps) == (3_000_000.0, 1, 0.0)
    assert (params.gap_bps_min, params.gap_bps_max, params.gap_life_min_s, params.gap_life_max_s) == (
        5.0, 100.0, 0.05, 3.0)


def test_per_market_overrides_apply_under_either_profile():
    mc = SimMarketConfig(price=Decimal(1000), update_hz=7.0, gap_std_bps=5.0, spread_ticks=4)
    for profile in ("demo", "realistic"):
        params = market_params(SimConfig(profile=profile, markets={"KRW-X": mc}), "KRW-X")
        assert (params.update_hz, params.gap_std_bps, params.spread_ticks) == (7.0, 5.0, 4)
    unknown = market_params(SimConfig(profile="realistic"), "KRW-NEW")
    assert dataclasses.replace(unknown) == REALISTIC


def _data(**sim):
    data = yaml.safe_load((ROOT / "config" / "sim.yaml").read_text())
    data["sim"] = {"markets": {"KRW-BTC": {"price": "1000"}}, **sim}
    return data


def test_demo_only_knob_under_realistic_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"^sim\.gaps_per_min: applies to profile demo only"):
        parse_config(_data(profile="realistic", gaps_per_min=5))
    assert parse_config(_data(gaps_per_min=5)).sim.gaps_per_min == 5
    with pytest.raises(ConfigError, match=r"^sim\.profile: must be one of demo, realistic"):
        parse_config(_data(profile="calm"))
    bad = SimConfig(profile="realistic", markets={"KRW-BTC": SimMarketConfig(price=Decimal(1), gap_bps_max=1.0)})
    with pytest.raises(ConfigError, match=r"^sim\.markets\.KRW-BTC: gap_bps_max"):
        MarketGenerator(bad, ["KRW-BTC"])


def test_realistic_stream_is_a_pure_function_of_the_seed():
    config = load_config(ROOT / "config" / "backtest.yaml")

    def first(seed: int) -> list:
        sim = dataclasses.replace(config.sim, seed=seed)
        return list(itertools.islice(MarketGenerator(sim, config.markets).events(), 3000))

    assert first(7) == first(7)
    assert first(7) != first(8)
