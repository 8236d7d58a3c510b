"""``karb report``: the simulation report (markdown + PNG plots) from a journal.

Works on any journal (live, dry-run, ``run --sim`` or a backtest's); a ``backtest.json``
beside the journal (or given with ``--backtest-json``) adds the oracle, capture, missed
opportunities and the spread histogram. ``--config`` is read only for the threshold drawn on
the spread plot when no ``backtest.json`` gives one. A missing or foreign file: one line, exit 2.
"""
from __future__ import annotations

import argparse
import sys

from karb.cli import EXIT_CONFIG, config_from_args

NAME = "report"
HELP = "write the simulation report (markdown + plots) from a journal (and backtest.json)"
ORDER = 45


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--journal", required=True, metavar="PATH", help="the SQLite journal to read")
    parser.add_argument("--backtest-json", metavar="PATH",
                        help="backtest results (default: backtest.json beside the journal, if any)")
    parser.add_argument("--out", default="docs", metavar="DIR",
                        help="output directory: DIR/simulation_report.md and DIR/img/*.png "
                             "(default: docs)")


def run(args: argparse.Namespace) -> int:
    from karb.report import ReportError, build_report  # matplotlib only when reporting

    threshold = config_from_args(args).strategy.threshold_bps if args.config else None
    try:
        path = build_report(args.journal, args.backtest_json, args.out, threshold_bps=threshold)
    except ReportError as exc:
        print(f"report error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"report error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"report written: {path} (plots in {path.parent / 'img'})")
    return 0
