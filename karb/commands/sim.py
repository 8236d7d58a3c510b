"""``karb sim [--config config/sim.yaml] [--seed N] [--info FILE]``: serve both simulated venues.

Prints each venue's REST and WebSocket URLs, the control endpoint and the paper accounts'
keys (paper keys, valid only against this sim), then runs until Ctrl-C or SIGTERM. Point a
client at the printed URLs, or run the engine with ``--sim``. Ports come from the config's
``sim:`` section (0 = any free port). ``--info FILE`` also writes all of it as JSON (mode
0600, written whole then renamed) for a tool that starts the sim as its own process.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import threading
from pathlib import Path

from karb.cli import config_from_args
from karb.model import Venue
from karb.sim.cluster import SimCluster

NAME = "sim"
HELP = "serve the simulated Upbit and Bithumb on loopback until Ctrl-C"
ORDER = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, help="market seed (default: sim.seed from the config)")
    parser.add_argument("--info", metavar="FILE",
                        help="also write the URLs, paper keys and control URL to FILE as JSON (0600)")
    parser.set_defaults(sim=True)  # --config defaults to config/sim.yaml


def describe(cluster: SimCluster) -> list[str]:
    lines = []
    for venue in Venue:
        ep, creds = cluster.endpoints(venue), cluster.credentials(venue)
        lines.append(f"{venue.value}:")
        lines.append(f"  rest_url    {ep.rest_url}")
        lines.append(f"  ws_url      {ep.ws_url}")
        if ep.legacy_ws_url:
            lines.append(f"  legacy_ws   {ep.legacy_ws_url}")
        lines.append(f"  private_ws  {ep.private_ws_url}  (myOrder/myAsset, JWT)")
        lines.append(f"  access_key  {creds.access_key}")
        lines.append(f"  secret_key  {creds.secret_key}")
    lines.append(f"control: {cluster.control_url()}  (POST /faults/<venue>/<action>, /dislocate; "
                 f"GET /status, /accounts, /orders/<venue>)")
    lines.append(f"markets: {', '.join(cluster.markets)}")
    return lines


def info(cluster: SimCluster) -> dict:
    """What a client needs to reach this sim, as JSON-able data."""
    venues = {}
    for venue in Venue:
        ep, creds = cluster.endpoints(venue), cluster.credentials(venue)
        venues[venue.value] = {"rest_url": ep.rest_url, "ws_url": ep.ws_url, "legacy_ws_url": ep.legacy_ws_url,
                               "private_ws_url": ep.private_ws_url,
                               "access_key": creds.access_key, "secret_key": creds.secret_key}
    return {"venues": venues, "control_url": cluster.control_url(), "markets": cluster.markets,
            "pid": os.getpid()}


def write_info(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2)
    os.replace(tmp, path)


def run(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    config = config_from_args(args)
    if config.sim is not None and args.seed is not None:
        config = dataclasses.replace(config, sim=dataclasses.replace(config.sim, seed=args.seed))
    stop = stop or threading.Event()
    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    if previous is not None:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with SimCluster.from_config(config) as cluster:
            print("\n".join(describe(cluster)), flush=True)
            if args.info:
                write_info(Path(args.info), info(cluster))
            print("serving; Ctrl-C to stop", flush=True)
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                print("stopping", flush=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
