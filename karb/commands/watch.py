"""``karb watch SYMBOL... [--sim]``: live top of book on both venues and the spread both ways.

For each market: best bid and ask (with size and age) on Upbit and Bithumb, and for each
direction (buy on one venue at its ask, sell on the other at its bid) the gross spread and the
spread net of both taker fees (``venues.*.taker_fee``), in basis points of the buy price.
Refreshed in place with ANSI codes on a terminal (tmux included); plain blocks of lines when
stdout is not a terminal. ``--sim`` starts the simulated venues in-process (config/sim.yaml
unless ``--config`` says otherwise). Read-only: it never places an order. A symbol either venue
does not list is one line and exit 2, before any feed starts.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from karb.book import BookBoard
from karb.cli import EXIT_CONFIG, config_from_args
from karb.commands.book import not_listed
from karb.exchanges.factory import make_client
from karb.logs import setup_logging
from karb.market_data import MarketData
from karb.model import BookView, Venue
from karb.rules import market_code
from karb.spread import top_net_bps

NAME = "watch"
HELP = "show live top of book on both venues and the spread both ways (read-only)"
ORDER = 30
_CLEAR = "\x1b[H\x1b[J"  # cursor home, clear to the end of the screen
_STALE_NS = 5_000_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("symbols", nargs="+", metavar="SYMBOL", help="markets, e.g. KRW-BTC or BTC")
    parser.add_argument("--sim", action="store_true", help="run against the embedded simulated venues")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between refreshes")
    parser.add_argument("--count", type=int, default=0, help="stop after this many refreshes (0: never)")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    markets = list(dict.fromkeys(market_code(s) for s in args.symbols))
    config = dataclasses.replace(config, markets=markets)
    setup_logging(config.log, console=not sys.stdout.isatty())  # keep warnings off the panel
    cluster = None
    if args.sim:
        from karb.sim.cluster import SimCluster

        cluster = SimCluster.from_config(config).start()
        config = cluster.apply_to(config)
    try:
        problem = _not_listed(config, markets)
    except BaseException:
        if cluster is not None:
            cluster.stop()
        raise
    if problem:
        if cluster is not None:
            cluster.stop()
        print(f"not listed: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    board = BookBoard(markets)
    market_data = MarketData(config, board)
    fees = {venue: float(config.venues[venue].taker_fee) for venue in Venue}
    tty = sys.stdout.isatty()
    market_data.start()
    try:
        shown = 0
        while not args.count or shown < args.count:
            time.sleep(args.interval)  # a display refresh, not synchronisation
            lines = render(board, markets, fees, market_data.stats(), time.monotonic_ns())
            sys.stdout.write((_CLEAR if tty else "") + "\n".join(lines) + "\n" + ("" if tty else "\n"))
            sys.stdout.flush()
            shown += 1
    finally:
        market_data.stop()
        if cluster is not None:
            cluster.stop()
    return 0


def _not_listed(config, markets: list[str]) -> str | None:
    # a feed subscribed to a market the venue does not list would show nothing, forever
    clients = {venue: make_client(venue, config, None) for venue in Venue}
    try:
        return not_listed(clients, markets)
    finally:
        for client in clients.values():
            client.close()


def render(board: BookBoard, markets: list[str], fees: dict[Venue, float], stats: dict[str, dict],
           now_ns: int) -> list[str]:
    """The panel as lines of text (pure; no terminal codes)."""
    lines = []
    for market in markets:
        views = {venue: board.get(venue, market).view for venue in Venue}
        lines.append(market)
        for venue, view in views.items():
            lines.append(f"  {venue.value:<8} {_quote(view, now_ns)}")
        for buy, sell in ((Venue.UPBIT, Venue.BITHUMB), (Venue.BITHUMB, Venue.UPBIT)):
            lines.append(f"  buy {buy.value} / sell {sell.value}: "
                         f"{_spread(views[buy], views[sell], fees[buy], fees[sell])}")
    feeds = []
    for venue, s in stats.items():
        age = s["last_message_age_s"]
        feeds.append(f"{venue} {s['state']} {s['msgs_per_s']:.0f} msg/s "
                     f"last {'-' if age is None else f'{age:.1f}s'} "
                     f"reconnects {s['reconnects']} bad frames {s['decode_errors']}")
    lines.append("feeds: " + " | ".join(feeds))
    return lines


def _quote(view: BookView, now_ns: int) -> str:
    if not view.valid:
        return "invalid (waiting for a snapshot)"
    bid = f"{_num(view.bids[0][0])} x {view.bids[0][1]:.4f}" if view.bids else "-"
    ask = f"{_num(view.asks[0][0])} x {view.asks[0][1]:.4f}" if view.asks else "-"
    age_ns = now_ns - view.as_of_ns  # the venue's own lag included
    stale = "  STALE" if age_ns > _STALE_NS else ""
    return f"bid {bid:>24}   ask {ask:>24}   age {age_ns / 1e9:5.1f}s{stale}"


def _spread(buy: BookView, sell: BookView, buy_fee: float, sell_fee: float) -> str:
    if not (buy.valid and sell.valid and buy.asks and sell.bids):
        return "-"
    ask, bid = buy.asks[0][0], sell.bids[0][0]
    gross = (bid - ask) / ask * 1e4
    net = top_net_bps(buy.asks, sell.bids, buy_fee, sell_fee)
    return f"gross {gross:+7.1f} bp   net {net:+7.1f} bp"


def _num(price: float) -> str:
    return f"{price:,.0f}" if price >= 100 else f"{price:,.4f}".rstrip("0").rstrip(".")
