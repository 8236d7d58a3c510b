"""``karb resume``: clear a risk halt (loss limit, drawdown, failures, a trade recovery could
not finish) after the operator has looked at why.

It writes a ``resume`` row to the journal's ``risk_events``. A running engine (found by its
instance lock) picks it up within a second (``resume-watch`` thread); with no engine running,
the next start finds no active halt. It does not clear the kill switch (``karb kill --clear``).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from karb.cli import config_from_args
from karb.instance_lock import holder, lock_paths
from karb.journal import Journal

NAME = "resume"
HELP = "clear a risk halt in the running engine or for the next start (after checking why)"
ORDER = 61


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", default=None, help="why it is safe to resume (journalled)")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    journal = Journal(config.journal.path)
    journal.start()
    try:
        halt = journal.active_halt()
        journal.record_risk_event("resume", args.reason or f"karb resume by {os.environ.get('USER') or 'operator'}")
    finally:
        journal.stop()
    pid = holder(lock_paths(config))
    who = f"engine pid {pid} resumes within a second" if pid else \
        "no engine is running; the next start may trade"
    if halt:
        print(f"halt cleared ({halt['reason']}); {who}")
    else:
        print(f"no halt was journalled; resume recorded; {who}")
    if Path(config.risk.kill_switch_file).exists():
        print(f"the kill switch is still engaged ({config.risk.kill_switch_file}): `karb kill --clear`")
    return 0
