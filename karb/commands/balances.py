"""``karb balances [--venue upbit|bithumb] [--sim]``: account balances (needs API keys).

Keys come from the environment or ``keys_file`` (see ``karb.secrets``); without them the
command exits 3 with one line naming the missing variables, before any network call.
"""
from __future__ import annotations

import argparse
from decimal import Decimal

from karb.cli import config_from_args
from karb.exchanges.factory import venue_clients
from karb.model import Balance, Venue

NAME = "balances"
HELP = "show account balances on each venue (needs API keys)"
ORDER = 42


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--venue", choices=[v.value for v in Venue], help="one venue (default: both)")
    parser.add_argument("--all", action="store_true", help="also list zero balances")
    parser.add_argument("--sim", action="store_true", help="the embedded simulated venues' paper accounts")


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def format_balances(venue: Venue, balances: dict[str, Balance], show_zero: bool) -> list[str]:
    rows = [b for b in balances.values() if show_zero or b.total]
    rows.sort(key=lambda b: (b.currency != "KRW", b.currency))
    lines = [f"{venue.value}: {len(rows)} currencies"]
    lines += [f"  {b.currency:<8} free {_plain(b.free):>22}  locked {_plain(b.locked):>20}"
              for b in rows]
    return lines


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    venues = [Venue(args.venue)] if args.venue else list(Venue)
    with venue_clients(config, venues, keys=True, sim=args.sim) as clients:
        answers = {venue: clients[venue].get_balances() for venue in venues}
    for venue, balances in answers.items():
        print("\n".join(format_balances(venue, balances, args.all)))
    return 0
