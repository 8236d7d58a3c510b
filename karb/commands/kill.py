"""``karb kill``: engage the kill switch (or clear it with ``--clear``).

It only creates or removes the configured ``risk.kill_switch_file``. A running engine (found by
its instance lock, ``karb.instance_lock``) notices within a fraction of a second, stops new
signals, cancels open orders, and keeps running and reporting; with no engine running the file
stays, so the next start stays stopped. ``kill -USR1 <pid>`` does the same from a shell.
"""
from __future__ import annotations

import argparse
import sys

from karb.cli import EXIT_CONFIG, config_from_args
from karb.instance_lock import holder, lock_paths
from karb.killswitch import KillSwitch

NAME = "kill"
HELP = "stop new trades and cancel open orders in the running engine (--clear to resume)"
ORDER = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clear", action="store_true", help="remove the kill file: trading may resume")
    parser.add_argument("--reason", default="karb kill", help="text written into the kill file")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    switch = KillSwitch(config.risk.kill_switch_file)
    pid = holder(lock_paths(config))
    try:
        if args.clear:
            existed = switch.remove_file()
        else:
            switch.write_file(args.reason)
    except OSError as exc:
        print(f"risk.kill_switch_file: cannot {'remove' if args.clear else 'write'} {switch.path} "
              f"({exc.strerror})", file=sys.stderr)
        return EXIT_CONFIG
    if args.clear:
        after = (f"engine pid {pid} may trade again" if pid else
                 "no engine is running; the next start may trade")
        print(f"kill switch cleared ({switch.path} {'removed' if existed else 'was not there'}); {after}")
    elif pid:
        print(f"kill switch engaged: {switch.path}; engine pid {pid} stops new trades and cancels "
              "open orders")
    else:
        print(f"kill file written ({switch.path}); no engine is running; the next start stays stopped")
    return 0
