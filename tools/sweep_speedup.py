"""Does a sweep use every core? Times the same grid serially and on the process pool.

    python tools/sweep_speedup.py [--points 6] [--work 400000] [--repeat 1]

Each point runs ``burn``: a CPU-bound stand-in for a backtest (``work`` rounds of SHA-256 after
checking the point's config), so the measurement is the runner's, not a backtest's. Prints
serial time, parallel time, cores and the speed-up; on an idle machine the parallel time is
near serial / cores (plus one interpreter start per worker).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from karb.backtest.sweep import (Base, ProcessPoolRunner, SerialRunner, config_for,  # noqa: E402
                                 grid, parse_sets, run_sweep)


def burn(base: Base, overrides: dict[str, Any], work: int = 200_000) -> dict[str, Any]:
    """CPU for ``work`` hashing rounds, then a summary whose PnL is a known function of the
    point: ``risk.max_trade_krw / 1000 - (strategy.threshold_bps - 10) ** 2``."""
    cpu = time.process_time()
    config = config_for(base, overrides)
    digest = b"karb"
    for _ in range(work):
        digest = hashlib.sha256(digest).digest()
    threshold = Decimal(str(config.strategy.threshold_bps))
    pnl = config.risk.max_trade_krw / 1000 - (threshold - 10) ** 2
    return {"pnl_krw": str(pnl), "trades": int(threshold), "capture": "0.5",
            "leg_success_rate": "1", "max_drawdown_krw": "0", "pid": os.getpid(),
            "digest": digest.hex()[:8], "cpu_s": time.process_time() - cpu}


def heavy(base: Base, overrides: dict[str, Any]) -> dict[str, Any]:
    return burn(base, overrides, int(os.environ.get("SWEEP_WORK", "400000")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=6)
    parser.add_argument("--work", type=int, default=400_000)
    parser.add_argument("--repeat", type=int, default=1,
                        help="serial/parallel pairs, interleaved (other load comes and goes)")
    args = parser.parse_args()
    os.environ["SWEEP_WORK"] = str(args.work)  # spawned workers inherit the environment
    base = str(ROOT / "config" / "sim.yaml")
    values = ",".join(str(5 + i) for i in range(args.points))
    points = grid(base, parse_sets([f"strategy.threshold_bps={values}"]))
    cores = os.cpu_count() or 1
    speedups = []
    for _ in range(args.repeat):
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        serial = run_sweep(heavy, base, points, SerialRunner())
        t1 = time.perf_counter()
        parallel = run_sweep(heavy, base, points, ProcessPoolRunner())
        t2 = time.perf_counter()
        assert [r.summary["pnl_krw"] for r in serial] == [r.summary["pnl_krw"] for r in parallel]
        pids = len({r.summary["pid"] for r in parallel})
        cpu = sum(r.summary["cpu_s"] for r in parallel)
        speedups.append((t1 - t0) / (t2 - t1))
        print(f"points {len(points)}  cores {cores}  workers used {pids}  load before {load:.2f}  "
              f"serial {t1 - t0:.2f} s  parallel {t2 - t1:.2f} s  (serial / cores {(t1 - t0) / cores:.2f} s)"
              f"  speed-up {speedups[-1]:.2f}x  cores busy {cpu / (t2 - t1):.2f}")
    if args.repeat > 1:
        print(f"median speed-up {statistics.median(speedups):.2f}x, best {max(speedups):.2f}x "
              f"(ideal {min(cores, len(points))}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
