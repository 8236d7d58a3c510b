"""Soak: run the engine against the loopback sim for a while and report what it cost.

    python tools/soak.py --duration 600            # real orders on the sim's paper accounts
    python tools/soak.py --duration 600 --dry-run  # [DryRun] fills from the books
    python tools/soak.py --duration 120 --markets 150 --sim-process

The engine runs as its own process (``main.py run``), exactly as a user starts it, so its CPU
and memory are its own. The sim runs in this process, or with ``--sim-process`` as its own
process too (``main.py sim --info``), so this tool's sampling and the sim's generator do not
share a GIL with anything measured. ``--markets N`` trades N markets: the config's own sim
markets first, then generated ones (``KRW-C000`` ...) at prices spread log-uniformly over the
real KRW range (0.001 KRW to 100 M KRW, seeded); the sim's profile gives them their update rate
and book shape and ``karb.rules`` their ticks, as for any sim market.

At start (once the engine serves metrics) and at the end the tool samples the engine's CPU time
and RSS from /proc and scrapes its Prometheus endpoint (signals, trades, PnL, feed messages,
stage latency percentiles, 429 answers), then prints both and the difference: engine CPU as a
share of one core and per feed message. The run stops by itself after ``--duration`` seconds
(SIGTERM, then the engine's own summary); the engine log's lines naming a 429 are counted.

References measured in the same run, on the same loaded machine: the thread-wake latency
(``Event.set`` until the waiter runs, the floor under frame -> signal) and a fixed pure-Python
workload's time (how slow this machine is right now), both sampled while the engine runs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import yaml
from loguru import logger

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from karb.config import parse_config  # noqa: E402
from karb.sim.cluster import SimCluster  # noqa: E402
from karb.sim.external import engine_config_data, engine_env  # noqa: E402
from karb.book import BookBoard  # noqa: E402
from karb.model import Venue  # noqa: E402
from karb.secrets import ENV_NAMES  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid: int) -> dict:
    """CPU seconds (user+system) and RSS (MiB) of ``pid`` from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / TICK
    rss_kib = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
    return {"t": time.monotonic(), "cpu_s": cpu_s, "rss_mib": rss_kib / 1024}


def scrape(url: str) -> dict:
    """The metrics that matter here, from the engine's Prometheus text."""
    out: dict = {"feed_messages": 0.0, "latency": {}, "ratelimit_429": 0.0}
    response = requests.get(url, timeout=5)
    response.raise_for_status()
    for line in response.text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        labels = dict(part.split("=", 1) for part in name_labels[len(name) + 1:-1].split(",")) if "{" in name_labels else {}
        labels = {k: v.strip('"') for k, v in labels.items()}
        v = float(value)
        if name == "karb_feed_messages_total":
            out["feed_messages"] += v
        elif name == "karb_ratelimit_429_total":
            out["ratelimit_429"] += v
        elif name == "karb_stage_latency_seconds":
            out["latency"].setdefault(labels["stage"], {})[labels["quantile"]] = v * 1e6
        elif name in ("karb_signals_total", "karb_realised_pnl_krw", "karb_fees_krw"):
            out[name.removeprefix("karb_")] = v
        elif name == "karb_trades_total":
            out[f"trades_{labels['result']}"] = v
    return out


def generated_markets(n: int, sim_markets: dict, seed: int = 150) -> dict[str, dict]:
    """``n`` sim markets: ``sim_markets`` (the config's, real names and prices) first, then
    ``KRW-C000``... at prices log-uniform over 0.001 .. 100,000,000 KRW (4 significant digits;
    the sim puts every level on the venue's tick for its band)."""
    markets = dict(list(sim_markets.items())[:n])
    rng = random.Random(seed)
    i = 0
    while len(markets) < n:
        markets.setdefault(f"KRW-C{i:03d}", {"price": f"{10 ** rng.uniform(-3, 8):.4g}"})
        i += 1
    return markets


def wake_reference(seconds: float) -> list[int]:
    """ns from a book change (a snapshot applied, as a feed thread does) until a thread blocked
    in ``wait_for_change`` runs, sampled every ~2 ms for ``seconds``: the floor under frame ->
    signal on this machine, now."""
    board = BookBoard(["KRW-REF"])
    book = board.get(Venue.UPBIT, "KRW-REF")
    out: list[int] = []
    stamps: list[int] = []
    done = threading.Event()

    def waiter():
        seq = board.seq
        while not done.is_set():
            new = board.wait_for_change(seq, 0.05)
            if new != seq:
                out.append(time.monotonic_ns() - stamps[-1])
                seq = new

    thread = threading.Thread(target=waiter, name="soak-wake-ref", daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.002)
        stamps.append(time.monotonic_ns())
        book.apply_snapshot(((100.0, 1.0),), ((101.0, 1.0),), time.time_ns() // 1_000_000,
                            time.monotonic_ns())
    done.set()
    thread.join(1)
    return out


