"""A request burst from many threads against the loopback sim: 429s and time against the limit.

    python tools/bench_ratelimit.py [--venue upbit] [--group public] [--requests 1000]
                                    [--threads 8] [--rate R]

Starts the simulated venues in this process with their rate limits enforced (the sim counts
each venue group per fixed second, as ``karb.sim.rest_upbit.GROUP_LIMITS`` sets), builds the
venue's real REST client with ``rate_limits`` set to the group's limit (``--rate``, default the
sim's), and fires ``--requests`` calls of the group from ``--threads`` threads at once:

  upbit public    ``GET /v1/ticker``    (Upbit's ``ticker`` group, 10/s per IP)
  upbit private   ``GET /v1/accounts``  (Upbit's ``default`` group, 30/s per key)
  bithumb public  ``GET /v1/ticker``    (Bithumb's public category, 150/s)
  bithumb private ``GET /v1/accounts``  (Bithumb's private category, 140/s)

Reads are not retried (``retry_reads: 0``), so every 429 the sim answers is counted. Printed:
requests, threads, group, limit, wall time, the minimum time the limit allows
((ceil(requests / limit) - 1) windows: the first window's requests go at once; the limit is
the ordinary calls' share, less the priority reserve of the private group), their ratio and
the 429 count. The acceptance is zero 429s and a ratio within 1.05.
"""
from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from karb.config import parse_config  # noqa: E402
from karb.exchanges.errors import RateLimited  # noqa: E402
from karb.exchanges.factory import make_client  # noqa: E402
from karb.exchanges.ratelimit import Group  # noqa: E402
from karb.model import Venue  # noqa: E402
from karb.sim.cluster import SimCluster  # noqa: E402
from karb.sim.rest_bithumb import GROUP_LIMITS  # noqa: E402 (Bithumb's groups added to Upbit's)

MARKET = "KRW-BTC"
SIM_GROUP = {  # (venue, our group) -> the sim's group name for the call the burst makes
    (Venue.UPBIT, Group.PUBLIC): "ticker", (Venue.UPBIT, Group.PRIVATE): "default",
    (Venue.BITHUMB, Group.PUBLIC): "public", (Venue.BITHUMB, Group.PRIVATE): "private",
}


@dataclass(frozen=True)
class BurstResult:
    venue: str
    group: str
    requests: int
    threads: int
    limit: int
    reserve: int  # of the limit, kept for priority calls: the burst's calls are ordinary
    window_s: float
    wall_s: float
    rate_limited: int
    errors: int
    corrections: int  # Remaining-Req answers that said fewer were left than we counted

    @property
    def minimum_s(self) -> float:
        return (math.ceil(self.requests / (self.limit - self.reserve)) - 1) * self.window_s

    @property
    def ratio(self) -> float:
        return self.wall_s / self.minimum_s if self.minimum_s else math.inf

    def lines(self) -> list[str]:
        return [
            f"requests     {self.requests}",
            f"threads      {self.threads}",
            f"group        {self.venue} {self.group}",
            f"limit        {self.limit} per {self.window_s:g} s"
            + (f" ({self.limit - self.reserve} for ordinary calls, {self.reserve} kept for priority)"
               if self.reserve else ""),
            f"wall time    {self.wall_s:.3f} s",
            f"minimum time {self.minimum_s:.3f} s",
            f"ratio        {self.ratio:.4f}",
            f"429 count    {self.rate_limited}",
            f"other errors {self.errors}",
            f"Remaining-Req corrections {self.corrections}",
        ]


def sim_config(venue: Venue, group: Group, rate: float | None):
    rate = rate if rate is not None else GROUP_LIMITS[SIM_GROUP[(venue, group)]]
    limits = {"public_per_s": 1000, "private_per_s": 1000, "order_per_s": 1000, "retry_reads": 0}
    limits[f"{group.value}_per_s"] = rate
    venues = {
        v.value: {"rest_url": "http://127.0.0.1:0", "ws_url": "ws://127.0.0.1:0",
                  "taker_fee": "0.0005", "maker_fee": "0.0005", "rate_limits": dict(limits)}
        for v in Venue
    }
    return parse_config({
        "mode": "live", "markets": [MARKET], "venues": venues, "log": {"file": None},
        "sim": {"seed": 5, "update_hz": 2, "gaps_per_min": 0, "enforce_rate_limits": True,
                "markets": {MARKET: {"price": "140000000"}}},
    })


def run_burst(cluster: SimCluster, config, venue: Venue, group: Group, requests: int,
              threads: int) -> BurstResult:
    """Fire ``requests`` calls of ``group`` from ``threads`` threads released together."""
    client = make_client(venue, config, cluster.credentials(venue))
    call = (lambda: client.get_ticker([MARKET])) if group is Group.PUBLIC else client.get_balances
    window = client.limiter.windows[group]
    counter = iter(range(requests))
    counter_lock = threading.Lock()
    rate_limited = errors = 0
    tally_lock = threading.Lock()
    start = threading.Barrier(threads + 1)

    def worker() -> None:
        nonlocal rate_limited, errors
        start.wait()
        while True:
            with counter_lock:
                if next(counter, None) is None:
                    return
            try:
                call()
            except RateLimited:
                with tally_lock:
                    rate_limited += 1
            except Exception:  # noqa: BLE001 (counted and reported, the burst goes on)
                with tally_lock:
                    errors += 1

    workers = [threading.Thread(target=worker, name=f"burst-{i}") for i in range(threads)]
    for t in workers:
        t.start()
    try:
        start.wait()
        began = time.monotonic()
        for t in workers:
            t.join()
        wall = time.monotonic() - began
    finally:
        client.close()
    return BurstResult(venue.value, group.value, requests, threads, window.limit, window.reserve,
                       window.window_s,
                       wall, rate_limited, errors, window.stats().venue_corrections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venue", choices=[v.value for v in Venue], default="upbit")
    parser.add_argument("--group", choices=["public", "private"], default="public")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rate", type=float, default=None,
                        help="our limit, requests/s (default: the sim's limit for the group)")
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    venue, group = Venue(args.venue), Group(args.group)
    config = sim_config(venue, group, args.rate)
    with SimCluster.from_config(config).start() as cluster:
        result = run_burst(cluster, cluster.apply_to(config), venue, group, args.requests,
                           args.threads)
    print("\n".join(result.lines()))
    return 0 if result.rate_limited == 0 and result.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
