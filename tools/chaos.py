"""Chaos campaign: the engine as its own process against the sim in another, faults and kills.

    python tools/chaos.py --duration 1800 [--seed N] [--markets KRW-BTC KRW-XRP] [--out DIR]

The sim runs as ``main.py sim`` (its accounts outlive every engine process) and writes its URLs
and paper keys to ``sim.json``; the engine runs as ``main.py run --live`` on a ``mode: live``
config whose venue URLs are the sim's, the paper keys in its environment, the journal in the
out dir. Until the duration ends the tool injects random faults through the sim's control
endpoint (WS drops, stalls, garbage and future-dated frames, 5xx and 429, delayed REST, delayed,
lost, rejected, partial and slow-to-register orders), dislocates markets so trades happen, and
kills the engine (mostly ``kill -9``, sometimes SIGTERM) at chosen moments: at random, right
after a dislocation, the instant the journal shows a new signal (mid-leg), the instant it shows
an unwind order (mid-unwind), and with the venue slow or losing answers. Each time it restarts
the engine on the same journal, lets it settle, and checks the invariants of
``tools/chaos_invariants.py`` against the sim's own accounts and order history; again after a
final SIGTERM. It prints a table (also ``chaos-report.txt``; everything in ``chaos-run.json``)
and exits 1 if any invariant was violated, 2 if the campaign itself could not run.

Every wait is bounded; the sim and engine processes are always stopped at the end. Kill
scenarios can be restricted with ``--scenarios`` (e.g. ``--scenarios kill_switch_on``). When the
engine has a ``resume`` command, a halt that survived a restart is resumed with it so the
campaign keeps trading.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_invariants import (  # noqa: E402
    Truth, Violation, check, fills_disagreements, halt_lost, read_journal, traded_while_killed,
)

ENV_KEYS = {"upbit": ("KARB_UPBIT_ACCESS_KEY", "KARB_UPBIT_SECRET_KEY"),
            "bithumb": ("KARB_BITHUMB_API_KEY", "KARB_BITHUMB_SECRET_KEY")}
VENUES = ("upbit", "bithumb")
READ_TIMEOUT_S = 1.0  # the engine's REST read timeout here: delays beyond it lose the answer
CIRCUIT_RESET_S = 30.0
STUCK_AFTER_S = 12.0  # a `sending` signal older than this is stuck, not in flight
FINAL_RECOVERY_S = 90.0  # a last start may take the not-found window (30 s) and backoff


class CampaignError(RuntimeError):
    """The campaign itself could not run (sim or engine would not start)."""


# --- faults -----------------------------------------------------------------------------------
def fault_menu(rng: random.Random) -> dict[str, tuple[str, dict]]:
    """kind -> (control action, arguments), drawn fresh each time."""
    return {
        "drop_ws": ("drop_ws", {}),
        "stall_ws": ("stall_ws", {"seconds": round(rng.uniform(1.0, 4.0), 2)}),
        "http_5xx": ("rest_error", {"status": rng.choice((500, 502, 503)), "count": rng.randint(1, 3)}),
        "http_429": ("rest_error", {"status": 429, "count": rng.randint(1, 3)}),
        "delay_rest": ("delay_rest", {"seconds": round(rng.uniform(1.5, 3.0), 2), "count": 1}),
        "reject_next_order": ("reject_next_order", {}),
        "partial_next_ioc": ("partial_next_ioc", {"fraction": round(rng.uniform(0.2, 0.8), 2)}),
        "slow_registration": ("slow_registration", {"seconds": round(rng.uniform(1.0, 4.0), 2), "count": 1}),
        "lose_answer": ("lose_answer", {"count": 1}),
        "delay_orders": ("delay_orders", {"seconds": round(rng.uniform(1.2, 3.0), 2), "count": 1}),
        "garbage_frames": ("garbage_frames", {"count": rng.randint(1, 5)}),
        "future_frames": ("future_frames", {"count": rng.randint(1, 3), "seconds": rng.choice((60, 3600))}),
    }


ORDER_FAULTS = {"reject_next_order", "partial_next_ioc", "slow_registration", "lose_answer", "delay_orders",
                "delay_rest"}
KILL_SCENARIOS = ("random", "after_dislocate", "mid_leg", "mid_unwind", "slow_venue", "kill_switch_on")
SCENARIOS = KILL_SCENARIOS + ("second_instance",)  # the last one starts a rival engine, kills nothing


# --- processes ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen | None, timeout_s: float = 10.0) -> int | None:
    """SIGTERM, wait (bounded), then SIGKILL. Returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


