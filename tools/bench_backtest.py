"""How fast is ``karb backtest``, stage by stage? Microseconds per book event, and a 7-day projection.

    python tools/bench_backtest.py [--config config/backtest.yaml] [--seconds 900] [--repeat 3]
                                   [--no-oracles]

Each stage runs ``--repeat`` times on ``--seconds`` of simulated time of the config's markets;
the median is printed, per book event, as CPU time (``time.process_time``: the fairer figure
on a shared machine) and, in brackets, wall time. The stages follow ``run_backtest``'s
parallel layout (``karb.backtest.shared``): one feeder process generates the stream, each of
the three runs reads it from a pipe.

* ``generator``: ``MarketGenerator.events()`` with the float mirror a backtest uses (the
  same-run reference);
* ``feeder``: the generator plus pickling its batches (the feeder process's work, less
  the pipe writes);
* ``decode + apply``: a run's ``FedSource`` reading those batches (from memory here) and
  applying every event to a ``BookBoard``;
* ``whole run``: ``_simulate`` reading the same batches (decode, apply, the driver loop,
  strategy, legs, journal), with ``Strategy.evaluate`` timed inside it (the driver thread's
  CPU time, ``time.thread_time``; timing adds ~0.3 us per call; split into the passes over
  the event's market and the periodic passes over every market); ``rest`` is the whole run less
  decode + apply and evaluate: the loop, histogram, trades and the journal thread. Then the
  same for the oracle and the unconstrained run unless ``--no-oracles``.

The projection multiplies by the book events of 7 simulated days (the measured events per
simulated second x 604,800) and puts the feeder and the three runs on 2 cores (wall = the
larger of the slowest process and half the summed CPU). Other processes on the machine inflate
wall time, and CPU time less so.
"""
from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loguru import logger  # noqa: E402

from karb.backtest.run import (ORIGIN_NS, UNCONSTRAINED, WALL_ORIGIN_NS, BacktestOptions,  # noqa: E402
                               _scaled, _simulate, oracle_config, start_balances,
                               unconstrained_config)
from karb.backtest.shared import BATCH, PROTOCOL, FedSource  # noqa: E402
from karb.book import BookBoard  # noqa: E402
from karb.clock import NS_PER_S  # noqa: E402
from karb.config import load_config  # noqa: E402
from karb.model import Venue  # noqa: E402
from karb.sim.market import MarketGenerator  # noqa: E402
from karb.strategy import Strategy  # noqa: E402

WEEK_S = 7 * 86400


def _timed(fn) -> tuple[float, float, int]:
    """(cpu s, wall s, events) of ``fn()``, which returns its event count."""
    cpu, wall = time.process_time(), time.perf_counter()
    events = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, events


def _depth(config) -> int:
    return max(config.venues.upbit.ws_levels, config.venues.bithumb.ws_levels)


def generator_only(config, seconds: float) -> int:
    end = int(seconds * NS_PER_S)
    n = 0
    for event in MarketGenerator(config.sim, config.markets, float_depth=_depth(config)).events():
        if event.t_ns > end:
            return n
        n += 1
    return n


def feeder(config, seconds: float, out: list[bytes]) -> int:
    """What ``karb.backtest.shared.feed`` does before its pipe writes; the batches go to ``out``."""
    venues = {v: i for i, v in enumerate(Venue)}
    markets = {m: i for i, m in enumerate(config.markets)}
    end = int(seconds * NS_PER_S)
    out.clear()
    batch, n = [], 0
    for event in MarketGenerator(config.sim, config.markets, float_depth=_depth(config)).events():
        if event.t_ns > end:
            break
        batch.append((event.t_ns, venues[event.venue], markets[event.market], event.fbids, event.fasks))
        n += 1
        if len(batch) == BATCH:
            out.append(pickle.dumps(batch, PROTOCOL))
            batch = []
    out.append(pickle.dumps(batch, PROTOCOL))
    out.append(b"")
    return n


class _Replay:
    """A feeder connection replaying ``messages`` from memory."""

    def __init__(self, messages: list[bytes]):
        self._messages = iter(messages)

    def recv_bytes(self) -> bytes:
        return next(self._messages)


def decode_and_apply(config, messages: list[bytes]) -> int:
    board = BookBoard(config.markets, depth=_depth(config))
    source = FedSource(_Replay(messages), config.markets, board, ORIGIN_NS, WALL_ORIGIN_NS)
    apply = source.apply
    n = 0
    for t_ns, event in source.events():
        apply(event, t_ns)
        n += 1
    return n


