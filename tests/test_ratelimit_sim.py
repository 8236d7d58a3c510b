"""A burst from 8 threads against the sim's enforced limits: no 429, and the limit's pace."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from karb.exchanges.ratelimit import WINDOW_MARGIN_S, Group
from karb.model import Venue
from karb.sim import rest_upbit
from karb.sim.cluster import SimCluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import bench_ratelimit  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("venue, group, sim_group, limit, requests", [
    (Venue.UPBIT, Group.PUBLIC, "ticker", 60, 240),  # Remaining-Req answers in play
    (Venue.BITHUMB, Group.PUBLIC, "public", 60, 240),  # no header: the window alone
])
def test_burst_at_the_sims_limit_meets_no_429_and_keeps_the_limits_pace(
        monkeypatch, venue, group, sim_group, limit, requests):
    # the sim's group raised from its venue value so the burst takes seconds, not minutes
    monkeypatch.setitem(rest_upbit.GROUP_LIMITS, sim_group, limit)
    config = bench_ratelimit.sim_config(venue, group, float(limit))
    with SimCluster.from_config(config).start() as cluster:
        result = bench_ratelimit.run_burst(cluster, cluster.apply_to(config), venue, group,
                                           requests, threads=8)

    assert (result.rate_limited, result.errors, result.corrections) == (0, 0, 0)
    windows = requests // limit - 1
    assert result.wall_s >= windows * (1.0 + WINDOW_MARGIN_S)  # never faster than the limit
    assert result.wall_s <= (result.minimum_s + 1.0) * 1.05  # a loaded 2-core box: generous
