"""``karb record --out DIR [--duration S] [--sim]``: record both venues' public book frames.

Public market data only: no API keys are read, so it runs with no secrets set. The configured
markets (``markets``) are subscribed on both venues through the engine's own feeds
(``karb.market_data.MarketData``: same URLs, formats, reconnects and legacy snapshots), and every
frame is written as the recorder's JSON lines (``feeds.recorder``) to
``DIR/karb-YYYYMMDD-HH.jsonl.gz``, a new file each UTC hour. Once a minute one line says what
the last minute wrote (frames per venue, bytes) and to which file. SIGINT/SIGTERM or
``--duration`` stop it cleanly (queued frames written, files closed). ``--sim`` records the
in-process loopback sim (config/sim.yaml unless ``--config``), as ``run --sim`` trades it.

A recording is read back with ``feeds.read_recordings(DIR)`` and replayed by ``karb backtest``
or the sim (``sim.replay_path: DIR``). Exit codes: 0 after ``--duration`` or SIGTERM, 130 after
Ctrl-C, 1 if the recorder failed (disk full: the reason is logged).
"""
from __future__ import annotations

import argparse
import threading
import time

from loguru import logger

from feeds import HourlyRecorder
from karb import logs
from karb.book import BookBoard
from karb.cli import EXIT_BUG, EXIT_INTERRUPTED, EXIT_OK, config_from_args
from karb.commands.signals import stop_on_signals
from karb.market_data import MarketData

NAME = "record"
HELP = "record both venues' public book frames to DIR (hourly .jsonl.gz files; no keys needed)"
ORDER = 40
LOG_EVERY_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the hourly files")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after this many seconds (default: until SIGINT/SIGTERM)")
    parser.add_argument("--sim", action="store_true", help="record the in-process loopback sim")
    parser.add_argument("-c", dest="config", metavar="PATH", help="same as --config")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    logs.setup_logging(config.log, console=True)
    cluster = None
    if args.sim:
        from karb.sim.cluster import SimCluster

        cluster = SimCluster.from_config(config).start()
        config = cluster.apply_to(config)
    recorder = HourlyRecorder(args.out)
    market_data = MarketData(config, BookBoard(config.markets), recorder=recorder)
    with stop_on_signals() as stop:
        try:
            logger.info("recording {} markets from both venues to {}", len(config.markets), args.out)
            market_data.start()
            _log_until_stopped(recorder, stop.event, args.duration)
        finally:
            market_data.stop()  # stops the recorder too: what is queued is written
            if cluster is not None:
                cluster.stop()
    _log_minute(recorder, {}, 0, final=True)
    if recorder.error is not None:
        return EXIT_BUG
    return EXIT_INTERRUPTED if stop.interrupted else EXIT_OK


def _log_until_stopped(recorder: HourlyRecorder, stop: threading.Event, duration: float | None) -> None:
    deadline = None if duration is None else time.monotonic() + duration
    last, last_bytes = dict(recorder.by_venue), recorder.bytes
    while recorder.error is None:
        wait = LOG_EVERY_S if deadline is None else min(LOG_EVERY_S, deadline - time.monotonic())
        if wait <= 0 or stop.wait(wait):
            return
        if deadline is None or time.monotonic() < deadline:
            last, last_bytes = _log_minute(recorder, last, last_bytes)


def _log_minute(recorder: HourlyRecorder, last: dict[str, int], last_bytes: int,
                final: bool = False) -> tuple[dict[str, int], int]:
    now = dict(recorder.by_venue)
    per_venue = ", ".join(f"{venue} {now.get(venue, 0) - last.get(venue, 0)}"
                          for venue in ("upbit", "bithumb"))
    if final:
        logger.info("recording stopped: {} frames ({}), {:,} bytes in all; last file {}",
                    recorder.frames, per_venue, recorder.bytes, recorder.path)
    else:
        logger.info("recorded in the last minute: frames {}; {:,} bytes; file {}",
                    per_venue, recorder.bytes - last_bytes, recorder.path)
    return now, recorder.bytes
