"""``karb transfers``: the coin transfers still open and the assets blocked from transferring;
``--clear ASSET`` unblocks one after the operator checked both venues.

A transfer that did not arrive in its expected time blocks its asset (``karb.rebalance``); the
block is in the journal, so it holds across restarts until cleared here. Clearing closes that
asset's open transfers as ``abandoned`` (their coin is wherever the venues' balances say) and
is journalled with the reason.
"""
from __future__ import annotations

import argparse
import os

from karb.cli import config_from_args
from karb.clock import SystemClock
from karb.journal import Journal
from karb.rebalance.records import TransferRecords

NAME = "transfers"
HELP = "list open coin transfers and blocked assets; --clear ASSET after checking both venues"
ORDER = 62


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clear", metavar="ASSET", default=None, help="unblock ASSET's transfers (journalled)")
    parser.add_argument("--reason", default=None, help="what was checked (journalled with --clear)")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    journal = Journal(config.journal.path)
    journal.start()
    try:
        records = TransferRecords(journal, SystemClock())
        if args.clear:
            asset = args.clear.upper()
            if asset not in records.blocks() and not records.open_transfers(asset):
                print(f"{asset}: not blocked and no transfer open; nothing to clear")
                return 0
            reason = args.reason or f"karb transfers --clear by {os.environ.get('USER') or 'operator'}"
            closed = records.clear_block(asset, reason)
            print(f"{asset}: unblocked; {len(closed)} open transfer(s) closed as abandoned")
            return 0
        for asset, reason in sorted(records.blocks().items()):
            print(f"BLOCKED {asset}: {reason}")
        for t in records.open_transfers():
            print(f"open {t.id}: {t.amount} {t.asset} {t.from_venue.value} -> {t.to_venue.value} "
                  f"({t.net_type}) {t.state}{' OVERDUE' if t.overdue else ''}")
        if not records.blocks() and not records.open_transfers():
            print("no transfer open, no asset blocked")
        return 0
    finally:
        journal.stop()
