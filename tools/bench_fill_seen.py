"""Measure order sent -> fill seen, with and without the private order streams, on the sim.

    python tools/bench_fill_seen.py [--orders 60] [--seed 7] [--fill-visible-ms 0]

Starts the loopback sim and the real REST clients, and runs the engine's ``Placer`` (the code
every leg goes through) on IOC limit orders that cross the book, alternating buy and sell so
balances stay put. Each order is run twice per venue, interleaved: once with the private
streams (``karb.order_stream``) following the leg, once with REST polling only. Per order:

  sent -> fill seen   the leg entering ``place_order`` .. the leg reaching FILLED, from the
                      leg's own state history (``time.monotonic_ns``)
  REST calls          ``get_order`` calls the Placer made to follow the leg (the private
                      request budget the streams save)

Upbit's placement answer is ``state: wait`` with no trades and Bithumb's carries ids only, so
on both venues the fill is seen from the stream or from a ``get_order`` poll
(``execution.poll_interval_ms``, doubling). The sim shows an order's fill, on REST and on the
stream alike, ``sim.venues.<v>.fill_visible_ms`` (default 30 ms) after placement: that delay
is the floor of both modes here, a modelling choice, not a measurement of the venues. Orders
are priced at the book's deepest level so that a book moving before the order arrives cannot
leave it unfilled (it still fills from the top).
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from karb.clock import SystemClock  # noqa: E402
from karb.config import load_config  # noqa: E402
from karb.exchanges.factory import make_client  # noqa: E402
from karb.journal import Journal  # noqa: E402
from karb.legs import Leg, LegState  # noqa: E402
from karb.model import OrderRequest, OrderType, Side, TimeInForce, Venue  # noqa: E402
from karb.order_stream import OrderStreams  # noqa: E402
from karb.placement import Placer  # noqa: E402
from karb.sim.cluster import SimCluster  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MARKET = "KRW-BTC"
VOLUME = Decimal("0.001")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=60, help="orders per venue per mode")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fill-visible-ms", type=float, default=None,
                        help="the sim's delay before a fill shows (default: the config's, 30)")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    config = load_config(ROOT / "config" / "sim.yaml")
    # The venues' own limits: a limit of ours above the venue's is corrected down by its
    # Remaining-Req header anyway, which stalled every other order here for the rest of a window.
    sim = dataclasses.replace(config.sim, seed=args.seed)
    if args.fill_visible_ms is not None:
        sim = dataclasses.replace(sim, venues=dataclasses.replace(sim.venues, **{
            v.value: dataclasses.replace(getattr(sim.venues, v.value), fill_visible_ms=args.fill_visible_ms)
            for v in Venue}))
    config = dataclasses.replace(config, markets=[MARKET], sim=sim)
    with SimCluster.from_config(config) as cluster, tempfile.TemporaryDirectory() as tmp:
        deadline = time.monotonic() + 10
        while cluster.market_stats().published < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        config = cluster.apply_to(config)
        clients = {v: make_client(v, config, cluster.credentials(v)) for v in Venue}
        clock = SystemClock()
        journal = Journal(str(Path(tmp) / "bench.sqlite"), clock)
        journal.start()
        streams = OrderStreams.from_config(config, {v: c.stream_token for v, c in clients.items()})
        streams.start()
        deadline = time.monotonic() + 10
        while not all(streams.is_up(v) for v in Venue) and time.monotonic() < deadline:
            time.sleep(0.02)
        placers = {"streams": Placer(clients, journal, config.execution, clock, streams=streams),
                   "REST polling": Placer(clients, journal, config.execution, clock)}
        seen: dict[tuple[str, Venue], list[float]] = {}
        calls: dict[tuple[str, Venue], int] = {}
        try:
            for i in range(args.orders):
                for venue in Venue:
                    for mode, placer in placers.items():
                        side = Side.BUY if i % 2 == 0 else Side.SELL
                        bids, asks = cluster.exchange(venue).book(MARKET)
                        price = asks[-1][0] if side is Side.BUY else bids[-1][0]
                        request = OrderRequest(venue, MARKET, side, OrderType.LIMIT, price=price, volume=VOLUME,
                                               tif=TimeInForce.IOC, client_id=f"bench-{uuid.uuid4().hex[:20]}")
                        leg = Leg(side.value, request)
                        before = placer.rest_refreshes
                        placer.run("bench", leg)
                        filled = [ns for state, ns in leg.history if state is LegState.FILLED]
                        if filled:
                            seen.setdefault((mode, venue), []).append((filled[0] - leg.sent_ns) / 1e6)
                        calls[(mode, venue)] = calls.get((mode, venue), 0) + placer.rest_refreshes - before
                        time.sleep(0.3)  # four orders per 1.2 s: well inside both venues' order limits
        finally:
            streams.stop()
            journal.stop()
            for client in clients.values():
                client.close()
    print(f"sent -> fill seen, IOC limit {VOLUME} {MARKET}, {args.orders} orders per venue per mode "
          f"(sim fill_visible_ms={config.sim.venues.upbit.fill_visible_ms:g}, "
          f"poll_interval_ms={config.execution.poll_interval_ms}, "
          f"stream_fallback_ms={config.execution.stream_fallback_ms})")
    print(f"{'venue':8} {'mode':13} {'filled':>6} {'median ms':>10} {'p99 ms':>8} {'get_order/leg':>14}")
    for venue in Venue:
        for mode in placers:
            values = seen.get((mode, venue), [])
            if not values:
                print(f"{venue.value:8} {mode:13} {0:>6}")
                continue
            print(f"{venue.value:8} {mode:13} {len(values):>6} {statistics.median(values):>10.2f} "
                  f"{pct(values, 0.99):>8.2f} {calls[(mode, venue)] / args.orders:>14.2f}")


if __name__ == "__main__":
    main()
