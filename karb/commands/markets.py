"""``karb markets [--sim]``: KRW markets listed on both venues (REST, no keys needed)."""
from __future__ import annotations

import argparse

from karb.cli import config_from_args
from karb.exchanges.factory import venue_clients
from karb.model import Venue

NAME = "markets"
HELP = "list the KRW markets both venues trade (REST, read-only)"
ORDER = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sim", action="store_true", help="ask the embedded simulated venues")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    with venue_clients(config, list(Venue), keys=False, sim=args.sim) as clients:
        listed = {venue: set(client.get_markets()) for venue, client in clients.items()}
    common = sorted(set.intersection(*listed.values()))
    for market in common:
        print(market)
    counts = ", ".join(f"{venue.value} {len(markets)}" for venue, markets in listed.items())
    print(f"{len(common)} markets on both venues ({counts})")
    return 0
