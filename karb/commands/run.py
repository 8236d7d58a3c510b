"""``run``: the engine. Against the loopback sim with ``--sim``, else the venues in the config.

Real orders are sent only when the config says ``mode: live`` AND ``--live`` is given (or
against the sim's paper accounts with ``--sim``). SIGINT/SIGTERM stop cleanly; SIGUSR1 engages
the kill switch (the process keeps running and reporting). Exit codes: 130 after Ctrl-C
(SIGINT), 0 after SIGTERM unless trading ended halted (5); a second engine on the same journal
or kill-file directory exits 2 (``karb.instance_lock``).
"""
from __future__ import annotations

import argparse
import signal
import sys
from decimal import ROUND_DOWN, Decimal

from loguru import logger

from karb import logs
from karb.cli import EXIT_CONFIG, EXIT_HALTED, EXIT_INTERRUPTED, EXIT_OK, config_from_args
from karb.commands.signals import stop_on_signals
from karb.exchanges.errors import VenueError
from karb.exchanges.factory import make_client
from karb.instance_lock import EXIT_LOCKED, holder, lock_paths
from karb.model import Balance, Venue, base_currency
from karb.secrets import SecretsError, load_credentials
from karb.startup import StartupError

NAME = "run"
HELP = "run the engine (dry-run unless config mode: live and --live; --sim for the loopback sim)"
ORDER = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sim", action="store_true",
                        help="start the simulated venues in-process and trade on their paper accounts")
    parser.add_argument("--dry-run", action="store_true",
                        help="never send orders: fills are computed from the live books")
    parser.add_argument("--live", action="store_true",
                        help="send real orders (also needs mode: live in the config)")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after this many seconds (default: run until SIGINT/SIGTERM)")
    parser.add_argument("--no-panel", action="store_true",
                        help="plain status lines even on a terminal")


def _mode(args: argparse.Namespace, config_mode: str) -> str:
    if args.live and args.dry_run:
        raise SystemExit("--live and --dry-run contradict each other")
    if args.sim:
        if args.live:
            raise SystemExit("--live is for real venues; --sim trades on paper accounts")
        return "dry_run" if args.dry_run else "sim"
    if args.live and config_mode != "live":
        raise SystemExit("--live needs `mode: live` in the config too (both, on purpose)")
    return "live" if (args.live and not args.dry_run) else "dry_run"


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    try:
        mode = _mode(args, config.mode)
    except SystemExit as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _refuse_second_engine(config)
    panel = sys.stdout.isatty() and not args.no_panel
    logs.setup_logging(config.log, console=not panel)
    cluster = None
    if args.sim:
        from karb.sim.cluster import SimCluster

        cluster = SimCluster.from_config(config).start()
        config = cluster.apply_to(config)
    try:
        engine = _build(config, mode, cluster, panel)
        if panel:
            logger.add(engine.monitor.log_sink, level=config.log.level, format=logs.CONSOLE_FORMAT,
                       colorize=False)
        return _run_until_stopped(engine, args.duration)
    finally:
        if cluster is not None:
            cluster.stop()


def _refuse_second_engine(config) -> None:
    """Name the engine already running on this journal before anything else can fail (a busy
    metrics port, a sim); ``Engine.start`` still takes the locks for real."""
    for path in lock_paths(config):
        pid = holder([path])
        if pid is not None:
            raise StartupError(f"another engine is running: {path} is locked by pid {pid}", EXIT_LOCKED)


def _build(config, mode: str, cluster, panel: bool):
    from karb.engine import Engine  # heavy: the whole engine, only for this command

    clients = {}
    paper = None
    for venue in Venue:
        if cluster is not None:
            credentials = cluster.credentials(venue)
        elif mode == "live":
            credentials = load_credentials(venue, config.keys_file)
        else:
            try:
                credentials = load_credentials(venue, config.keys_file)
            except SecretsError:
                credentials = None  # dry-run without keys: public data, paper balances
        clients[venue] = make_client(venue, config, credentials)
    if mode == "dry_run":
        paper = {v: (cluster.balances(v) if cluster is not None
                     else _paper_or_real(clients[v], config.markets)) for v in Venue}
    return Engine(config, clients, mode, panel=panel, paper_balances=paper)


PAPER_KRW = Decimal("50000000")
PAPER_COIN_KRW = Decimal("10000000")


def _paper_or_real(client, markets: list[str]) -> dict[str, Balance]:
    """Dry-run balances: the account's real ones when keys work, else a paper account of
    50,000,000 KRW and 10,000,000 KRW worth of each traded coin at the last price."""
    try:
        return client.get_balances()
    except VenueError:
        prices = client.get_ticker(markets)
    paper = {"KRW": Balance("KRW", PAPER_KRW)}
    for market, price in prices.items():
        coin = base_currency(market)
        paper[coin] = Balance(coin, (PAPER_COIN_KRW / price).quantize(Decimal("0.00000001"), ROUND_DOWN))
    return paper


def _run_until_stopped(engine, duration: float | None) -> int:
    """Start, wait for a signal or ``duration``, stop. Exit code: 130 after SIGINT (Ctrl-C),
    else 5 if trading ended halted or killed, else 0 (SIGTERM and ``--duration`` included)."""
    with stop_on_signals() as stop:
        engine.risk.kill.install_signal_handler(signal.SIGUSR1)
        try:
            engine.start()
            stop.event.wait(duration)
        finally:
            engine.stop()
    print(engine.summary(), flush=True)
    if stop.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_HALTED if engine.risk.state.value != "active" else EXIT_OK
