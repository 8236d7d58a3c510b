"""``karb book SYMBOL [--venue upbit|bithumb] [--depth N] [--sim]``: a REST snapshot of the top
levels of one market on one or both venues, with the spread. Read-only, no keys needed.
A symbol the venue(s) do not list is one line and exit 2 (checked against the market lists
before asking for a book)."""
from __future__ import annotations

import argparse
import sys
from decimal import Decimal

from karb.cli import EXIT_CONFIG, config_from_args
from karb.exchanges.base import VenueClient
from karb.exchanges.factory import venue_clients
from karb.model import BookView, Venue
from karb.rules import market_code

NAME = "book"
HELP = "show the top levels and spread of one market (REST snapshot, read-only)"
ORDER = 41


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("symbol", metavar="SYMBOL", help="market, e.g. KRW-BTC, BTC or BTC_KRW")
    parser.add_argument("--venue", choices=[v.value for v in Venue], help="one venue (default: both)")
    parser.add_argument("--depth", type=_positive_int, default=5, help="levels per side (default 5)")
    parser.add_argument("--sim", action="store_true", help="ask the embedded simulated venues")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, was {value}")
    return value


def _num(value: float) -> str:
    """A float as the venue wrote it, with thousands separators and no exponent."""
    return format(Decimal(repr(value)).normalize(), ",f")


def format_book(view: BookView, depth: int) -> list[str]:
    """Asks (highest first) above bids (best first), then the spread line."""
    lines = [f"{view.venue.value} {view.market}  ts={view.exch_ts_ms}"
             + ("" if view.valid else "  (CROSSED)")]
    lines += [f"  ask {_num(price):>20} {_num(size):>18}" for price, size in reversed(view.asks[:depth])]
    lines.append("  " + "-" * 44)
    lines += [f"  bid {_num(price):>20} {_num(size):>18}" for price, size in view.bids[:depth]]
    if view.best_bid is not None and view.best_ask is not None:
        bid, ask = Decimal(repr(view.best_bid)), Decimal(repr(view.best_ask))
        spread = ask - bid
        bps = spread / ((ask + bid) / 2) * 10_000
        lines.append(f"  spread {format(spread.normalize(), ',f')} KRW ({bps:.2f} bps of mid)")
    else:
        lines.append("  spread n/a (one side empty)")
    return lines


def not_listed(clients: dict[Venue, VenueClient], markets: list[str]) -> str | None:
    """One line naming each market some venue in ``clients`` does not list, or None.

    Asks each venue for its market list (a ``VenueError`` propagates: the venue is down).
    """
    missing = {}
    for venue, client in clients.items():
        listed = set(client.get_markets())
        for market in markets:
            if market not in listed:
                missing.setdefault(market, []).append(venue.value)
    if not missing:
        return None
    return "; ".join(f"{m} is not listed on {' or '.join(v)}" for m, v in missing.items())


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    market = market_code(args.symbol)
    venues = [Venue(args.venue)] if args.venue else list(Venue)
    with venue_clients(config, venues, keys=False, sim=args.sim) as clients:
        problem = not_listed(clients, [market])
        if problem:
            print(f"not listed: {problem}", file=sys.stderr)
            return EXIT_CONFIG
        views = [clients[venue].get_orderbook(market) for venue in venues]
    for view in views:
        print("\n".join(format_book(view, args.depth)))
    return 0
