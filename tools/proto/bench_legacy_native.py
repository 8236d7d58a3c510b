"""Prototype measurement (issue 12): Bithumb legacy delta apply with the book's per-change loop
in C (``legacy_apply.c`` beside this file), against the pure-Python path, in the same run.

    python tools/proto/bench_legacy_native.py [--messages 20000] [--rounds 3]

Builds the extension with the system C compiler into a temporary directory, then runs
``tools/bench_feed.py``'s ``bithumb_legacy`` stream: as shipped (SortedDict sides), and with each
side patched to a plain level list plus a bisect key list (best level last) whose change loop is
``legacy_apply.apply_changes`` (same checks, same results: the bench verifies the final book
against its reference). Not part of the engine.
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


def _materialize(self):
    # each side: [levels best last, their bisect keys ascending] (asks keyed by -price)
    bids = list(reversed(self._snap_bids))
    asks = list(reversed(self._snap_asks))
    self._bids = [bids, [p for p, _ in bids]]
    self._asks = [asks, [-p for p, _ in asks]]
    self._snap_bids = self._snap_asks = ()
    self._sorted_ok = True


def _sorted_levels(self):
    return self._bids[0][::-1], self._asks[0][::-1]


def list_invalidate(shipped):
    def _invalidate_locked(self, reason, exch_ts_ms, recv_ns):
        changed = shipped(self, reason, exch_ts_ms, recv_ns)
        self._bids, self._asks = [[], []], [[], []]
        return changed
    return _invalidate_locked


def native_apply_locked(apply_changes):
    def _apply_locked(self, changes, exch_ts_ms, recv_ns, wall_ms):
        if not self._sorted_ok or not isinstance(self._bids, list):
            self._materialize()
        (bids, bid_keys), (asks, ask_keys) = self._bids, self._asks
        view = self.view
        top_bids, top_asks, depth = view.bids, view.asks, self.depth
        bid_edge = top_bids[-1][0] if len(top_bids) == depth else 0.0
        ask_edge = top_asks[-1][0] if len(top_asks) == depth else _INF
        flags = apply_changes(bids, asks, bid_keys, ask_keys, changes, bid_edge, ask_edge)
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
        names = ("_apply_locked", "_materialize", "_sorted_levels", "_invalidate_locked")
        shipped = {name: getattr(Book, name) for name in names}
        native = {"_apply_locked": native_apply_locked(apply_changes), "_materialize": _materialize,
                  "_sorted_levels": _sorted_levels,
                  "_invalidate_locked": list_invalidate(shipped["_invalidate_locked"])}
        results = {}
        for name, methods in (("sorteddict", shipped), ("c_loop_lists", native),
                              ("sorteddict_again", shipped)):
            for attr, method in methods.items():
                setattr(Book, attr, method)
            results[name] = bench_feed.bench_legacy(random.Random(7), args.messages,
                                                    BookBoard([bench_feed.MARKET]), args.rounds)
        for attr, method in shipped.items():
            setattr(Book, attr, method)
    print(f"{'bithumb_legacy':<16}{'median us':>10}{'p99 us':>10}{'floor med':>11}{'x floor':>9}")
    for name, r in results.items():
        print(f"{name:<16}{r['median_us']:>10}{r['p99_us']:>10}{r['floor_median_us']:>11}{r['x_floor']:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
