"""``backtest``: the engine's decision code on simulated time (``karb.backtest.run``).

``karb backtest [--config PATH] [--days D] [--profile demo|realistic] [--seed S]
[--data RECORDING] [--out DIR] [--set key=value ...] [--no-oracle]``

Data: the sim's seeded generator (``sim:`` section of the config) for ``--days``, or a
recording (``--data``: a ``.jsonl.gz`` file or a directory of them). Prints a progress line
every ``backtest.progress_s`` wall seconds and, at the end, simulated seconds per wall second
and the summary. ``--out DIR`` writes ``DIR/journal.sqlite`` (the engine's journal, simulated
wall times) and ``DIR/backtest.json``:

``seed``, ``profile`` (``recording`` for ``--data``), ``data``, ``days``, ``markets``,
``sim_seconds``, ``wall_seconds``, ``speed``, ``events``, ``bad_frames``, ``start_wall_ns``,
``end_wall_ns``, ``threshold_bps``, ``latency_config_ms`` ({venue: [min, max]}),
``competitor_share``, ``start_balances`` / ``end_balances`` ({venue: {asset: "decimal"}}),
``oracle`` / ``unconstrained`` ({"pnl_krw": str, "trades": int, "per_market": {m: {"pnl_krw",
"trades"}}} or null), ``per_market`` ({m: {pnl_krw, trades, filled, fees_krw}}), ``missed``
({reason: count}: the strategy's skip kinds, ``refused: <reason>`` for refusals),
``net_spread_hist`` ({"bucket_bps": w, "counts": {lower_edge: n}}), ``inventory``
([[wall_ns, venue, asset, "amount"], ...] every simulated 10 minutes), ``latency_ms``
(drawn leg latencies, capped), ``summary`` ({pnl_krw, trades, successes, leg_success_rate,
fees_krw, max_drawdown_krw, risk_state, capture, oracle_pnl_krw, unconstrained_pnl_krw}).

``--set key=value`` (repeatable) sets one config value; a key with several values
(``key=v1,v2``) is a sweep (``karb.backtest.sweep``). Bad config: one line naming the key,
exit 2; a bad recording: file, line and why, exit 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import yaml
from loguru import logger

from karb.backtest.sweep import base_data
from karb.cli import EXIT_CONFIG, EXIT_OK, resolve_config_path
from karb.config import parse_config
from karb.schema import ConfigError

NAME = "backtest"
HELP = "backtest the strategy on simulated or recorded books (simulated time, fill model, oracle)"
ORDER = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=float, help="simulated days (default: backtest.days)")
    parser.add_argument("--profile", choices=("demo", "realistic"), help="the sim's market profile")
    parser.add_argument("--seed", type=int, help="the sim's seed (default: sim.seed)")
    parser.add_argument("--data", metavar="PATH", help="a recording (.jsonl.gz or a directory)")
    parser.add_argument("--out", metavar="DIR", help="write journal.sqlite and backtest.json here")
    parser.add_argument("--no-oracle", action="store_true", help="skip the two oracle runs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set a config value (repeatable; KEY=V1,V2 sweeps)")


def apply_sets(data: dict, sets: list[str], args: argparse.Namespace) -> dict:
    """``data`` with each single-valued ``--set`` and the ``--profile``/``--seed``/``--days``/
    ``--no-oracle`` flags (so a sweep's points, built from this data, get them too)."""
    items = list(sets)
    if args.days is not None:
        items.append(f"backtest.days={args.days}")
    if args.no_oracle:
        items.append("backtest.oracle=false")
    if args.profile:
        items.append(f"sim.profile={args.profile}")
    if args.seed is not None:
        items.append(f"sim.seed={args.seed}")
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item}: expected key=value")
        node = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parts[:i + 1])}: is not a section, cannot set {key}")
            node = child
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def run(args: argparse.Namespace) -> int:
    from karb.backtest.run import BacktestOptions, run_backtest
    from karb.backtest.sources import BadRecording

    path = resolve_config_path(args.config)
    sweeps = [s for s in args.set if "," in s.partition("=")[2]]
    if sweeps:
        return _sweep(path, args)
    config = parse_config(apply_sets(base_data(path), args.set, args))
    if config.sim is None:
        config = dataclasses.replace(config, sim=parse_config({**base_data(path), "sim": {}}).sim)
    logger.remove()
    logger.add(sys.stderr, level="ERROR")  # a failed trade is a warning: the journal has it
    options = BacktestOptions(days=args.days, data=args.data, out=args.out,
                              oracle=not args.no_oracle, progress=sys.stdout)
    try:
        result = run_backtest(config, options)
    except BadRecording as exc:
        print(f"bad recording: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.out:
        out = Path(args.out) / "backtest.json"
        out.write_text(json.dumps(result.to_json(), indent=1, sort_keys=True), encoding="utf-8")
        print(f"wrote {out} and {Path(args.out) / 'journal.sqlite'}")
    r = result.run
    print(f"{r.sim_seconds:,.0f} sim s in {r.wall_seconds:,.1f} wall s: "
          f"{r.sim_seconds / r.wall_seconds if r.wall_seconds else 0:,.0f} sim s / wall s")
    for key, value in result.summary.items():
        print(f"  {key}: {value}")
    return EXIT_OK


def _sweep(path: Path, args: argparse.Namespace) -> int:
    from karb.backtest import sweep
    from karb.backtest.run import sweep_job

    base = apply_sets(base_data(path), [s for s in args.set if "," not in s.partition("=")[2]], args)
    print(sweep.sweep(sweep_job, base, [s for s in args.set if "," in s.partition("=")[2]]))
    return EXIT_OK
