"""Prototype measurement (issue 12): Bithumb legacy delta apply with the book's per-change loop
in C (``legacy_apply.c`` beside this file), against the pure-Python path, in the same run.

    python tools/proto/bench_legacy_native.py [--messages 20000] [--rounds 3]

Builds the extension with the system C compiler into a temporary directory, then runs
``tools/bench_feed.py``'s ``bithumb_legacy`` stream twice: as shipped, and with
``Book._apply_locked``'s change loop replaced by ``legacy_apply.apply_changes`` (same checks,
same results: the bench verifies the final book against its reference). Not part of the engine.
"""
from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE.parent))

import bench_feed  # noqa: E402
from karb.book import _INF, Book, BookBoard, BookView, _new_view  # noqa: E402


def build(workdir: str):
    target = Path(workdir) / f"legacy_apply{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
                    str(HERE / "legacy_apply.c"), "-o", str(target)], check=True)
    spec = importlib.util.spec_from_file_location("legacy_apply", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.apply_changes


def native_apply_locked(apply_changes):
    def _apply_locked(self, changes, exch_ts_ms, recv_ns, wall_ms):
        if not self._sorted_ok:
            self._materialize()
        bids, asks = self._bids, self._asks
        view = self.view
        top_bids, top_asks, depth = view.bids, view.asks, self.depth
        bid_edge = top_bids[-1][0] if len(top_bids) == depth else 0.0
        ask_edge = top_asks[-1][0] if len(top_asks) == depth else _INF
        flags = apply_changes(bids, asks, self._bid_keys, self._ask_keys, changes, bid_edge, ask_edge)
        if flags < 0:
            return "bad delta value"
        if flags & 1:
            top_bids = tuple(bids[:-depth - 1:-1])
        if flags & 2:
            top_asks = tuple(asks[:-depth - 1:-1])
        if top_bids and top_asks and top_bids[0][0] >= top_asks[0][0]:
            return "crossed after delta"
        if exch_ts_ms > self._exch_ts_ms:
            self._exch_ts_ms = exch_ts_ms
        self._delta_kept = True
        self._version += 1
        self.view = _new_view(BookView, (self.venue, self.market, top_bids, top_asks,
                                         self._version, self._exch_ts_ms, recv_ns, True,
                                         self._lag_ns(wall_ms, self._exch_ts_ms)))
        return None
    return _apply_locked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from loguru import logger
    logger.remove()
    with tempfile.TemporaryDirectory() as workdir:
        apply_changes = build(workdir)
        python_apply = Book._apply_locked
        results = {}
        for name, method in (("python", python_apply), ("c_loop", native_apply_locked(apply_changes)),
                             ("python_again", python_apply)):
            Book._apply_locked = method
            results[name] = bench_feed.bench_legacy(random.Random(7), args.messages,
                                                    BookBoard([bench_feed.MARKET]), args.rounds)
        Book._apply_locked = python_apply
    print(f"{'bithumb_legacy':<16}{'median us':>10}{'p99 us':>10}{'floor med':>11}{'x floor':>9}")
    for name, r in results.items():
        print(f"{name:<16}{r['median_us']:>10}{r['p99_us']:>10}{r['floor_median_us']:>11}{r['x_floor']:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
