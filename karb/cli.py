"""Command line: ``python main.py <command> [--config PATH] ...`` (also installed as ``karb``).

Each subcommand lives in its own module under ``karb.commands`` and is found automatically: a
module there defines ``NAME``, ``HELP``, ``ORDER``, ``add_arguments(parser)`` and
``run(args) -> int``. This module only parses, loads config on demand, and turns the errors a
user can fix into one clear line and an exit code:

====  =========================================================
0     success
1     unexpected failure (a bug: traceback printed)
2     bad command line, bad config (the line names the key) or a bad recording (file, line, why)
3     API keys missing or stored unsafely
4     a venue refused or could not be reached
5     halted by risk (kill switch, loss limit) at exit
130   interrupted (Ctrl-C)
====  =========================================================
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from feeds.recorder import RecordingError
from karb import commands
from karb.config import Config, load_config
from karb.exchanges.errors import VenueError
from karb.schema import ConfigError
from karb.secrets import SecretsError
from karb.startup import StartupError

EXIT_OK, EXIT_BUG, EXIT_CONFIG, EXIT_KEYS, EXIT_VENUE, EXIT_HALTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
REPO_CONFIG = Path(__file__).resolve().parent.parent / "config"


def resolve_config_path(path: str | None, sim: bool = False) -> Path:
    """The ``--config`` path, or ``config/{default,sim}.yaml`` from the working directory
    (falling back to the one beside the installed package)."""
    if path:
        return Path(path)
    name = "sim.yaml" if sim else "default.yaml"
    local = Path("config") / name
    return local if local.exists() else REPO_CONFIG / name


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(resolve_config_path(args.config, getattr(args, "sim", False)))


def _command_modules():
    found = []
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            found.append(module)
    return sorted(found, key=lambda m: (getattr(m, "ORDER", 50), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="karb",
        description="K-Arb: Upbit-Bithumb KRW spot arbitrage. Dry-run unless config says "
        "mode: live AND you pass --live. Trading can lose money.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        p.add_argument("--config", metavar="PATH", help="YAML config (default: config/default.yaml)")
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or EXIT_OK)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except RecordingError as exc:
        print(f"recording error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SecretsError as exc:
        print(f"keys error: {exc}", file=sys.stderr)
        return EXIT_KEYS
    except StartupError as exc:
        print(f"start-up check failed: {exc}", file=sys.stderr)
        return exc.exit_code
    except VenueError as exc:
        print(f"venue error: {exc}", file=sys.stderr)
        return EXIT_VENUE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
