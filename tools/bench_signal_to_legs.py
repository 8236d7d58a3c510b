"""Measure book update -> both legs sent, against the loopback sim, with references.

    python tools/bench_signal_to_legs.py [--trades 40] [--seed 11] [--switch-interval S]

Wires the real path (sim venues on loopback, WebSocket feeds, books, strategy thread, risk,
journal, executor with the real REST clients), forces a dislocation, waits for the trade,
and repeats, alternating the cheap venue so inventory stays balanced. Per trade, from the
journal's stage timestamps (all ``time.monotonic_ns``):

  frame -> signal   the feed thread received the frame .. the strategy built the signal
  signal -> sent    signal .. the later of the two legs entering ``place_order``
                    (risk reservation, intent committed to SQLite, hand-off to two leg threads)
  frame -> sent     the whole path: book update to both legs sent
  leg gap           between the two legs entering ``place_order`` (how "at once" they are)

"Sent" is a leg thread entering the client's ``place_order``; the client then signs and
writes the request. The sim runs in this process, so its threads share the GIL with the
engine's: a woken leg thread can wait up to ``sys.getswitchinterval()`` (5 ms by default)
for the GIL while the other leg signs its request; ``--switch-interval`` shows the effect.

References, measured in the same run on the same machine while the engine is up:

  thread wake       ``Event.set()`` on one thread until the waiting thread runs: the floor for
                    any of the path's three cross-thread hops (feed -> strategy -> two legs)
  REST round trip   one ``get_order`` to the sim over loopback HTTP with auth: what each leg
                    spends on the wire right after it is sent
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from karb.book import BookBoard  # noqa: E402
from karb.clock import SystemClock  # noqa: E402
from karb.config import parse_config  # noqa: E402
from karb.exchanges.factory import make_client  # noqa: E402
from karb.execution import Executor  # noqa: E402
from karb.inventory import Inventory  # noqa: E402
from karb.journal import Journal  # noqa: E402
from karb.market_data import MarketData  # noqa: E402
from karb.model import Venue  # noqa: E402
from karb.risk import Risk  # noqa: E402
from karb.rules import RulesBook  # noqa: E402
from karb.sim.cluster import SimCluster  # noqa: E402
from karb.strategy import Strategy  # noqa: E402

MARKET = "KRW-BTC"
UNLIMITED = {"public_per_s": 100000, "private_per_s": 100000, "order_per_s": 100000}


def build_config(tmp: Path, seed: int):
    return parse_config({
        "mode": "live",
        "markets": [MARKET],
        "venues": {
            # rate limits off the table: the REST reference measures a round trip, not pacing
            "upbit": {"rest_url": "http://127.0.0.1:0", "ws_url": "ws://127.0.0.1:0",
                      "taker_fee": "0.0005", "maker_fee": "0.0005", "rate_limits": UNLIMITED},
            "bithumb": {"rest_url": "http://127.0.0.1:0", "ws_url": "ws://127.0.0.1:0",
                        "taker_fee": "0.0004", "maker_fee": "0.0004", "rate_limits": UNLIMITED},
        },
        "strategy": {"threshold_bps": 25, "cooldown_ms": 600, "max_skew_ms": 1000},
        "risk": {"max_trade_krw": "2000000", "kill_switch_file": str(tmp / "KILL")},
        "journal": {"path": str(tmp / "bench.sqlite")},
        "sim": {"seed": seed, "gaps_per_min": 0, "premium_vol_bps": 0.5, "update_hz": 20,
                "enforce_rate_limits": False,  # the REST reference loop is a latency probe
                "markets": {MARKET: {"price": "140000000"}}},
    })


def percentiles(values_ns: list[int]) -> tuple[float, float, int]:
    """(median, p99) in microseconds, and the sample count."""
    v = sorted(values_ns)
    if not v:
        return float("nan"), float("nan"), 0
    p99 = v[min(len(v) - 1, int(round(0.99 * (len(v) - 1))))]
    return statistics.median(v) / 1000, p99 / 1000, len(v)


def thread_wake_reference(samples: int = 2000) -> list[int]:
    """ns from ``Event.set()`` until the waiting thread runs, one waiter, ``samples`` times."""
    go, ready = threading.Event(), threading.Event()
    stamps: list[int] = []
    out: list[int] = []

    def waiter():
        for _ in range(samples):
            ready.set()
            go.wait()
            out.append(time.monotonic_ns() - stamps[-1])
            go.clear()

    t = threading.Thread(target=waiter, name="bench-waiter", daemon=True)
    t.start()
    for _ in range(samples):
        ready.wait()
        ready.clear()
        time.sleep(0.0002)  # let the waiter block in wait()
        stamps.append(time.monotonic_ns())
        go.set()
        while len(out) < len(stamps) and t.is_alive():
            time.sleep(0)
    t.join(5)
    return out


def rest_reference(client, order_id: str, samples: int = 200) -> list[int]:
    out = []
    for _ in range(samples):
        t0 = time.monotonic_ns()
        client.get_order(order_id=order_id)
        out.append(time.monotonic_ns() - t0)
    return out


def run(trades: int, seed: int, switch_interval: float | None) -> int:
    if switch_interval:
        sys.setswitchinterval(switch_interval)
    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    tmp = Path(tempfile.mkdtemp(prefix="karb-bench-"))
    base = build_config(tmp, seed)
    cluster = SimCluster.from_config(base).start()
    config = cluster.apply_to(base)
    clock = SystemClock()
    clients = {v: make_client(v, config, cluster.credentials(v)) for v in Venue}
    fees = {v: (config.venues[v].taker_fee, config.venues[v].maker_fee) for v in Venue}
    rules = RulesBook.fallback([MARKET], fees)
    for v in Venue:
        rules.update(v, clients[v].get_market_info([MARKET]))
    risk = Risk(config, rules, clock)
    for v in Venue:
        risk.ledger.load(v, clients[v].get_balances())
    board = BookBoard([MARKET])
    market_data = MarketData(config, board)
    journal = Journal(config.journal.path)
    executor = Executor(clients, rules, risk, journal, config, clock)
    strategy = Strategy(board, rules, risk, Inventory(config.inventory, risk.ledger), config,
                        clock, executor.submit)
    leg_gaps: list[int] = []
    executor.add_listener(lambda trade: leg_gaps.append(abs(trade.buy.sent_ns - trade.sell.sent_ns)))
    journal.start()
    market_data.start()
    executor.start()
    try:
        deadline = time.monotonic() + 10
        while not all(board.get(v, MARKET).view.valid for v in Venue):
            if time.monotonic() > deadline:
                print("sim books never became valid", file=sys.stderr)
                return 1
            time.sleep(0.01)
        strategy.start()
        done = 0
        for i in range(trades):
            cheap = Venue.BITHUMB if i % 2 == 0 else Venue.UPBIT
            cluster.dislocate(MARKET, cheap, bps=80, seconds=0.4)
            deadline = time.monotonic() + 5
            while executor.stats()["trades"] <= done and time.monotonic() < deadline:
                time.sleep(0.005)
            executor.wait_idle(5)
            done = executor.stats()["trades"]
            time.sleep(0.65)  # past the cooldown and the dislocation: one signal per dislocation
        strategy.stop()
        journal.flush()
        rows = journal.query("SELECT recv_ns, signal_ns, submit_ns, sent_ns, status FROM signals "
                             "WHERE sent_ns IS NOT NULL")
        last = journal.query("SELECT order_id FROM orders WHERE venue='upbit' AND order_id IS NOT NULL "
                             "LIMIT 1")
        wake = thread_wake_reference()
        rest = rest_reference(clients[Venue.UPBIT], last[0]["order_id"]) if last else []
        print(f"K-Arb signal-to-legs benchmark: {len(rows)} trades against the loopback sim "
              f"({sum(r['status'] == 'filled' for r in rows)} fully filled), "
              f"switch interval {sys.getswitchinterval() * 1e3:g} ms")
        print(f"{'stage':<22}{'median us':>12}{'p99 us':>12}{'n':>7}")
        for name, values in (
            ("frame -> signal", [r["signal_ns"] - r["recv_ns"] for r in rows]),
            ("signal -> legs sent", [r["sent_ns"] - r["signal_ns"] for r in rows]),
            ("  of which submit->sent", [r["sent_ns"] - r["submit_ns"] for r in rows]),
            ("frame -> legs sent", [r["sent_ns"] - r["recv_ns"] for r in rows]),
            ("leg gap", leg_gaps),
            ("ref: thread wake", wake),
            ("ref: REST round trip", rest),
        ):
            med, p99, n = percentiles(values)
            print(f"{name:<22}{med:>12.1f}{p99:>12.1f}{n:>7}")
        return 0 if rows else 1
    finally:
        strategy.stop()
        executor.stop(5)
        market_data.stop(3)
        journal.stop()
        for c in clients.values():
            c.close()
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=40, help="dislocations to trade (default 40)")
    parser.add_argument("--seed", type=int, default=11, help="sim seed (default 11)")
    parser.add_argument("--switch-interval", type=float, default=None, metavar="S",
                        help="sys.setswitchinterval for this run (default: Python's 0.005)")
    args = parser.parse_args()
    return run(args.trades, args.seed, args.switch_interval)


if __name__ == "__main__":
    sys.exit(main())
