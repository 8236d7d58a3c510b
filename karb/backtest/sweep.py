"""Parameter sweeps: ``--set key=v1,v2,...`` grids run on every core, ranked by PnL.

``parse_sets`` turns each ``--set`` into one axis (a dotted config key and its values, typed as
YAML types them: ``5`` an int, ``0.5`` a float, ``"abc"`` a string); ``grid`` expands the axes
into points (their cartesian product, in command-line order) and checks every point through the
config schema (``karb.config.parse_config``), so a bad key or value fails before anything runs,
as a ``ConfigError`` naming the key. ``run_sweep`` hands the points to a ``Runner``: the
``ProcessPoolRunner`` (one worker process per core) by default, the ``SerialRunner`` for
debugging, or any object with the same ``map`` (a cluster executor later).

The job is injected: a picklable top-level function ``job(base, overrides) -> summary`` where
``base`` is the base config's path or data, ``overrides`` maps dotted keys to values
(``config_for(base, overrides)`` builds the checked ``Config``) and the summary is a dict with
``pnl_krw`` (and, when known, ``capture``, ``leg_success_rate``, ``max_drawdown_krw``,
``trades``), as a backtest writes it. Points run at the same time: a job must write its own
files (journal, ``backtest.json``) under a directory of its own, never the base config's paths.
"""
from __future__ import annotations

import argparse
import copy
import functools
import itertools
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import yaml

from karb.config import Config, parse_config
from karb.schema import ConfigError

Base = str | Path | dict
Job = Callable[[Base, dict[str, Any]], dict[str, Any]]


class Runner(Protocol):
    """Runs ``fn`` on every job and returns the results in job order."""

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]: ...


class SerialRunner:
    """In this process, one job after the other."""

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
        return [fn(job) for job in jobs]


class ProcessPoolRunner:
    """One worker process per core (or ``workers``). Workers are spawned, not forked, so they
    inherit no threads or locks from the caller; the cost, one interpreter start per worker,
    is small against a backtest point."""

    def __init__(self, workers: int | None = None, start_method: str = "spawn"):
        self.workers = workers or os.cpu_count() or 1
        self.start_method = start_method

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
        if not jobs:
            return []
        context = multiprocessing.get_context(self.start_method)
        with ProcessPoolExecutor(min(self.workers, len(jobs)), mp_context=context) as pool:
            return list(pool.map(fn, jobs))


@dataclass(frozen=True)
class PointResult:
    overrides: dict[str, Any]
    summary: dict[str, Any]
    seconds: float = 0.0  # the point's own wall time in its worker

    @property
    def pnl(self) -> Decimal:
        return Decimal(str(self.summary.get("pnl_krw", "0")))


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=V1,V2,...`` (repeatable) on a command that runs sweeps."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="sweep a config key over these values (repeat for a grid; "
                             "the points run on every core, ranked by PnL)")


def parse_sets(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["strategy.threshold_bps=5,10"]`` -> ``{"strategy.threshold_bps": [5, 10]}``."""
    axes: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ConfigError(f"--set {item}: expected key=value[,value...]")
        if key in axes:
            raise ConfigError(f"{key}: given twice to --set")
        values = []
        for text in raw.split(","):
            if not text.strip():
                raise ConfigError(f"{key}: empty value in --set {item}")
            try:
                values.append(yaml.safe_load(text))
            except yaml.YAMLError:
                values.append(text.strip())
        axes[key] = values
    return axes


def base_data(base: Base) -> dict[str, Any]:
    """The base config as plain YAML data (a deep copy when given as data)."""
    if isinstance(base, dict):
        return copy.deepcopy(base)
    path = Path(base)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except yaml.YAMLError:
        raise ConfigError(f"{path}: is not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top")
    return data


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with each dotted key set (missing sections are created)."""
    out = copy.deepcopy(data)
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parts[:i + 1])}: is not a section, cannot set {key}")
            node = child
        node[parts[-1]] = value
    return out


def config_for(base: Base, overrides: dict[str, Any]) -> Config:
    """The checked ``Config`` of one point (``ConfigError`` names the bad key)."""
    return parse_config(apply_overrides(base_data(base), overrides))


def grid(base: Base, axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, each checked through the config schema."""
    data = base_data(base)
    keys = list(axes)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]
    for point in points:
        parse_config(apply_overrides(data, point))
    return points


def _run_point(job: Job, base: Base, overrides: dict[str, Any]) -> PointResult:
    started = time.monotonic()
    summary = job(base, overrides)
    return PointResult(overrides, summary, time.monotonic() - started)


def run_sweep(job: Job, base: Base, points: Sequence[dict[str, Any]],
              runner: Runner | None = None) -> list[PointResult]:
    """Run ``job`` on every point (in parallel by default); results ranked by PnL, best first
    (ties keep grid order)."""
    runner = runner or ProcessPoolRunner()
    results = runner.map(functools.partial(_run_point, job, base), list(points))
    return sorted(results, key=lambda r: -r.pnl)


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{float(value) * 100:.1f}%"
    if kind == "krw":
        return f"{Decimal(str(value)):,.0f}"
    return str(value)


def table(results: Sequence[PointResult]) -> str:
    """The ranked results as an aligned text table."""
    keys = list(results[0].overrides) if results else []
    header = ["#", *keys, "PnL KRW", "capture", "success", "drawdown KRW", "trades"]
    rows = [[str(n), *(str(r.overrides[k]) for k in keys),
             _fmt(r.summary.get("pnl_krw"), "krw"), _fmt(r.summary.get("capture"), "pct"),
             _fmt(r.summary.get("leg_success_rate"), "pct"),
             _fmt(r.summary.get("max_drawdown_krw"), "krw"), _fmt(r.summary.get("trades"), "")]
            for n, r in enumerate(results, 1)]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in [header, *rows]]
    return "\n".join(lines)


def sweep(job: Job, base: Base, sets: Iterable[str], runner: Runner | None = None) -> str:
    """Parse ``--set`` items, check and run the grid, return the ranked table (for a command)."""
    points = grid(base, parse_sets(sets))
    runner = runner or ProcessPoolRunner()
    started = time.monotonic()
    results = run_sweep(job, base, points, runner)
    return table(results) + "\n" + timing(results, time.monotonic() - started,
                                           getattr(runner, "workers", 1))


def timing(results: Sequence[PointResult], wall_s: float, workers: int) -> str:
    """How well the grid used the workers: the points' own run times summed (what one worker
    would have taken) against the sweep's wall time."""
    serial = sum(r.seconds for r in results)
    workers = min(workers, len(results)) or 1
    return (f"{len(results)} points on {workers} workers in {wall_s:,.1f} s wall; the points ran "
            f"{serial:,.1f} s in all (serial / workers = {serial / workers:,.1f} s): "
            f"speed-up {serial / wall_s if wall_s else 0:.2f}x")
