"""Start-up with 150 markets against the sim's enforced rate limits: no 429 on any group."""
from __future__ import annotations

import random
import time

import pytest

from karb.config import parse_config
from karb.engine import Engine
from karb.exchanges.factory import make_client
from karb.model import Venue
from karb.sim.cluster import SimCluster
from karb.sim.rest_upbit import UpbitApi

pytestmark = pytest.mark.integration
N_MARKETS = 150


def _markets(n: int) -> dict[str, dict]:
    """``n`` generated KRW markets at realistic price levels (0.001 KRW .. 100 M KRW)."""
    rng = random.Random(150)
    return {f"KRW-C{i:03d}": {"price": f"{10 ** rng.uniform(-3, 8):.4g}"} for i in range(n)}


def test_engine_start_with_150_markets_meets_no_429_and_reads_fees_once_per_venue(tmp_path,
                                                                                    monkeypatch):
    chance_calls = []
    chance = UpbitApi.chance

    def counting_chance(self, request, account):
        chance_calls.append((self.venue, request.get("market")))
        return chance(self, request, account)

    monkeypatch.setattr(UpbitApi, "chance", counting_chance)
    sim_markets = _markets(N_MARKETS)
    base = parse_config({
        "mode": "live",
        "markets": list(sim_markets),
        "venues": {v: {"rest_url": "http://127.0.0.1:0", "ws_url": "ws://127.0.0.1:0",
                       "taker_fee": "0.0005", "maker_fee": "0.0005"} for v in ("upbit", "bithumb")},
        "journal": {"path": str(tmp_path / "j.sqlite")},
        "risk": {"kill_switch_file": str(tmp_path / "KILL")},
        "log": {"file": None},
        "monitor": {"metrics_port": 0},
        "sim": {"seed": 3, "update_hz": 0.5, "gaps_per_min": 0, "enforce_rate_limits": True,
                "markets": sim_markets},
    })
    with SimCluster.from_config(base).start() as cluster:
        config = cluster.apply_to(base)
        clients = {v: make_client(v, config, cluster.credentials(v)) for v in Venue}
        engine = Engine(config, clients, "sim")
        try:
            t0 = time.monotonic()
            engine.start()
            started_s = time.monotonic() - t0
            stats = {v: c.limiter.stats() for v, c in clients.items()}
            read_fees = list(chance_calls)
        finally:
            t0 = time.monotonic()
            engine.stop(timeout_s=10)
            print(f"start {started_s:.1f}s stop {time.monotonic() - t0:.1f}s")

    assert {(v, g): s.rate_limited for v in Venue for g, s in stats[v].items()} == {
        (v, g): 0 for v in Venue for g in stats[v]}
    # one fee schedule per venue (the slow per-market check runs after start-up)
    assert sorted((v.value, m) for v, m in read_fees) == [("bithumb", "KRW-C000"),
                                                          ("upbit", "KRW-C000")]
