"""Measure signal -> both legs on the wire, against the loopback sim, with same-run references.

    python tools/bench_signal_to_legs.py [--trades 100] [--markets 11] [--sim-process]
                                         [--path lean|requests] [--switch-interval-ms 0.5]

Wires the real path (sim venues on loopback, WebSocket feeds of ``--markets`` markets from
``config/sim.yaml``, books, strategy thread, risk, journal, executor with the real REST
clients), forces a dislocation on KRW-BTC, waits for the trade, and repeats, alternating the
cheap venue so inventory stays balanced. Per trade (all ``time.monotonic_ns``):

  frame -> signal          the feed thread received the frame .. the strategy built the signal
  signal -> legs sent      the old figure: .. the later leg *entering* placement (leg NEW ->
                           SENT; its request not yet signed, nothing written)
  signal -> both on wire   .. the later leg's request fully handed to its socket (its
                           ``sendall`` returned with the last byte): the goal's figure
  signal -> first on wire  .. the earlier of the two
  submit -> both on wire   the executor's part: risk reservation, both orders prepared
                           (slot, signature, bytes), intent committed to SQLite, the two
                           writes (then, or on the leg threads if they could not be prepared
                           without waiting), with its parts below
  wire gap                 between the two legs' last bytes (how "together" they are)

"sendall returned" is the Python thread running again after the call: it includes any wait
for the GIL after the system call (another thread may take it while ``send`` runs), so the
bytes were in the kernel no later than the time shown.

``--path lean`` (default) is the engine as built: prepared orders released together on the
lean connections (``karb.exchanges.wire``). ``--path requests`` disables the lean path, so
both legs go through ``requests`` as before it existed; "on the wire" is then taken from
urllib3's ``HTTPConnection.request`` returning (the body's ``sendall`` done), recorded by a
wrapper this tool installs.

The sim runs in this process unless ``--sim-process`` (then ``main.py sim`` in its own
process, dislocations through its control endpoint): in-process, its request threads compete
for the GIL with the engine's leg threads, which is not how a venue behaves.

References, measured in the same run while the engine is up:

  thread wake        ``Event.set()`` until the waiting thread runs: the floor of each of the
                     path's cross-thread hops (feed -> strategy -> leg threads)
  bare sendall       ``socket.sendall`` of one order request's bytes on a loopback connection
  bare REST trip     one GET of the sim's ticker with ``http.client`` on a kept-alive
                     connection: what a leg waits for after its bytes are on the wire
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import requests
import urllib3.connection
import yaml
from loguru import logger

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from karb.book import BookBoard  # noqa: E402
from karb.clock import SystemClock  # noqa: E402
from karb.config import parse_config  # noqa: E402
from karb.exchanges.factory import make_client  # noqa: E402
from karb.exchanges.upbit.client import UpbitClient  # noqa: E402
from karb.execution import Executor  # noqa: E402
from karb.inventory import Inventory  # noqa: E402
from karb.journal import Journal  # noqa: E402
from karb.market_data import MarketData  # noqa: E402
from karb.model import OrderRequest, OrderType, Side, TimeInForce, Venue  # noqa: E402
from karb.risk import Risk  # noqa: E402
from karb.rules import RulesBook  # noqa: E402
from karb.secrets import Credentials  # noqa: E402
from karb.sim.cluster import SimCluster  # noqa: E402
from karb.strategy import Strategy  # noqa: E402

MARKET = "KRW-BTC"


def config_data(tmp: Path, seed: int, n_markets: int) -> dict:
    sim_yaml = yaml.safe_load((ROOT / "config" / "sim.yaml").read_text(encoding="utf-8"))
    markets = sim_yaml["markets"][:n_markets]
    if MARKET not in markets:
        raise SystemExit(f"{MARKET} must be among the markets")
    return {
        "mode": "live",
        "markets": markets,
        "venues": {
            # the venues' own rate limits (a limit above theirs is corrected down by Upbit's
            # Remaining-Req and stalls the next orders for a window)
            "upbit": {"rest_url": "http://127.0.0.1:0", "ws_url": "ws://127.0.0.1:0",
                      "taker_fee": "0.0005", "maker_fee": "0.0005"},
            "bithumb": {"rest_url": "http://127.0.0.1:0", "ws_url": "ws://127.0.0.1:0",
                        "taker_fee": "0.0004", "maker_fee": "0.0004"},
        },
        # a threshold no market reaches by itself: the only trades are the forced ones
        "strategy": {"threshold_bps": 25, "cooldown_ms": 600, "max_skew_ms": 1000},
        "risk": {"max_trade_krw": "2000000", "kill_switch_file": str(tmp / "KILL")},
        "journal": {"path": str(tmp / "bench.sqlite")},
        "sim": {"seed": seed, "gaps_per_min": 0, "premium_vol_bps": 0.5, "update_hz": 20,
                "enforce_rate_limits": False,
                "markets": {m: sim_yaml["sim"]["markets"][m] for m in markets}},
    }


class InProcessSim:
    def __init__(self, data: dict):
        base = parse_config(data)
        self.cluster = SimCluster.from_config(base).start()
        self.config = self.cluster.apply_to(base)

    def credentials(self, venue: Venue) -> Credentials:
        return self.cluster.credentials(venue)

    def dislocate(self, market: str, cheap: Venue, bps: float, seconds: float) -> None:
        self.cluster.dislocate(market, cheap, bps, seconds)

    def stop(self) -> None:
        self.cluster.stop()


class ProcessSim:
    """``main.py sim`` as its own process; its URLs and paper keys from ``--info``."""

    def __init__(self, data: dict, tmp: Path):
        path, info_path = tmp / "sim.yaml", tmp / "sim-info.json"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        self._log = open(tmp / "sim.out", "w", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "sim", "--config",
                                      str(path), "--info", str(info_path)], cwd=tmp,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not info_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"sim process did not start; see {tmp / 'sim.out'}")
            time.sleep(0.05)
        self.info = json.loads(info_path.read_text(encoding="utf-8"))
        for venue, ep in self.info["venues"].items():
            data["venues"][venue].update(rest_url=ep["rest_url"], ws_url=ep["ws_url"],
                                         private_ws_url=ep["private_ws_url"])
        self.config = parse_config(data)

    def credentials(self, venue: Venue) -> Credentials:
        ep = self.info["venues"][venue.value]
        return Credentials(ep["access_key"], ep["secret_key"])

    def dislocate(self, market: str, cheap: Venue, bps: float, seconds: float) -> None:
        requests.post(self.info["control_url"].rstrip("/") + "/dislocate", timeout=5,
                      json={"market": market, "cheap_venue": cheap.value, "bps": bps,
                            "seconds": seconds}).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def percentiles(values_ns: list[int]) -> tuple[float, float, int]:
    """(median, p99) in microseconds, and the sample count."""
    v = sorted(values_ns)
    if not v:
        return float("nan"), float("nan"), 0
    p99 = v[min(len(v) - 1, int(round(0.99 * (len(v) - 1))))]
    return statistics.median(v) / 1000, p99 / 1000, len(v)


def thread_wake_reference(samples: int = 1000) -> list[int]:
    """ns from ``Event.set()`` until the waiting thread runs, one waiter, ``samples`` times."""
    go, ready = threading.Event(), threading.Event()
    stamps: list[int] = []
    out: list[int] = []

    def waiter():
        for _ in range(samples):
            ready.set()
            go.wait()
            out.append(time.monotonic_ns() - stamps[-1])
            go.clear()

    t = threading.Thread(target=waiter, name="bench-waiter", daemon=True)
    t.start()
    for _ in range(samples):
        ready.wait()
        ready.clear()
        time.sleep(0.0002)  # let the waiter block in wait()
        stamps.append(time.monotonic_ns())
        go.set()
        while len(out) < len(stamps) and t.is_alive():
            time.sleep(0)
    t.join(5)
    return out


def sendall_reference(data: bytes, samples: int = 500) -> list[int]:
    """ns of one ``socket.sendall(data)`` on a loopback TCP connection a thread drains."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server, _ = listener.accept()
    got = threading.Semaphore(0)

    def drain():
        left = len(data) * samples
        while left > 0:
            chunk = server.recv(65536)
            if not chunk:
                return
            left -= len(chunk)
            if left % len(data) == 0:
                got.release()

    t = threading.Thread(target=drain, name="bench-drain", daemon=True)
    t.start()
    out = []
    for _ in range(samples):
        t0 = time.monotonic_ns()
        client.sendall(data)
        out.append(time.monotonic_ns() - t0)
        got.acquire(timeout=1)  # one at a time, like an order
    for s in (client, server, listener):
        s.close()
    return out


