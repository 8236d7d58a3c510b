"""``karb kill``: engage the kill switch of a running engine (or clear it with ``--clear``).

It only creates or removes the configured ``risk.kill_switch_file``; the engine notices within
a fraction of a second, stops new signals, cancels open orders, and keeps running and
reporting. ``kill -USR1 <pid>`` does the same from a shell.
"""
from __future__ import annotations

import argparse

from karb.cli import config_from_args
from karb.killswitch import KillSwitch

NAME = "kill"
HELP = "stop new trades and cancel open orders in the running engine (--clear to resume)"
ORDER = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clear", action="store_true", help="remove the kill file: trading may resume")
    parser.add_argument("--reason", default="karb kill", help="text written into the kill file")


def run(args: argparse.Namespace) -> int:
    switch = KillSwitch(config_from_args(args).risk.kill_switch_file)
    if args.clear:
        existed = switch.path.exists()
        switch.clear()
        print(f"kill switch cleared ({switch.path} {'removed' if existed else 'was not there'})")
    else:
        switch.engage(args.reason)
        print(f"kill switch engaged: {switch.path}")
    return 0
