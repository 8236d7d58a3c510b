"""How many book messages per second can the sim publish on this machine?

    python tools/bench_sim.py [--markets 150] [--seconds 5] [--subscribers 1]

Builds a sim with ``--markets`` synthetic KRW markets (prices spread from 0.001 to 100M KRW so
every tick band is used), connects ``--subscribers`` WebSocket clients per venue subscribed to
every market (they drain frames on their own threads), then lets the market thread publish
unpaced for ``--seconds``. Prints messages/s, the median and p99 cost of one publish
(generate + record in the exchange + encode + queue to subscribers), the same for generation
alone and for encoding alone (references measured in the same run), and whether the sim can
drive ``--markets`` markets at 10 msg/s per venue (the issue's target: 150 markets).

    python tools/bench_sim.py --generator [--seconds 10] [--config config/sim.yaml]

Book level only (what ``karb backtest`` drives): ``MarketGenerator.events()`` for the config's
markets under each profile (demo, realistic), no JSON or sockets. Prints events/s of wall time
(and per CPU second: on a shared machine the fairer figure), the profile's events per simulated
second, and the speed-up over real time that allows.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import websocket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from karb.config import load_config  # noqa: E402
from karb.model import Venue  # noqa: E402
from karb.sim.cluster import SimCluster  # noqa: E402
from karb.sim.config import SimMarketConfig  # noqa: E402
from karb.sim.frames import orderbook_frame  # noqa: E402
from karb.sim.market import MarketGenerator  # noqa: E402

TARGET_HZ = 10.0


def synthetic_config(n_markets: int):
    base = load_config(Path(__file__).resolve().parent.parent / "config" / "sim.yaml")
    markets = [f"KRW-M{i:03d}" for i in range(n_markets)]
    prices = {m: SimMarketConfig(price=Decimal(f"{10 ** (-3 + 11 * i / max(1, n_markets - 1)):.6g}"))
              for i, m in enumerate(markets)}
    sim = dataclasses.replace(base.sim, markets=prices, replay_speed=1e6, enforce_rate_limits=False)
    return dataclasses.replace(base, markets=markets, sim=sim)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def drain(url: str, markets: list[str], stop: threading.Event, counter: list[int]) -> None:
    ws = websocket.create_connection(url, timeout=2)
    codes = ",".join(f'"{m}"' for m in markets)
    ws.send(f'[{{"ticket":"bench"}},{{"type":"orderbook","codes":[{codes}]}}]')
    while not stop.is_set():
        try:
            ws.recv_data()
            counter[0] += 1
        except websocket.WebSocketTimeoutException:
            continue
        except (websocket.WebSocketException, OSError):
            break
    ws.close()


def reference_costs(config, n: int = 3000) -> tuple[list[float], list[float]]:
    events = MarketGenerator(config.sim, config.markets).events()
    gen_costs, enc_costs = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        event = next(events)
        t1 = time.perf_counter()
        orderbook_frame(event.market, event.bids, event.asks, 1)
        t2 = time.perf_counter()
        gen_costs.append(t1 - t0)
        enc_costs.append(t2 - t1)
    return gen_costs, enc_costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markets", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--subscribers", type=int, default=1, help="WebSocket clients per venue")
    parser.add_argument("--generator", action="store_true",
                        help="book-level generator speed per profile, for the config's markets")
    parser.add_argument("--config", default=str(Path(__file__).resolve().parent.parent / "config" / "sim.yaml"))
    args = parser.parse_args()
    if args.generator:
        return generator_rates(load_config(args.config), args.seconds)
    config = synthetic_config(args.markets)
    gen_costs, enc_costs = reference_costs(config)

    unpaced = run(config, args.seconds, args.subscribers)
    paced_config = dataclasses.replace(config, sim=dataclasses.replace(config.sim, replay_speed=1.0))
    paced = run(paced_config, args.seconds, args.subscribers)
    published, elapsed, received, costs, _ = unpaced
    rate = published / elapsed
    needed = args.markets * 2 * TARGET_HZ
    print(f"markets: {args.markets} x 2 venues, subscribers per venue: {args.subscribers}")
    print(f"unpaced: {published} book messages in {elapsed:.2f} s = {rate:,.0f} msg/s "
          f"(clients, starved of the GIL, received {received:,})")
    print(f"publish cost (record in exchange + encode + queue to subscribers): median {statistics.median(costs) * 1e6:.1f} us, "
          f"p99 {percentile(costs, 0.99) * 1e6:.1f} us over {len(costs):,} publishes")
    print(f"reference, generation alone: median {statistics.median(gen_costs) * 1e6:.1f} us, "
          f"p99 {percentile(gen_costs, 0.99) * 1e6:.1f} us")
    print(f"reference, encoding one 30-level frame alone: median {statistics.median(enc_costs) * 1e6:.1f} us, "
          f"p99 {percentile(enc_costs, 0.99) * 1e6:.1f} us")
    verdict = "OK" if rate >= needed else f"SHORT by {needed - rate:,.0f} msg/s ({rate / needed:.0%} of target)"
    print(f"target {args.markets} markets x 10 msg/s x 2 venues = {needed:,.0f} msg/s: {verdict} "
          f"(headroom x{rate / needed:.2f}; max markets at 10 msg/s ~ {int(rate / (2 * TARGET_HZ))})")
    p_published, p_elapsed, p_received, _, p_lag = paced
    print(f"paced at the target: {p_published / p_elapsed:,.0f} msg/s published, "
          f"{p_received / p_elapsed:,.0f} frames/s received by {2 * args.subscribers} clients, "
          f"max lag behind schedule {p_lag * 1e3:.1f} ms")
    return 0


def generator_rates(config, seconds: float) -> int:
    """Events/s of ``MarketGenerator.events()`` per profile, and simulated events per second."""
    print(f"{len(config.markets)} markets x 2 venues, book level (no JSON, no sockets)")
    for profile in ("demo", "realistic"):
        sim = dataclasses.replace(config.sim, profile=profile)
        if profile == "realistic":  # the demo-only knobs are refused there: back to their defaults
            sim = dataclasses.replace(sim, update_hz=10.0, gaps_per_min=2.0, premium_vol_bps=1.0)
        events = MarketGenerator(sim, config.markets).events()
        count, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            for _ in range(1000):
                event = next(events)
            count += 1000
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        sim_s = event.t_ns / 1e9
        print(f"{profile:9s}: {count / wall:,.0f} events/s wall ({count / cpu:,.0f} per CPU second); "
              f"{count / sim_s:,.1f} events per simulated second; {sim_s / wall:,.0f}x real time "
              f"(7 days in {7 * 86400 / (sim_s / wall) / 60:.1f} min)")
    return 0


def run(config, seconds: float, subscribers: int):
    """Run a sim for ``seconds``; return (published, elapsed, frames received, publish costs, max lag)."""
    costs: list[float] = []
    received = [0]
    stop = threading.Event()
    with SimCluster.from_config(config) as cluster:
        market = cluster._market
        original = market.publish

        def timed(event):
            t0 = time.perf_counter()
            original(event)
            costs.append(time.perf_counter() - t0)

        market.publish = timed
        readers = [threading.Thread(target=drain, name=f"bench-ws-{v.value}-{i}", daemon=True,
                                    args=(cluster.endpoints(v).ws_url, config.markets, stop, received))
                   for v in Venue for i in range(subscribers)]
        for reader in readers:
            reader.start()
        time.sleep(0.5)  # let the subscriptions register
        start_count, start_received, start = cluster.market_stats().published, received[0], time.perf_counter()
        time.sleep(seconds)
        published = cluster.market_stats().published - start_count
        got = received[0] - start_received
        elapsed = time.perf_counter() - start
        lag = cluster.market_stats().max_lag_s
        stop.set()
    for reader in readers:
        reader.join(timeout=3)
    return published, elapsed, got, costs, lag


if __name__ == "__main__":
    sys.exit(main())