class SimProcess:
    """``main.py sim`` in its own process; ``info`` is what it wrote to ``sim.json``."""

    def __init__(self, out: Path, config_path: Path):
        self.out = out
        self.info_path = out / "sim.json"
        self.info_path.unlink(missing_ok=True)
        self._log = open(out / "sim.log", "a", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "sim", "--config", str(config_path), "--info",
             str(self.info_path)], cwd=out, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not self.info_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise CampaignError(f"the sim did not start (see {out / 'sim.log'})")
            time.sleep(0.1)
        self.info = json.loads(self.info_path.read_text(encoding="utf-8"))
        self.control = self.info["control_url"]
        self.http = requests.Session()

    def post(self, path: str, body: dict) -> None:
        response = self.http.post(f"{self.control}{path}", json=body, timeout=5)
        if response.status_code != 200:
            raise CampaignError(f"sim control {path}: {response.status_code} {response.text}")

    def truth(self) -> Truth:
        accounts = self.http.get(f"{self.control}/accounts", timeout=10).json()
        orders, attempts = {}, {}
        for venue in VENUES:
            data = self.http.get(f"{self.control}/orders/{venue}", timeout=10).json()
            orders[venue], attempts[venue] = data["orders"], data["attempts"]
        return Truth(accounts, orders, attempts)

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()
        self.http.close()


@dataclass
class EngineState:
    """What the engine's metrics said at ``t`` (monotonic)."""

    t: float
    halted: bool
    circuit: str


class EngineProcess:
    """``main.py run --live`` on the campaign's config; one instance at a time."""

    def __init__(self, out: Path, config_path: Path, env: dict[str, str], metrics_port: int,
                 log_name: str = "engine.log"):
        self.out, self.config_path, self.env = out, config_path, env
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._log = open(out / log_name, "a", encoding="utf-8")
        self.http = requests.Session()

    def start(self, timeout_s: float = 60.0) -> bool:
        """Start and wait until it serves metrics; False if it exited first (its code is logged)."""
        assert self.proc is None or self.proc.poll() is not None, "one engine at a time"
        self.starts += 1
        self._log.write(f"\n===== chaos: engine start #{self.starts} at {time.strftime('%H:%M:%S')} =====\n")
        self._log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "run", "--config", str(self.config_path), "--live",
             "--no-panel"], cwd=self.out, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self.state() is not None:
                return True
            time.sleep(0.1)
        self.kill(signal.SIGKILL)
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int, wait_s: float = 20.0) -> tuple[int | None, float, bool]:
        """Send ``sig``; wait for exit. Returns (exit code, seconds to exit, had to SIGKILL)."""
        assert self.proc is not None
        sent = time.monotonic()
        forced = False
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                forced = True
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode, time.monotonic() - sent, forced

    def state(self) -> EngineState | None:
        try:
            response = self.http.get(self.metrics_url, timeout=2)
        except requests.RequestException:
            return None
        if response.status_code != 200:
            return None
        halted, circuit = False, "closed"
        for line in response.text.splitlines():
            if line.startswith("karb_halted "):
                halted = float(line.split()[-1]) > 0
            elif line.startswith("karb_circuit_state{") and float(line.split()[-1]) > 0:
                circuit = line.split('state="', 1)[1].split('"', 1)[0]
        return EngineState(time.monotonic(), halted, circuit)

    def close(self) -> None:
        if self.alive():
            self.kill(signal.SIGKILL)
        self._log.close()
        self.http.close()