class _EvaluateTimer:
    """``Strategy.evaluate`` wrapped: the calling thread's CPU seconds and calls while installed."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0
        self.all_seconds = 0.0  # of those, the passes over every market (the periodic pass)
        self.all_calls = 0
        self.trades = 0
        self._original = Strategy.evaluate

    def __enter__(self):
        original, clock, timer = self._original, time.thread_time, self

        def evaluate(strategy, *args, **kwargs):
            t0 = clock()
            try:
                return original(strategy, *args, **kwargs)
            finally:
                spent = clock() - t0
                timer.seconds += spent
                timer.calls += 1
                if kwargs.get("markets") is None:
                    timer.all_seconds += spent
                    timer.all_calls += 1
        Strategy.evaluate = evaluate
        return self

    def __exit__(self, *exc):
        Strategy.evaluate = self._original


def whole_run(config, seconds: float, label: str, messages: list[bytes], timer: _EvaluateTimer) -> int:
    options = BacktestOptions(days=seconds / 86400, oracle=False, parallel=False)
    start = start_balances(config, options)
    if label == "unconstrained":
        start = _scaled(start, UNCONSTRAINED)
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        stats = _simulate(config, options, Path(tmp) / "j.sqlite", None, label, start,
                          oracle=label != "backtest", feed=_Replay(messages))
    timer.trades = stats.summary["trades"]
    return stats.events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "backtest.yaml"))
    parser.add_argument("--seconds", type=float, default=900.0, help="simulated seconds per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-oracles", action="store_true", help="time the backtest run only")
    args = parser.parse_args()
    logger.remove()
    config = load_config(args.config)
    runs = [("backtest", config)]
    if not args.no_oracles:
        runs += [("oracle", oracle_config(config)),
                 ("unconstrained", unconstrained_config(oracle_config(config)))]
    print(f"{len(config.markets)} markets, profile {config.sim.profile}, {args.seconds:,.0f} sim s "
          f"per run, median of {args.repeat}; us per book event as CPU (wall)")

    def median_of(fn) -> tuple[float, float, int]:
        samples = [_timed(fn) for _ in range(args.repeat)]
        events = samples[0][2]
        return (statistics.median(s[0] for s in samples) / events * 1e6,
                statistics.median(s[1] for s in samples) / events * 1e6, events)

    gen_cpu, gen_wall, events = median_of(lambda: generator_only(config, args.seconds))
    rate = events / args.seconds
    print(f"  events: {events:,} ({rate:.1f} per sim s; 7 days = {rate * WEEK_S / 1e6:.1f} million)")
    print(f"  generator              {gen_cpu:6.1f} ({gen_wall:.1f})")
    messages: list[bytes] = []
    feed_cpu, feed_wall, _ = median_of(lambda: feeder(config, args.seconds, messages))
    print(f"  feeder                 {feed_cpu:6.1f} ({feed_wall:.1f})   pickle {feed_cpu - gen_cpu:.1f}")
    da_cpu, da_wall, _ = median_of(lambda: decode_and_apply(config, messages))
    print(f"  decode + apply         {da_cpu:6.1f} ({da_wall:.1f})")
    per_run = {}
    for label, cfg in runs:
        timers: list[_EvaluateTimer] = []

        def one():
            with _EvaluateTimer() as timer:
                timers.append(timer)
                return whole_run(cfg, args.seconds, label, messages, timer)
        cpu, wall, n = median_of(one)
        ev = statistics.median(t.seconds for t in timers) / n * 1e6
        calls = statistics.median(t.calls for t in timers)
        t = timers[len(timers) // 2]
        one_market = (t.seconds - t.all_seconds) / max(1, t.calls - t.all_calls) * 1e6
        all_markets = t.all_seconds / max(1, t.all_calls) * 1e6
        per_run[label] = (cpu, wall)
        print(f"  whole run {label:13s} {cpu:6.1f} ({wall:.1f})   evaluate {ev:.1f} "
              f"({ev * n / calls if calls else 0:.1f} per call, {calls / n:.2f} calls per event; "
              f"one market {one_market:.1f}, every market {all_markets:.1f} in "
              f"{t.all_calls / max(1, t.calls):.0%} of calls), "
              f"rest ~{cpu - da_cpu - ev:.1f}; {timers[0].trades} trades; "
              f"{args.seconds / (wall * n / 1e6):,.0f} sim s / wall s")
    week_events = rate * WEEK_S
    for what, index, feed_us in (("CPU", 0, feed_cpu), ("wall", 1, feed_wall)):
        each = {"feeder": feed_us * week_events / 1e6}
        each.update({k: v[index] * week_events / 1e6 for k, v in per_run.items()})
        total = max(max(each.values()), sum(each.values()) / 2)
        print(f"  7 days from {what:4s}: " + ", ".join(f"{k} {v / 60:,.1f} min" for k, v in each.items())
              + f"; all on 2 cores ~{total / 60:,.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