def rest_reference(rest_url: str, samples: int = 200) -> list[int]:
    """ns of one bare ``http.client`` GET of the ticker on a kept-alive connection."""
    parts = urlsplit(rest_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    out = []
    for _ in range(samples + 5):
        t0 = time.monotonic_ns()
        conn.request("GET", f"/v1/ticker?markets={MARKET}")
        conn.getresponse().read()
        out.append(time.monotonic_ns() - t0)
    conn.close()
    return out[5:]  # the first few open the connection and warm the server's thread


class RequestsWireClock:
    """``--path requests``: when urllib3 finished writing each order POST, by client id."""

    def __init__(self):
        self.by_client: dict[str, int] = {}
        original = urllib3.connection.HTTPConnection.request
        clock = self

        def request(conn, method, url, body=None, headers=None, **kwargs):
            out = original(conn, method, url, body=body, headers=headers, **kwargs)
            done = time.monotonic_ns()
            if method == "POST" and body:
                fields = orjson.loads(body)
                cid = fields.get("identifier") or fields.get("client_order_id")
                if cid:
                    clock.by_client[cid] = done
            return out

        urllib3.connection.HTTPConnection.request = request


def run(args) -> int:
    sys.setswitchinterval(args.switch_interval_ms / 1000)  # as the engine sets it
    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    tmp = Path(tempfile.mkdtemp(prefix="karb-bench-"))
    data = config_data(tmp, args.seed, args.markets)
    sim = ProcessSim(data, tmp) if args.sim_process else InProcessSim(data)
    config = sim.config
    clock = SystemClock()
    clients = {v: make_client(v, config, sim.credentials(v)) for v in Venue}
    wire_clock = None
    if args.path == "requests":
        wire_clock = RequestsWireClock()
        for client in clients.values():
            client.prepare_order = lambda request, priority=False: None  # lean path off
    fees = {v: (config.venues[v].taker_fee, config.venues[v].maker_fee) for v in Venue}
    rules = RulesBook.fallback(config.markets, fees)
    for v in Venue:
        rules.update(v, clients[v].get_market_info(config.markets))
    risk = Risk(config, rules, clock)
    for v in Venue:
        risk.ledger.load(v, clients[v].get_balances())
    board = BookBoard(config.markets)
    market_data = MarketData(config, board)
    journal = Journal(config.journal.path)
    executor = Executor(clients, rules, risk, journal, config, clock)
    strategy = Strategy(board, rules, risk, Inventory(config.inventory, risk.ledger), config,
                        clock, executor.submit)
    trades: list[dict] = []
    committed: dict[str, int] = {}
    record_intent = journal.record_intent

    def timed_intent(signal, legs, stages, timeout=2.0):  # when the intent was committed
        record_intent(signal, legs, stages, timeout)
        committed[signal.id] = time.monotonic_ns()

    journal.record_intent = timed_intent
    prepared_at: dict[str, int] = {}
    prepare_here = executor._prepare_here

    def timed_prepare(trade):  # when the submitting thread had both orders prepared
        early = prepare_here(trade)
        prepared_at[trade.signal.id] = time.monotonic_ns() if early else 0
        return early

    executor._prepare_here = timed_prepare

    def on_trade(trade) -> None:
        legs = (trade.buy, trade.sell)
        wires = [wire_clock.by_client.get(leg.client_id, 0) if wire_clock else leg.wire_ns
                 for leg in legs]
        trades.append({"recv": max(trade.signal.book_recv_ns), "signal": trade.signal.created_ns,
                       "submit": trade.submit_ns, "committed": committed.get(trade.signal.id, 0),
                       "prepared": prepared_at.get(trade.signal.id, 0),
                       "sent": max(leg.sent_ns for leg in legs),
                       "wires": wires, "status": all(leg.state.value == "filled" for leg in legs)})
        booked.set()

    booked = threading.Event()  # waited on, not polled: the bench keeps off the GIL meanwhile
    executor.add_listener(on_trade)
    journal.start()
    market_data.start()
    executor.start()
    try:
        deadline = time.monotonic() + 20
        while not all(board.get(v, MARKET).view.valid for v in Venue):
            if time.monotonic() > deadline:
                print("sim books never became valid", file=sys.stderr)
                return 1
            time.sleep(0.01)
        strategy.start()
        for i in range(args.trades):
            cheap = Venue.BITHUMB if i % 2 == 0 else Venue.UPBIT
            booked.clear()
            sim.dislocate(MARKET, cheap, bps=80, seconds=0.4)
            booked.wait(5)
            executor.wait_idle(5)
            time.sleep(0.65)  # past the cooldown and the dislocation: one signal per dislocation
        strategy.stop()
        # one order request as the lean path writes it (prepared, never written)
        probe = OrderRequest(Venue.UPBIT, MARKET, Side.BUY, OrderType.LIMIT, "bench-probe-0001",
                             price=Decimal("1000"), volume=Decimal("0.001"), tif=TimeInForce.IOC)
        prepared = UpbitClient.prepare_order(clients[Venue.UPBIT], probe)
        order_bytes = prepared._call._data
        prepared.close()
        wake = thread_wake_reference()
        bare_send = sendall_reference(order_bytes)
        rest = rest_reference(config.venues[Venue.UPBIT].rest_url)
        wired = [t for t in trades if all(t["wires"])]
        print(f"K-Arb signal-to-legs benchmark: {len(trades)} trades ({sum(t['status'] for t in trades)} "
              f"fully filled, {len(wired)} with both wire times), {len(config.markets)} markets, "
              f"path {args.path}, sim {'in its own process' if args.sim_process else 'in this process'}, "
              f"switch interval {sys.getswitchinterval() * 1e3:g} ms, load average "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        print(f"{'stage':<26}{'median us':>12}{'p99 us':>12}{'n':>7}")
        for name, values in (
            ("frame -> signal", [t["signal"] - t["recv"] for t in trades]),
            ("signal -> legs sent (old)", [t["sent"] - t["signal"] for t in trades]),
            ("signal -> both on wire", [max(t["wires"]) - t["signal"] for t in wired]),
            ("signal -> first on wire", [min(t["wires"]) - t["signal"] for t in wired]),
            ("submit -> both on wire", [max(t["wires"]) - t["submit"] for t in wired]),
            ("  submit -> both prepared", [t["prepared"] - t["submit"] for t in trades if t["prepared"]]),
            ("  prepared -> committed", [t["committed"] - t["prepared"] for t in trades if t["prepared"]]),
            ("  submit -> intent commit", [t["committed"] - t["submit"] for t in trades]),
            ("  commit -> legs sent", [t["sent"] - t["committed"] for t in trades]),
            ("  legs sent -> both wire", [max(t["wires"]) - t["sent"] for t in wired]),
            ("wire gap", [max(t["wires"]) - min(t["wires"]) for t in wired]),
            ("ref: thread wake", wake),
            (f"ref: bare sendall {len(order_bytes)} B", bare_send),
            ("ref: bare REST trip", rest),
        ):
            med, p99, n = percentiles(values)
            print(f"{name:<26}{med:>12.1f}{p99:>12.1f}{n:>7}")
        return 0 if wired else 1
    finally:
        strategy.stop()
        executor.stop(5)
        market_data.stop(3)
        journal.stop()
        for c in clients.values():
            c.close()
        sim.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=100, help="dislocations to trade (default 100)")
    parser.add_argument("--markets", type=int, default=11,
                        help="markets fed, the first N of config/sim.yaml (default 11)")
    parser.add_argument("--seed", type=int, default=11, help="sim seed (default 11)")
    parser.add_argument("--path", choices=("lean", "requests"), default="lean",
                        help="how orders are written (default lean; requests: as before the lean path)")
    parser.add_argument("--sim-process", action="store_true", help="run the sim as its own process")
    parser.add_argument("--switch-interval-ms", type=float, default=0.5, metavar="MS",
                        help="sys.setswitchinterval in ms (default 0.5, the engine's default)")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