def python_speed_ms() -> float:
    """Best of 5 of a fixed pure-Python workload (ms): 2-3 ms on an idle core of this VM class."""
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        d: dict = {}
        for i in range(20_000):
            d[i & 255] = d.get(i & 255, 0) + i * 3
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--config", default=str(ROOT / "config" / "sim.yaml"))
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--markets", type=int, metavar="N",
                        help="trade N markets (the config's sim markets first, then generated ones)")
    parser.add_argument("--sim-process", action="store_true",
                        help="run the sim as its own process (main.py sim), not in this one")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    logger.remove()  # an in-process sim's own lines would bury the report
    logger.add(sys.stderr, level="WARNING")

    data = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    if args.markets:
        sim_markets = generated_markets(args.markets, data.setdefault("sim", {}).get("markets") or {})
        data["sim"]["markets"] = sim_markets
        data["markets"] = list(sim_markets)
    work = Path(tempfile.mkdtemp(prefix="karb-soak-"))
    port = free_port()
    data.setdefault("monitor", {}).update(metrics_port=port, status_interval_s=1.0)
    data["journal"] = {"path": str(work / "journal.sqlite")}
    data["log"] = {"level": "INFO", "file": str(work / "karb.jsonl")}
    data.setdefault("risk", {})["kill_switch_file"] = str(work / "KILL")
    with _sim(args, data, work) as sim:
        config_path = work / "karb.yaml"
        config_path.write_text(yaml.safe_dump(sim.engine_data(data, live=not args.dry_run)), encoding="utf-8")
        mode_flag = "--dry-run" if args.dry_run else "--live"
        log = open(work / "engine.out", "w", encoding="utf-8")
        proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "run", "--config", str(config_path),
                                 mode_flag, "--no-panel"], cwd=work, env=sim.engine_env(dict(os.environ)),
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            first = _wait_for_metrics(url, proc)
            start_proc, start_metrics = proc_sample(proc.pid), first
            start_sim = sim.sample()
            deadline = time.monotonic() + args.duration
            wake: list[int] = []
            speed: list[float] = []
            while time.monotonic() < deadline and proc.poll() is None:
                # the references, sampled through the run: ~1 s of wake probes per minute
                if len(speed) <= (args.duration - (deadline - time.monotonic())) / 60:
                    speed.append(python_speed_ms())
                    wake += wake_reference(min(1.0, max(0.0, deadline - time.monotonic())))
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            end_proc, end_metrics = proc_sample(proc.pid), scrape(url)
            end_sim = sim.sample()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
        published = sim.published()
    report = _report(args, start_proc, end_proc, start_metrics, end_metrics, code, work, published)
    report["sim_cpu_percent"] = None if start_sim is None else round(
        100 * (end_sim["cpu_s"] - start_sim["cpu_s"]) / (end_sim["t"] - start_sim["t"]), 1)
    report["log_429_lines"] = _count_429(work)
    report["reference"] = {"wake_us": _percentiles(wake), "python_speed_ms": round(min(speed), 2),
                           "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
    if args.json:
        print(json.dumps(report))
    else:
        _print(report)
    return 0 if code == 0 else 1


class _InProcessSim:
    """The sim as a ``SimCluster`` in this process."""

    def __init__(self, data: dict):
        self.cluster = SimCluster.from_config(parse_config(data)).start()

    def engine_data(self, data: dict, live: bool) -> dict:
        return engine_config_data(self.cluster, data, live=live)

    def engine_env(self, base: dict[str, str]) -> dict[str, str]:
        return engine_env(self.cluster, base)

    def sample(self) -> dict | None:
        return None  # shares this process: no CPU figure of its own

    def published(self) -> int:
        return self.cluster.market_stats().published

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.cluster.stop()


class _SimProcess:
    """The sim as its own process (``main.py sim --info``), reached through the info file."""

    def __init__(self, data: dict, work: Path):
        config_path, info_path = work / "sim.yaml", work / "sim.json"
        config_path.write_text(yaml.safe_dump(data), encoding="utf-8")
        self._out = open(work / "sim.out", "w", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "sim", "--config", str(config_path),
                                      "--info", str(info_path)], cwd=work, stdout=self._out,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not info_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise SystemExit(f"the sim did not start; see {work / 'sim.out'}")
            time.sleep(0.1)
        self.info = json.loads(info_path.read_text(encoding="utf-8"))

    def engine_data(self, data: dict, live: bool) -> dict:
        data = json.loads(json.dumps(data))
        if live:
            data["mode"] = "live"
        for venue in Venue:
            urls = self.info["venues"][venue.value]
            data["venues"][venue.value].update(rest_url=urls["rest_url"], ws_url=urls["ws_url"])
        return data

    def engine_env(self, base: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in base.items() if not k.startswith("KARB_")}
        for venue in Venue:
            access_env, secret_env = ENV_NAMES[venue]
            keys = self.info["venues"][venue.value]
            env[access_env], env[secret_env] = keys["access_key"], keys["secret_key"]
        return env

    def sample(self) -> dict | None:
        return proc_sample(self.proc.pid)

    def published(self) -> int:
        return requests.get(f"{self.info['control_url']}/status", timeout=5).json()["published"]

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._out.close()


def _sim(args, data: dict, work: Path):
    return _SimProcess(data, work) if args.sim_process else _InProcessSim(data)


def _count_429(work: Path) -> int:
    """Engine log lines that name an HTTP 429 (a ``VenueError`` reads ``upbit 429 <code>: ...``;
    a bare 429 is often an amount, e.g. ``3,429 KRW``)."""
    pattern = re.compile(r"\b(?:upbit|bithumb) 429\b|\bHTTP 429\b|RateLimited|too many (?:api )?requests",
                         re.IGNORECASE)
    count = 0
    for name in ("karb.jsonl", "engine.out"):
        path = work / name
        if path.exists():
            with open(path, encoding="utf-8", errors="replace") as lines:
                count += sum(1 for line in lines if pattern.search(line))
    return count


def _percentiles(ns: list[int]) -> dict:
    if not ns:
        return {"p50": None, "p99": None, "n": 0}
    v = sorted(ns)
    return {"p50": round(statistics.median(v) / 1000), "p99": round(v[min(len(v) - 1, int(0.99 * len(v)))] / 1000),
            "n": len(v)}


def _wait_for_metrics(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"engine exited early with code {proc.returncode}")
        try:
            metrics = scrape(url)
            if metrics["feed_messages"] > 0:
                return metrics
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit("engine did not serve metrics within 60 s")


def _report(args, p0, p1, m0, m1, code, work, published) -> dict:
    elapsed = p1["t"] - p0["t"]
    cpu_s = p1["cpu_s"] - p0["cpu_s"]
    messages = m1["feed_messages"] - m0["feed_messages"]
    return {
        "mode": "dry_run" if args.dry_run else "sim-live",
        "markets": args.markets or None,
        "sim_process": args.sim_process,
        "duration_s": round(elapsed, 1),
        "exit_code": code,
        "cpu_percent": round(100 * cpu_s / elapsed, 1),
        "cpu_us_per_msg": round(cpu_s * 1e6 / messages, 1) if messages else None,
        "rss_mib_start": round(p0["rss_mib"], 1),
        "rss_mib_end": round(p1["rss_mib"], 1),
        "feed_msgs_per_s": round(messages / elapsed, 1),
        "signals": m1.get("signals_total", 0),
        "trades_success": m1.get("trades_success", 0),
        "trades_shortfall": m1.get("trades_shortfall", 0),
        "trades_failure": m1.get("trades_failure", 0),
        "journal_mib": round(sum(f.stat().st_size for f in work.glob("journal.sqlite*")) / 2**20, 1),
        "realised_pnl_krw": m1.get("realised_pnl_krw", 0),
        "fees_krw": m1.get("fees_krw", 0),
        "ratelimit_429": m1["ratelimit_429"],
        "latency_us": {stage: {"p50": round(q.get("0.5", 0)), "p99": round(q.get("0.99", 0))}
                       for stage, q in m1["latency"].items()},
        "sim_published": published,
        "workdir": str(work),
    }


def _print(r: dict) -> None:
    where = "own process" if r["sim_process"] else "this process"
    print(f"soak {r['mode']}: {r['markets'] or 'config'} markets, sim in {where}, {r['duration_s']} s, "
          f"engine exit code {r['exit_code']}  (files: {r['workdir']})")
    print(f"  engine CPU {r['cpu_percent']}% of one core, {r['cpu_us_per_msg']} us per feed message; "
          f"RSS {r['rss_mib_start']} MiB at start -> {r['rss_mib_end']} MiB at end")
    if r["sim_cpu_percent"] is not None:
        print(f"  sim CPU {r['sim_cpu_percent']}% of one core (its own process)")
    print(f"  feed messages {r['feed_msgs_per_s']}/s (both venues)")
    print(f"  signals {r['signals']:.0f}; trades ok {r['trades_success']:.0f}, shortfall "
          f"{r['trades_shortfall']:.0f}, failed {r['trades_failure']:.0f}; realised PnL "
          f"{r['realised_pnl_krw']:,.0f} KRW, fees {r['fees_krw']:,.0f} KRW; journal {r['journal_mib']} MiB")
    print(f"  429 answers {r['ratelimit_429']:.0f} (metrics), log lines naming a 429: {r['log_429_lines']}")
    for stage, q in r["latency_us"].items():
        print(f"  {stage:<16} p50 {q['p50']:>7} us   p99 {q['p99']:>7} us")
    ref = r["reference"]
    print(f"  reference (same run): book change -> waiting thread runs p50 {ref['wake_us']['p50']} us, "
          f"p99 {ref['wake_us']['p99']} us (n={ref['wake_us']['n']}); fixed Python workload "
          f"{ref['python_speed_ms']} ms; load average {' '.join(ref['loadavg'])}")


if __name__ == "__main__":
    sys.exit(main())