# --- the campaign --------------------------------------------------------------------------------
@dataclass
class Tally:
    faults: dict[str, int] = field(default_factory=dict)
    dislocations: int = 0
    kills: dict[str, int] = field(default_factory=dict)  # scenario -> kill -9 count
    sigterms: dict[str, int] = field(default_factory=dict)
    sigterm_slow: int = 0  # SIGTERM that needed a SIGKILL after 20 s
    restarts: int = 0
    start_failures: int = 0
    engine_died: int = 0  # exits nobody asked for
    checks: int = 0
    not_quiet: int = 0  # checks run although something still looked in flight
    resumes: int = 0
    rivals: int = 0  # second instances started
    violations: dict[tuple[str, str], dict] = field(default_factory=dict)  # key -> first detail + count
    events: list[dict] = field(default_factory=list)

    def add(self, found: list[Violation], when: str) -> None:
        for v in found:
            entry = self.violations.setdefault(v.key, {"invariant": v.invariant, "subject": v.subject,
                                                       "detail": v.detail, "first_seen": when, "seen": 0})
            entry["seen"] += 1
            entry["last_detail"], entry["last_seen"] = v.detail, when


class Campaign:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rng = random.Random(args.seed)
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.tally = Tally()
        self.journal_path = self.out / "journal.sqlite"
        base = yaml.safe_load((ROOT / "config" / "sim.yaml").read_text(encoding="utf-8"))
        unknown = [m for m in args.markets if m not in base["sim"]["markets"]]
        if unknown:
            raise CampaignError(f"--markets: no sim price for {', '.join(unknown)}")
        self.base = base
        self.prices = {m.split("-", 1)[1]: Decimal(str(base["sim"]["markets"][m]["price"])) for m in args.markets}
        self.sim: SimProcess | None = None
        self.engine: EngineProcess | None = None
        self.rival: EngineProcess | None = None  # a second instance on the same journal
        self.has_resume = False
        self.interrupted = False
        self.error: str | None = None
        self.history: list[EngineState] = []  # recent metrics scrapes of the running engine
        self.t0 = time.monotonic()

    # --- set-up ------------------------------------------------------------------------------
    def _sim_config(self) -> Path:
        data = {k: v for k, v in self.base.items() if k != "sim"}
        data["markets"] = list(self.args.markets)
        data["log"] = {"level": "WARNING", "file": None}
        data["journal"] = {"path": str(self.out / "sim-unused.sqlite")}
        data["sim"] = {"seed": self.args.seed, "gaps_per_min": 0, "update_hz": 10,
                       "markets": {m: self.base["sim"]["markets"][m] for m in self.args.markets}}
        path = self.out / "sim.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    def _engine_config(self, info: dict, metrics_port: int, name: str = "engine.yaml") -> Path:
        data = {k: v for k, v in self.base.items() if k != "sim"}
        data["mode"] = "live"
        data["markets"] = list(self.args.markets)
        for venue in VENUES:
            data["venues"][venue].update(rest_url=info["venues"][venue]["rest_url"],
                                         ws_url=info["venues"][venue]["ws_url"], read_timeout_s=READ_TIMEOUT_S)
        data["venues"]["bithumb"]["api"] = self.args.bithumb_api
        data["strategy"] = {"threshold_bps": 20, "cooldown_ms": 300}
        data["risk"] = {"max_trade_krw": "2000000", "kill_switch_file": str(self.out / "KILL"),
                        "circuit_reset_s": CIRCUIT_RESET_S}
        data["journal"] = {"path": str(self.journal_path)}
        data["log"] = {"level": "INFO", "file": str(self.out / "engine.jsonl")}
        data["monitor"] = {"metrics_port": metrics_port, "status_interval_s": 0.5}
        path = self.out / name
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    def _engine_env(self, info: dict) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KARB_")}
        for venue, (access_env, secret_env) in ENV_KEYS.items():
            env[access_env] = info["venues"][venue]["access_key"]
            env[secret_env] = info["venues"][venue]["secret_key"]
        return env

    # --- run ---------------------------------------------------------------------------------
    def run(self) -> dict:
        """Run the campaign; always stop both processes, always return a report (``error`` set
        when the campaign itself broke, ``interrupted`` on Ctrl-C or SIGTERM)."""
        try:
            self.sim = SimProcess(self.out, self._sim_config())
            info = self.sim.info
            port = free_port()
            self.engine = EngineProcess(self.out, self._engine_config(info, port), self._engine_env(info), port)
            rival_port = free_port()
            self.rival = EngineProcess(self.out, self._engine_config(info, rival_port, "engine-rival.yaml"),
                                       self._engine_env(info), rival_port, "engine-rival.log")
            self.has_resume = subprocess.run(
                [sys.executable, str(ROOT / "main.py"), "resume", "--help"], cwd=self.out, capture_output=True,
                timeout=60).returncode == 0
            self._start_engine("initial start")
            try:
                self._loop(self.t0 + self.args.duration)
            except KeyboardInterrupt:
                self.interrupted = True
            self._final_stop()
        except CampaignError as exc:
            self.error = str(exc)
        except requests.RequestException as exc:  # the sim's control endpoint went away
            self.error = f"sim control endpoint: {exc}"
        finally:
            if self.engine is not None:
                self.engine.close()
            if self.rival is not None:
                self.rival.close()
            if self.sim is not None:
                self.sim.stop()
        return self.report()

    def _loop(self, deadline: float) -> None:
        next_fault = time.monotonic() + self.rng.expovariate(1 / self.args.fault_every)
        next_kill = time.monotonic() + self.rng.uniform(0.5, 1.5) * self.args.kill_every
        next_dislocation = time.monotonic() + self.rng.uniform(1, 4)
        while time.monotonic() < deadline:
            now = time.monotonic()
            assert self.engine is not None
            if not self.engine.alive():
                self.tally.engine_died += 1
                self._event("engine_died", code=self.engine.proc.returncode if self.engine.proc else None)
                self._restart_and_check("after an unasked exit")
                continue
            state = self.engine.state()
            if state is not None:
                self.history = (self.history + [state])[-600:]
            if now >= next_kill and deadline - now > 15:
                self._kill_scenario()
                next_kill = time.monotonic() + self.rng.uniform(0.5, 1.5) * self.args.kill_every
                continue
            if now >= next_fault:
                kind = self._inject_fault()
                if kind in ORDER_FAULTS and self.rng.random() < 0.7:
                    self._dislocate()  # so the armed order fault meets an order
                next_fault = time.monotonic() + self.rng.expovariate(1 / self.args.fault_every)
            if now >= next_dislocation:
                self._dislocate()
                next_dislocation = time.monotonic() + self.rng.uniform(2, 8)
            time.sleep(max(0.0, min(0.5, next_fault - time.monotonic(), deadline - time.monotonic())))

    # --- actions -----------------------------------------------------------------------------
    def _inject_fault(self, kind: str | None = None, venue: str | None = None) -> str:
        menu = fault_menu(self.rng)
        kind = kind or self.rng.choice(sorted(menu))
        venue = venue or self.rng.choice(VENUES)
        action, body = menu[kind]
        assert self.sim is not None
        self.sim.post(f"/faults/{venue}/{action}", body)
        self.tally.faults[kind] = self.tally.faults.get(kind, 0) + 1
        self._event("fault", kind=kind, venue=venue, args=body)
        return kind

    def _dislocate(self) -> None:
        assert self.sim is not None
        market = self.rng.choice(self.args.markets)
        cheap = self.rng.choice(VENUES)
        self.sim.post("/dislocate", {"market": market, "cheap_venue": cheap, "bps": self.rng.uniform(40, 90),
                                     "seconds": self.rng.uniform(0.8, 2.0)})
        self.tally.dislocations += 1

    def _kill_scenario(self) -> None:
        scenario = self.rng.choice(self.args.scenarios)
        if scenario == "second_instance":
            self._second_instance()
            return
        sig = signal.SIGKILL if self.rng.random() < self.args.kill9_share else signal.SIGTERM
        since_ns = time.time_ns()
        trigger = "timer"
        assert self.engine is not None
        before = self.engine.state() or (self.history[-1] if self.history else None)
        after_start = None
        if scenario == "kill_switch_on":
            after_start = self._engage_kill_switch()
        elif scenario == "after_dislocate":
            self._dislocate()
            time.sleep(self.rng.uniform(0.02, 0.5))
        elif scenario == "mid_leg":
            self._dislocate()
            trigger = self._wait_journal("SELECT id FROM signals WHERE wall_ns > ?", since_ns, 5.0)
            time.sleep(self.rng.uniform(0.0, 0.03))
        elif scenario == "mid_unwind":
            venue = self.rng.choice(VENUES)
            self._inject_fault(self.rng.choice(("reject_next_order", "partial_next_ioc")), venue)
            if self.rng.random() < 0.5:  # hold the unwind's order at the venue too: kill while it waits
                self._inject_fault("delay_orders", venue)
            self._dislocate()
            trigger = self._wait_journal("SELECT client_id FROM orders WHERE created_wall_ns > ? AND "
                                         "role NOT IN ('buy', 'sell')", since_ns, 6.0)
            time.sleep(self.rng.uniform(0.0, 0.4))
        elif scenario == "slow_venue":
            self._inject_fault(self.rng.choice(("slow_registration", "lose_answer", "delay_orders", "delay_rest")))
            self._dislocate()
            trigger = self._wait_journal("SELECT id FROM signals WHERE wall_ns > ?", since_ns, 5.0)
            time.sleep(self.rng.uniform(0.0, 0.5))
        if scenario not in ("random", "kill_switch_on"):
            before = self.engine.state() or before
        code, took, forced = self.engine.kill(sig)
        table = self.tally.kills if sig == signal.SIGKILL else self.tally.sigterms
        table[scenario] = table.get(scenario, 0) + 1
        self.tally.sigterm_slow += int(forced)
        self._event("kill", scenario=scenario, signal=signal.Signals(sig).name, trigger=trigger, exit_code=code,
                    exit_s=round(took, 2), forced=forced,
                    halted_before=before.halted if before else None, circuit_before=before.circuit if before else None)
        self._restart_and_check(f"{signal.Signals(sig).name} {scenario}", before, after_start)

    def _second_instance(self, wait_s: float = 10.0) -> None:
        """Start a second engine on the same journal while the first runs: it must not get to
        serve (refused by the instance lock, or waiting for it). Killed either way."""
        assert self.rival is not None
        label = f"second instance {self.tally.rivals + 1}"
        self.tally.rivals += 1
        ran = self.rival.start(timeout_s=wait_s)  # True once it serves metrics: it is running
        code = self.rival.proc.returncode if self.rival.proc is not None else None
        if self.rival.alive():
            self.rival.kill(signal.SIGKILL)
        self._event("second_instance", ran=ran, exit_code=code)
        if ran:
            self.tally.add([Violation("second_instance", label, "a second engine ran on the same journal "
                                      "while the first was running")], label)

    def _engage_kill_switch(self):
        """Put the kill file in place (as ``karb kill`` does) and return what to do once the
        engine restarted with it: dislocate for its first strategy pass, check that it sent no
        new trade while the file was there, then clear the file so trading resumes."""
        kill_file = self.out / "KILL"
        kill_file.write_text("chaos campaign: kill switch across a restart\n", encoding="utf-8")
        engaged_ns = time.time_ns()
        time.sleep(0.5)  # the running engine polls the file
        market, cheap = self.rng.choice(self.args.markets), self.rng.choice(VENUES)
        assert self.sim is not None
        self.sim.post("/dislocate", {"market": market, "cheap_venue": cheap, "bps": 80, "seconds": 8.0})
        self.tally.dislocations += 1

        def after_start(label: str) -> None:
            time.sleep(2.0)
            assert self.sim is not None
            truth, journal = self.sim.truth(), read_journal(self.journal_path)
            self.tally.add(traded_while_killed(truth, journal, engaged_ns + int(0.5e9), label), label)
            kill_file.unlink(missing_ok=True)
            time.sleep(0.5)

        return after_start

    def _wait_journal(self, sql: str, since_ns: int, timeout_s: float) -> str:
        """Poll the journal (read-only use) until ``sql`` returns a row; what triggered, or timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.journal_path.exists():
                try:
                    conn = sqlite3.connect(self.journal_path, timeout=1.0)
                    try:
                        row = conn.execute(sql + " LIMIT 1", (since_ns,)).fetchone()
                    finally:
                        conn.close()
                    if row:
                        return "journal"
                except sqlite3.Error:
                    pass
            time.sleep(0.005)
        return "timeout"

    def _start_engine(self, why: str) -> None:
        assert self.engine is not None and self.sim is not None
        for _ in range(5):
            if self.engine.start():
                return
            self.tally.start_failures += 1
            self._event("start_failed", why=why, code=self.engine.proc.returncode if self.engine.proc else None)
            for venue in VENUES:  # a fault armed for trading may have hit the start-up checks
                self.sim.post(f"/faults/{venue}/clear", {})
            time.sleep(1.0)
        raise CampaignError(f"the engine would not start ({why}); see {self.out / 'engine.log'}")

    def _restart_and_check(self, why: str, before: EngineState | None = None, after_start=None) -> None:
        self._start_engine(why)
        self.tally.restarts += 1
        label = f"restart {self.tally.restarts} ({why})"
        if after_start is not None:
            after_start(label)
        self._settle_and_check(label)
        assert self.engine is not None
        after = self.engine.state()
        found = halt_lost(before, after, self._last_closed(), CIRCUIT_RESET_S, label)
        self.tally.add(found, label)
        self.history = [after] if after else []
        if after is not None and after.halted and self.has_resume:
            self._resume()

    def _resume(self) -> None:
        """``karb resume`` as an operator would: against the running engine, or, if it refuses
        that, with the engine stopped (then started again)."""
        assert self.engine is not None
        command = [sys.executable, str(ROOT / "main.py"), "resume", "--config", str(self.engine.config_path)]
        done = subprocess.run(command, cwd=self.out, capture_output=True, timeout=60)
        if done.returncode != 0:
            self.engine.kill(signal.SIGTERM)
            done = subprocess.run(command, cwd=self.out, capture_output=True, timeout=60)
            self._start_engine("after karb resume")
        self.tally.resumes += int(done.returncode == 0)
        self._event("resume", code=done.returncode, output=(done.stdout + done.stderr).decode(errors="replace")[-300:])

    def _last_closed(self) -> float | None:
        closed = [s.t for s in self.history if s.circuit == "closed"]
        return closed[-1] if closed else None

    def _settle_and_check(self, label: str, quiet_timeout_s: float | None = None,
                          strict: bool = False) -> None:
        """Give the engine ``settle_s`` to reconcile, wait (bounded) until nothing is in flight,
        then check every invariant against the sim."""
        assert self.sim is not None
        time.sleep(self.args.settle_s)
        deadline = time.monotonic() + (quiet_timeout_s if quiet_timeout_s is not None else self.args.quiet_timeout_s)
        while True:
            # journal, venues, journal: an order placed between the reads (a recovery's unwind)
            # would otherwise be in one view and not the other; journalled first, so two equal
            # journal reads around the venue read make one consistent picture
            before = read_journal(self.journal_path)
            truth, journal = self.sim.truth(), read_journal(self.journal_path)
            busy = journal.in_flight(time.time_ns(), STUCK_AFTER_S)
            if (before.orders, before.signals, before.fills) != (journal.orders, journal.signals, journal.fills):
                busy.append("the journal moved during the venue read")
            if truth.resting():
                busy.append(f"{truth.resting()} orders resting at the venues")
            if not busy or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if busy:
            self.tally.not_quiet += 1
            self._event("not_quiet", label=label, busy=busy[:5])
        self.tally.checks += 1
        # With orders still unresolved (e.g. a restart holding trading inside the not-found
        # window) only the always-true invariants apply; the final check is always strict.
        found = check(truth, journal, self.prices, quiet=strict or not busy,
                      dust_krw=Decimal(str(self.args.dust_krw)))
        self.tally.add(found, label)
        self._event("check", label=label, violations=len(found))

    def _final_stop(self) -> None:
        assert self.engine is not None
        if self.engine.alive():
            code, took, forced = self.engine.kill(signal.SIGTERM, wait_s=30.0)
            self.tally.sigterm_slow += int(forced)
            self._event("final_stop", exit_code=code, exit_s=round(took, 2), forced=forced)
        busy = read_journal(self.journal_path).in_flight(time.time_ns(), STUCK_AFTER_S)
        if busy:
            # the stop left orders that may still fill: one more start recovers them (the
            # not-found window is 30 s), then a clean stop, as an operator would
            self._event("final_recovery", busy=busy[:5])
            self._start_engine("final recovery")
            deadline = time.monotonic() + FINAL_RECOVERY_S
            while read_journal(self.journal_path).in_flight(time.time_ns(), STUCK_AFTER_S) \
                    and time.monotonic() < deadline:
                time.sleep(1.0)
            self.engine.kill(signal.SIGTERM, wait_s=30.0)
        self._settle_and_check("final (engine stopped)", quiet_timeout_s=0.0, strict=True)

    def _event(self, name: str, **data) -> None:
        self.tally.events.append({"t": round(time.monotonic() - self.t0, 2), "event": name, **data})

    # --- report --------------------------------------------------------------------------------
    def report(self) -> dict:
        t = self.tally
        journal = read_journal(self.journal_path)
        statuses: dict[str, int] = {}
        for s in journal.signals:
            statuses[s.get("status") or "?"] = statuses.get(s.get("status") or "?", 0) + 1
        by_invariant: dict[str, int] = {}
        for v in t.violations.values():
            by_invariant[v["invariant"]] = by_invariant.get(v["invariant"], 0) + 1
        return {
            "duration_s": round(time.monotonic() - self.t0, 1), "seed": self.args.seed,
            "error": self.error, "interrupted": self.interrupted,
            "markets": self.args.markets, "out": str(self.out),
            "faults": dict(sorted(t.faults.items())), "faults_total": sum(t.faults.values()),
            "dislocations": t.dislocations,
            "kill9": dict(sorted(t.kills.items())), "kill9_total": sum(t.kills.values()),
            "sigterm": dict(sorted(t.sigterms.items())), "sigterm_total": sum(t.sigterms.values()),
            "sigterm_needed_kill9": t.sigterm_slow, "restarts": t.restarts, "start_failures": t.start_failures,
            "engine_died": t.engine_died, "resumes": t.resumes, "second_instances": t.rivals, "checks": t.checks, "not_quiet": t.not_quiet,
            "trades": {"signals": len(journal.signals), **dict(sorted(statuses.items())),
                       "orders": len(journal.orders)},
            "fills_disagreements": len(fills_disagreements(journal, self.prices, Decimal(str(self.args.dust_krw)))),
            "violations_by_invariant": {name: by_invariant.get(name, 0) for name in INVARIANTS},
            "violations_total": len(t.violations),
            "violations": sorted(t.violations.values(), key=lambda v: (v["invariant"], v["subject"])),
            "events": t.events,
        }


INVARIANTS = ("duplicate_placement", "unjournalled_order", "residual_mismatch", "journal_balance", "halt_lost",
              "traded_while_killed", "second_instance")


def render(r: dict) -> str:
    rows = [f"chaos campaign: {r['duration_s']} s, seed {r['seed']}, markets {', '.join(r['markets'])}",
            f"  files: {r['out']}"]
    if r["error"] or r["interrupted"]:
        rows.append(f"  CAMPAIGN CUT SHORT: {r['error'] or 'interrupted'}")
    rows += ["", "faults injected by kind"]
    rows += [f"  {kind:<22}{n:>6}" for kind, n in r["faults"].items()]
    rows += [f"  {'total':<22}{r['faults_total']:>6}", f"  {'dislocations':<22}{r['dislocations']:>6}", "",
             "engine kills by scenario"]
    for scenario in KILL_SCENARIOS:
        rows.append(f"  {scenario:<22} kill -9 {r['kill9'].get(scenario, 0):>4}   SIGTERM {r['sigterm'].get(scenario, 0):>4}")
    rows += [f"  {'total':<22} kill -9 {r['kill9_total']:>4}   SIGTERM {r['sigterm_total']:>4}",
             f"  restarts {r['restarts']}, start failures {r['start_failures']}, unasked exits {r['engine_died']}, "
             f"SIGTERM needing kill -9 {r['sigterm_needed_kill9']}, resumes {r['resumes']}, "
             f"second instances started {r['second_instances']}",
             f"  invariant checks {r['checks']} (not quiet when checked: {r['not_quiet']})", "",
             "trades (journal)"]
    rows += [f"  {k:<22}{v:>6}" for k, v in r["trades"].items()]
    rows.append(f"  (orders whose fills rows disagree with them, not an invariant: {r['fills_disagreements']})")
    rows += ["", "invariant violations (distinct; must be 0)"]
    rows += [f"  {name:<22}{n:>6}" for name, n in r["violations_by_invariant"].items()]
    rows.append(f"  {'total':<22}{r['violations_total']:>6}")
    for v in r["violations"][:40]:
        rows.append(f"    {v['invariant']}: {v['detail']}  [first: {v['first_seen']}; seen {v['seen']}x]")
        if v["last_detail"] != v["detail"]:
            rows.append(f"      last ({v['last_seen']}): {v['last_detail']}")
    if len(r["violations"]) > 40:
        rows.append(f"    ... {len(r['violations']) - 40} more in chaos-run.json")
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of chaos (default 300)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument("--markets", nargs="+", default=["KRW-BTC", "KRW-XRP"])
    parser.add_argument("--out", default=None, help="directory for journal, logs and report (default: a new temp dir)")
    parser.add_argument("--bithumb-api", choices=("v2", "legacy"), default="v2",
                        help="the engine's Bithumb REST API (legacy orders carry no client id: the "
                        "duplicate and journalled-first checks then see Upbit only)")
    parser.add_argument("--fault-every", type=float, default=2.5, help="mean seconds between faults")
    parser.add_argument("--kill-every", type=float, default=18.0, help="mean seconds between engine kills")
    parser.add_argument("--kill9-share", type=float, default=0.8, help="share of kills that are kill -9")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS),
                        help="kill scenarios to draw from (default: all)")
    parser.add_argument("--settle-s", type=float, default=3.0, help="seconds a restarted engine gets to reconcile")
    parser.add_argument("--quiet-timeout-s", type=float, default=20.0,
                        help="after the settle, wait at most this long for nothing in flight before checking")
    parser.add_argument("--dust-krw", type=float, default=1.0, help="amounts closer than this (KRW) are equal")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    if args.out is None:
        import tempfile
        args.out = tempfile.mkdtemp(prefix="karb-chaos-")
    return args


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        campaign = Campaign(args)
    except CampaignError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    report = campaign.run()
    text = render(report)
    out = Path(report["out"])
    (out / "chaos-report.txt").write_text(text + "\n", encoding="utf-8")
    (out / "chaos-run.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(text, flush=True)
    if report["error"]:
        print(f"chaos: {report['error']}", file=sys.stderr)
        return 2
    return 1 if report["violations_total"] else 0


if __name__ == "__main__":
    sys.exit(main())
