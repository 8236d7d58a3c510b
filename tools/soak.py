"""Soak: run the engine against the loopback sim for a while and report what it cost.

    python tools/soak.py --duration 600            # real orders on the sim's paper accounts
    python tools/soak.py --duration 600 --dry-run  # [DryRun] fills from the books

The sim runs in this process; the engine runs as its own process (``main.py run``), exactly as
a user starts it, so its CPU and memory are its own. At start (once the engine serves metrics)
and at the end the tool samples the engine's CPU time and RSS from /proc and scrapes its
Prometheus endpoint (signals, trades, PnL, feed messages, stage latency percentiles), then
prints both and the difference. The run stops by itself after ``--duration`` seconds (SIGTERM,
then the engine's own summary).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from karb.config import parse_config  # noqa: E402
from karb.sim.cluster import SimCluster  # noqa: E402
from karb.sim.external import engine_config_data, engine_env  # noqa: E402

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
    out: dict = {"feed_messages": 0.0, "latency": {}}
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
        elif name == "karb_stage_latency_seconds":
            out["latency"].setdefault(labels["stage"], {})[labels["quantile"]] = v * 1e6
        elif name in ("karb_signals_total", "karb_realised_pnl_krw", "karb_fees_krw"):
            out[name.removeprefix("karb_")] = v
        elif name == "karb_trades_total":
            out[f"trades_{labels['result']}"] = v
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--config", default=str(ROOT / "config" / "sim.yaml"))
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    data = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    work = Path(tempfile.mkdtemp(prefix="karb-soak-"))
    port = free_port()
    data.setdefault("monitor", {}).update(metrics_port=port, status_interval_s=1.0)
    data["journal"] = {"path": str(work / "journal.sqlite")}
    data["log"] = {"level": "INFO", "file": str(work / "karb.jsonl")}
    data.setdefault("risk", {})["kill_switch_file"] = str(work / "KILL")
    with SimCluster.from_config(parse_config(data)).start() as cluster:
        engine_data = engine_config_data(cluster, data, live=not args.dry_run)
        config_path = work / "karb.yaml"
        config_path.write_text(yaml.safe_dump(engine_data), encoding="utf-8")
        mode_flag = "--dry-run" if args.dry_run else "--live"
        log = open(work / "engine.out", "w", encoding="utf-8")
        proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "run", "--config", str(config_path),
                                 mode_flag, "--no-panel"], cwd=work, env=engine_env(cluster, dict(os.environ)),
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            first = _wait_for_metrics(url, proc)
            start_proc, start_metrics = proc_sample(proc.pid), first
            deadline = time.monotonic() + args.duration
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            end_proc, end_metrics = proc_sample(proc.pid), scrape(url)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
        sim_stats = cluster.market_stats()
    report = _report(args, start_proc, end_proc, start_metrics, end_metrics, code, work, sim_stats)
    if args.json:
        print(json.dumps(report))
    else:
        _print(report)
    return 0 if code == 0 else 1


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


def _report(args, p0, p1, m0, m1, code, work, sim_stats) -> dict:
    elapsed = p1["t"] - p0["t"]
    return {
        "mode": "dry_run" if args.dry_run else "sim-live",
        "duration_s": round(elapsed, 1),
        "exit_code": code,
        "cpu_percent": round(100 * (p1["cpu_s"] - p0["cpu_s"]) / elapsed, 1),
        "rss_mib_start": round(p0["rss_mib"], 1),
        "rss_mib_end": round(p1["rss_mib"], 1),
        "feed_msgs_per_s": round((m1["feed_messages"] - m0["feed_messages"]) / elapsed, 1),
        "signals": m1.get("signals_total", 0),
        "trades_success": m1.get("trades_success", 0),
        "trades_failure": m1.get("trades_failure", 0),
        "realised_pnl_krw": m1.get("realised_pnl_krw", 0),
        "fees_krw": m1.get("fees_krw", 0),
        "latency_us": {stage: {"p50": round(q.get("0.5", 0)), "p99": round(q.get("0.99", 0))}
                       for stage, q in m1["latency"].items()},
        "sim_published": sim_stats.published,
        "workdir": str(work),
    }


def _print(r: dict) -> None:
    print(f"soak {r['mode']}: {r['duration_s']} s, engine exit code {r['exit_code']}  (files: {r['workdir']})")
    print(f"  engine CPU {r['cpu_percent']}% of one core; RSS {r['rss_mib_start']} MiB at start -> "
          f"{r['rss_mib_end']} MiB at end")
    print(f"  feed messages {r['feed_msgs_per_s']}/s (both venues)")
    print(f"  signals {r['signals']:.0f}; trades ok {r['trades_success']:.0f}, failed {r['trades_failure']:.0f}; "
          f"realised PnL {r['realised_pnl_krw']:,.0f} KRW, fees {r['fees_krw']:,.0f} KRW")
    for stage, q in r["latency_us"].items():
        print(f"  {stage:<16} p50 {q['p50']:>7} us   p99 {q['p99']:>7} us")


if __name__ == "__main__":
    sys.exit(main())
