"""What one wake of the strategy thread costs at N markets, beside references from the same run.

    python tools/bench_strategy.py [--markets 150] [--wakes 3000]

N markets (prices log-uniform over 1 .. 100 M KRW, seeded) with 15-level books on both venues
and no edge (the common case: nearly every book change finds nothing), funded so that an edge
would trade. Each wake, as in the engine, one book changes through the feeds' sink
(``BookChanges`` notes it) and the strategy thread's ``step`` runs; timed alone:

* ``step``: a wake (the markets the feeds noted, the changed ones evaluated);
* ``step full``: the full pass due every ``wait_timeout_ms`` (every book's version compared,
  the markets whose answer can change without a book change evaluated);
* ``evaluate, all markets``: the same wake as a pass over every market (``evaluate(now,
  changed_only=True)``, what the thread ran before ``step``), and a full ``evaluate`` (every
  market evaluated: the thread's old full pass, the backtest's full pass);
* ``evaluate, one market``: the backtest's per-event call (``markets=(changed,)``).

References, same run: applying one snapshot to a book (the feed thread's share of a change) and
a fixed pure-Python loop (how fast this machine is right now).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loguru import logger  # noqa: E402

from karb.book import BookBoard  # noqa: E402
from karb.book_changes import BookChanges  # noqa: E402
from karb.clock import ManualClock  # noqa: E402
from karb.config import parse_config  # noqa: E402
from karb.inventory import Inventory  # noqa: E402
from karb.model import Balance, Venue  # noqa: E402
from karb.risk import Risk  # noqa: E402
from karb.rules import RulesBook  # noqa: E402
from karb.strategy import Strategy  # noqa: E402


def build(n: int, seed: int):
    rng = random.Random(seed)
    markets = [f"KRW-C{i:03d}" for i in range(n)]
    work = Path(tempfile.mkdtemp(prefix="karb-bench-strategy-"))
    config = parse_config({
        "markets": markets,
        "venues": {v: {"rest_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1",
                       "taker_fee": fee, "maker_fee": fee}
                   for v, fee in (("upbit", "0.0005"), ("bithumb", "0.0004"))},
        "risk": {"kill_switch_file": str(work / "KILL"), "max_trade_krw": "100000000"},
        "journal": {"path": str(work / "journal.sqlite")},
    })
    fees = {v: (config.venues[v].taker_fee, config.venues[v].maker_fee) for v in Venue}
    rules = RulesBook.fallback(markets, fees)
    clock = ManualClock()
    board = BookBoard(markets)
    changes = BookChanges(markets)
    risk = Risk(config, rules, clock)
    strategy = Strategy(board, rules, risk, Inventory(config.inventory, risk.ledger), config, clock,
                        lambda signal: None, changes=changes)
    prices = {m: 10 ** rng.uniform(0, 8) for m in markets}
    funds = {"KRW": Balance("KRW", Decimal(10 ** 9))}
    funds.update({m[4:]: Balance(m[4:], Decimal(10 ** 9)) for m in markets})
    for venue in Venue:
        risk.ledger.load(venue, funds)
    sinks = {v: changes.sink(board.sink(v)) for v in Venue}
    ts = [1]

    def change(market: str, venue: Venue, shift: float = 0.0) -> None:
        p = prices[market] * (1 + shift)
        ts[0] += 1
        sinks[venue].on_snapshot(market, [(p * (1 - 0.001 * (k + 1)), 1.0) for k in range(15)],
                                 [(p * (1 + 0.001 * (k + 1)), 1.0) for k in range(15)],
                                 ts[0], clock.monotonic_ns())

    for market in markets:
        for venue in Venue:
            change(market, venue)
    strategy.step(clock.monotonic_ns(), full=True)
    return markets, strategy, clock, change


def percentiles(samples: list[int]) -> str:
    v = sorted(samples)
    return f"p50 {v[len(v) // 2] / 1000:8.1f} us   p99 {v[int(len(v) * 0.99)] / 1000:8.1f} us"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markets", type=int, default=150)
    parser.add_argument("--wakes", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logger.remove()
    markets, strategy, clock, change = build(args.markets, args.seed)
    n = len(markets)
    timer = time.perf_counter_ns
    count = [0]

    def one_change() -> None:
        count[0] += 1
        change(markets[count[0] % n], Venue.UPBIT, (count[0] % 7) * 1e-5)

    def timed(run, changes: bool = True, wakes: int = args.wakes) -> list[int]:
        out = []
        for _ in range(wakes):
            if changes:
                one_change()
            clock.advance(ns=100_000)
            t0 = timer()
            run()
            out.append(timer() - t0)
        return out

    def apply_one() -> list[int]:
        out = []
        for _ in range(args.wakes):
            t0 = timer()
            one_change()
            out.append(timer() - t0)
        strategy.step(clock.monotonic_ns(), full=True)
        return out

    def python_loop() -> list[int]:
        out = []
        for _ in range(args.wakes):
            t0 = timer()
            d: dict = {}
            for i in range(1000):
                d[i & 63] = i
            out.append(timer() - t0)
        return out

    now = clock.monotonic_ns
    rows = [
        ("step (a wake, one book changed)", timed(lambda: strategy.step(now(), False))),
        ("step full (the periodic full pass)", timed(lambda: strategy.step(now(), True), changes=False)),
        ("evaluate, all markets, changed only", timed(lambda: strategy.evaluate(now(), True))),
        ("evaluate, all markets, full", timed(lambda: strategy.evaluate(now()), wakes=max(args.wakes // 10, 10))),
        ("evaluate, one market (backtest)",
         timed(lambda: strategy.evaluate(now(), True, (markets[count[0] % n],)))),
        ("reference: one snapshot applied", apply_one()),
        ("reference: 1000-iteration dict loop", python_loop()),
    ]
    print(f"strategy wake cost, {n} markets, {args.wakes} wakes (no edge in any market)")
    for name, samples in rows:
        print(f"  {name:<38} {percentiles(samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
