"""``karb resume``: clear the risk halts (loss limit, drawdown, failures, a trade recovery could
not finish) after the operator has looked at why.

It prints every active halt and writes a ``resume`` row to the journal's ``risk_events`` that
clears exactly those: a halt journalled after them (even a moment later) stays until the next
``karb resume``. A running engine (found by its instance lock) picks it up within a second
(``resume-watch`` thread); with no engine running, the next start finds them cleared. It does not
clear the kill switch (``karb kill --clear``).
"""
from __future__ import annotations

import argparse
import os
from datetime import datetime
from pathlib import Path

from karb.cli import config_from_args
from karb.clock import NS_PER_S
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
        halts = journal.active_halts()
        journal.record_resume(args.reason or f"karb resume by {os.environ.get('USER') or 'operator'}",
                              halts)
    finally:
        journal.stop()
    pid = holder(lock_paths(config))
    who = f"engine pid {pid} resumes within a second" if pid else \
        "no engine is running; the next start may trade"
    for halt in halts:
        print(f"halt cleared ({halt['reason']}) raised {_when(halt['wall_ns'])}")
    if halts:
        print(f"{len(halts)} halt(s) cleared; a halt raised from now on is not; {who}")
    else:
        print(f"no halt was journalled; resume recorded; {who}")
    if Path(config.risk.kill_switch_file).exists():
        print(f"the kill switch is still engaged ({config.risk.kill_switch_file}): `karb kill --clear`")
    return 0


def _when(wall_ns: int) -> str:
    return datetime.fromtimestamp(wall_ns / NS_PER_S).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
