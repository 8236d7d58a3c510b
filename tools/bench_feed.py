"""Per-message cost of the market-data hot path, beside the JSON-decode floor of the same run.

    python tools/bench_feed.py [--messages 20000] [--seed 7] [--json]

Streams (seeded, generated here; sizes and prices shaped like KRW-BTC):

* ``upbit15`` / ``upbit30``: Upbit DEFAULT orderbook snapshots of 15 / 30 rows;
* ``bithumb_v2``: Bithumb 2.0 snapshots (Upbit format, 30 rows);
* ``bithumb_legacy``: pubwss ``orderbookdepth`` deltas of 1-5 levels on a synced book.

Per stream, each frame goes through the real path, ``protocol.handle(frame, recv_ns)``: the
decode, validation, the book's lock, the published ``BookView`` and the board's change counter.
Every pass applies every frame: a snapshot book is reset before each pass, so no frame of a
later pass is dropped as older than the book (before issue 12 the later passes, the quickest
and so the ones kept, timed that cheaper drop path).
Each message is timed alone (``perf_counter_ns``, timer overhead included, as in
shared/bench/BASELINE.md); msgs/s comes from a separate untimed pass over the same frames. The
floor is ``orjson.loads`` of the same frames, timed the same way in the same run.

Also: one executable-spread evaluation (both directions, walking levels with fees:
``karb.spread.walk_spread``, the walk ``karb.strategy`` runs) on two 30-level books 40 bp
apart, and the
end-to-end latency from a loopback WebSocket server's send to the new book version seen by a
reader blocked in ``BookBoard.wait_for_change`` (paced, one frame per ms).

And ``frame_read``: the cost per message of taking frames off a loopback socket, for the
``upbit15`` and ``bithumb_legacy`` frames: websocket-client's ``recv_data`` (what the feed used
before issue 12), ``feeds.wsframe.FrameReader`` (what it uses now), and the same run's
reference, raw ``recv_into`` of the same byte stream. A loopback server thread answers the
upgrade and writes the whole stream at once; each reader's time is its thread's CPU time to
take all frames (``thread_time``: what other processes on a loaded machine do is not counted,
nor is the sender's work), divided by their number.

And ``feed_loop``: Upbit 15-row snapshots spread over 150 markets through a whole
``FeedConnection`` (its thread reading the loopback stream), against ``protocol.handle`` alone
on the same frames in the same run; the difference is the feed thread's cost per message
beyond decode and apply. Both are the CPU time of the thread doing the work (the feed thread's
read through ``pthread_getcpuclockid``), so a loaded machine's waits are not counted.
"""
from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import json
import random
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
import websocket  # noqa: E402
from websockets.sync.server import serve  # noqa: E402

from feeds import BithumbLegacyBookProtocol, FeedConnection, UpbitBookProtocol  # noqa: E402
from feeds.wsframe import FrameReader  # noqa: E402
from karb.book import BookBoard  # noqa: E402
from karb.model import Venue  # noqa: E402
from karb.spread import walk_spread  # noqa: E402

MARKET = "KRW-BTC"
TICK = 1000.0
MID = 140_000_000.0


def _size(rng: random.Random) -> float:
    return round(rng.lognormvariate(-3.0, 1.2), 8)


def snapshot_frames(rng: random.Random, n: int, rows: int, ts_start: int = 1_764_000_000_000,
                    markets: tuple[str, ...] = (MARKET,)) -> list[bytes]:
    """Upbit-format DEFAULT snapshots around a random-walk mid, for ``markets`` in turn."""
    frames = []
    mid = MID
    for i in range(n):
        mid += TICK * rng.choice((-1, 0, 0, 1))
        units = [{"ask_price": mid + TICK * k, "bid_price": mid - TICK * (k + 1),
                  "ask_size": _size(rng), "bid_size": _size(rng)} for k in range(rows)]
        frames.append(orjson.dumps({
            "type": "orderbook", "code": markets[i % len(markets)], "timestamp": ts_start + i * 7,
            "total_ask_size": round(sum(u["ask_size"] for u in units), 8),
            "total_bid_size": round(sum(u["bid_size"] for u in units), 8),
            "orderbook_units": units, "stream_type": "REALTIME", "level": 0}))
    return frames


def legacy_stream(rng: random.Random, n: int, ts_start_us: int = 1_764_000_000_000_000):
    """Initial 30-level book plus ``n`` delta frames of 1-5 levels; also the final reference."""
    bids = {MID - TICK * (k + 1): _size(rng) for k in range(30)}
    asks = {MID + TICK * k: _size(rng) for k in range(30)}
    initial = (sorted(bids.items(), reverse=True), sorted(asks.items()), ts_start_us // 1000)
    frames = []
    for i in range(n):
        items = []
        for _ in range(rng.randint(1, 5)):
            side = rng.choice(("bid", "ask"))
            k = rng.randint(0, 40)
            price = MID - TICK * (k + 1) if side == "bid" else MID + TICK * k
            quantity = 0.0 if rng.random() < 0.3 else _size(rng)
            book = bids if side == "bid" else asks
            if quantity:
                book[price] = quantity
            else:
                book.pop(price, None)
            items.append({"symbol": "BTC_KRW", "orderType": side, "price": f"{price:.0f}",
                          "quantity": f"{quantity:.8f}".rstrip("0").rstrip(".") or "0",
                          "total": "1" if quantity else "0"})
        frames.append(orjson.dumps({"type": "orderbookdepth", "content": {
            "list": items, "datetime": str(ts_start_us + 1000 + i * 500)}}))
    reference = (sorted(bids.items(), reverse=True), sorted(asks.items()))
    return initial, frames, reference


def timed(fn, frames: list[bytes]) -> list[int]:
    gc.collect()
    clock = time.perf_counter_ns
    out = []
    append = out.append
    for frame in frames:
        t0 = clock()
        fn(frame, t0)
        append(clock() - t0)
    return out


def throughput(fn, frames: list[bytes]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for frame in frames:
        fn(frame, 0)
    return len(frames) / (time.perf_counter() - t0)


def summary(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    return statistics.median(ordered) / 1000, ordered[int(len(ordered) * 0.99)] / 1000


def floor_fn(frame, _):
    orjson.loads(frame)


def bench_snapshots(frames: list[bytes], venue: Venue, board: BookBoard, rounds: int) -> dict:
    proto = UpbitBookProtocol(board.sink(venue), [MARKET], 30, "DEFAULT", venue=venue.value)
    book = board.get(venue, MARKET)
    start = []

    def fresh():  # every pass applies every frame: none is older than the book
        book.invalidate("next bench pass")
        start.append(book.view.version)

    result = measure(proto.handle, frames, rounds, before_pass=fresh)
    if not book.view.valid or book.view.version - start[-1] != len(frames):
        raise SystemExit(f"{venue.value}: the last pass did not apply every frame: the bench is broken")
    return result


def measure(handle, frames: list[bytes], rounds: int, after_first=None, before_pass=None) -> dict:
    """Alternate floor and path passes ``rounds`` times; keep each one's quietest round (the
    lowest median) so a noisy neighbour on the machine hurts neither side alone.
    ``before_pass`` runs before every path pass (untimed)."""
    floors, costs = [], []
    before_pass = before_pass or (lambda: None)
    for i in range(rounds):
        floors.append(summary(timed(floor_fn, frames)))
        before_pass()
        costs.append(summary(timed(handle, frames)))
        if i == 0 and after_first is not None:
            after_first()
    floor, cost = min(floors), min(costs)
    before_pass()
    msgs_per_s = throughput(handle, frames)
    return {"median_us": round(cost[0], 2), "p99_us": round(cost[1], 2),
            "msgs_per_s": round(msgs_per_s),
            "floor_median_us": round(floor[0], 2), "floor_p99_us": round(floor[1], 2),
            "floor_msgs_per_s": round(throughput(floor_fn, frames)),
            "x_floor": round(cost[0] / floor[0], 2),
            "bytes_per_msg": round(sum(map(len, frames)) / len(frames))}


def bench_legacy(rng: random.Random, n: int, board: BookBoard, rounds: int) -> dict:
    initial, frames, reference = legacy_stream(rng, n)
    proto = BithumbLegacyBookProtocol(board.sink(Venue.BITHUMB), [MARKET], lambda m: initial,
                                      snapshot_check_s=3600.0)
    book = board.get(Venue.BITHUMB, MARKET)
    proto.on_connected(time.monotonic_ns())
    proto.handle(b'{"status":"0000","resmsg":"Filter Registered Successfully"}', 0)
    deadline = time.monotonic() + 5.0
    while not book.view.valid and time.monotonic() < deadline:
        proto.poll(time.monotonic_ns())
        time.sleep(0.001)

    def check():  # after the first pass the book must equal the generator's own reference
        if book.levels() != (reference[0], reference[1]) or not book.view.valid:
            raise SystemExit("bithumb_legacy: final book differs from the reference: the bench is broken")

    # later passes replay the same absolute quantities onto the final book: same work per frame
    result = measure(proto.handle, frames, rounds, after_first=check)
    proto.close()
    return result


def bench_spread(qty: float, n: int = 20000) -> dict:
    """One evaluation = both directions of ``walk_spread`` on 30-level books where Bithumb
    trades 40 bp above Upbit, so buying Upbit / selling Bithumb walks levels up to ``qty``."""
    rng = random.Random(qty)
    board = BookBoard([MARKET])
    for venue, shift in ((Venue.UPBIT, 1.0), (Venue.BITHUMB, 1.004)):
        frame = orjson.loads(snapshot_frames(rng, 1, 30)[0])
        units = frame["orderbook_units"]
        board.get(venue, MARKET).apply_snapshot(
            [(round(u["bid_price"] * shift, -3), u["bid_size"]) for u in units],
            [(round(u["ask_price"] * shift, -3), u["ask_size"]) for u in units], 1, 1)
    up = board.get(Venue.UPBIT, MARKET)
    bt = board.get(Venue.BITHUMB, MARKET)
    fees = (0.0005, 0.0004)
    walk = walk_spread(up.view.asks, bt.view.bids, fees[0], fees[1], 0.0, qty, 1e18)

    def evaluate(_frame, _t):
        a, b = up.view, bt.view
        walk_spread(a.asks, b.bids, fees[0], fees[1], 0.0, qty, 1e18)
        walk_spread(b.asks, a.bids, fees[1], fees[0], 0.0, qty, 1e18)

    dummy = [b""] * n
    median, p99 = summary(timed(evaluate, dummy))
    return {"median_us": round(median, 2), "p99_us": round(p99, 2),
            "msgs_per_s": round(throughput(evaluate, dummy)), "qty_btc": qty,
            "walked_btc": round(walk.volume, 4) if walk else 0.0}


def bench_end_to_end(frames: list[bytes], pace_s: float = 0.001) -> dict:
    """Loopback WebSocket send -> FeedConnection -> book -> reader woken by wait_for_change."""
    board = BookBoard([MARKET])
    book = board.get(Venue.UPBIT, MARKET)
    sent_ns: dict[int, int] = {}
    latencies: list[int] = []
    subscribed = threading.Event()
    done = threading.Event()

    def handler(connection):
        connection.recv()
        subscribed.set()
        for frame in frames:
            ts = orjson.loads(frame)["timestamp"]
            sent_ns[ts] = time.monotonic_ns()
            connection.send(frame)
            time.sleep(pace_s)  # pacing the sender, as a venue does
        done.wait(10.0)

    server = serve(handler, "127.0.0.1", 0, compression=None)
    server_thread = threading.Thread(target=server.serve_forever, name="bench-ws-server", daemon=True)
    server_thread.start()
    url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/websocket/v1"
    feed = FeedConnection(url, UpbitBookProtocol(board.sink(Venue.UPBIT), [MARKET], 15))
    last_ts = orjson.loads(frames[-1])["timestamp"]

    def reader():
        seq = board.seq
        while not done.is_set():
            seq = board.wait_for_change(seq, 0.5)
            now = time.monotonic_ns()
            view = book.view
            sent = sent_ns.get(view.exch_ts_ms)
            if sent is not None and view.valid:
                latencies.append(now - sent)
                if view.exch_ts_ms == last_ts:
                    done.set()

    reader_thread = threading.Thread(target=reader, name="bench-reader", daemon=True)
    reader_thread.start()
    feed.start()
    done.wait(len(frames) * pace_s * 20 + 10)
    done.set()
    feed.stop(5.0)
    reader_thread.join(5.0)
    server.shutdown()
    server_thread.join(5.0)
    median, p99 = summary(latencies)
    return {"median_us": round(median, 1), "p99_us": round(p99, 1), "seen": len(latencies),
            "sent": len(frames), "pace_ms": pace_s * 1000}


def _ws_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One final, unmasked server frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


class _StreamServer:
    """Loopback: accepts one connection at a time, answers the WebSocket upgrade, then writes
    ``stream`` in one ``sendall`` and waits for the client to hang up."""

    def __init__(self, stream: bytes) -> None:
        self.stream = stream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="bench-stream-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                           if line.lower().startswith(b"sec-websocket-key:"))
                accept = base64.b64encode(hashlib.sha1(
                    key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                conn.sendall(self.stream)
                try:
                    while conn.recv(65536):
                        pass
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()


def bench_frame_read(frames: list[bytes], rounds: int) -> dict:
    """µs per message to take ``frames`` off a loopback socket, three ways (module docstring)."""
    stream = b"".join(map(_ws_frame, frames))
    server = _StreamServer(stream)
    url = f"ws://127.0.0.1:{server.port}/websocket/v1"
    n = len(frames)

    def raw() -> float:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        buf = memoryview(bytearray(1 << 18))
        left = len(stream)
        gc.collect()
        t0 = time.thread_time_ns()
        while left:
            left -= sock.recv_into(buf)
        elapsed = time.thread_time_ns() - t0
        sock.close()
        return elapsed

    def through(make_read) -> float:
        ws = websocket.create_connection(url, timeout=5.0, skip_utf8_validation=True)
        read = make_read(ws)
        gc.collect()
        t0 = time.thread_time_ns()
        for _ in range(n):
            read()
        elapsed = time.thread_time_ns() - t0
        ws.close()
        return elapsed

    def check(make_read) -> None:  # both readers must hand back the very frames sent
        ws = websocket.create_connection(url, timeout=5.0, skip_utf8_validation=True)
        read = make_read(ws)
        got = [read()[1] for _ in range(n)]
        ws.close()
        if got != frames:
            raise SystemExit("frame_read: a reader returned other bytes than were sent: the bench is broken")

    readers = {"websocket_client": lambda ws: ws.recv_data, "frame_reader": lambda ws: FrameReader(ws).read}
    for make_read in readers.values():
        check(make_read)
    best = {"raw_recv": [], **{name: [] for name in readers}}
    for _ in range(rounds):
        best["raw_recv"].append(raw())
        for name, make_read in readers.items():
            best[name].append(through(make_read))
    server.close()
    result = {name: round(min(times) / n / 1000, 2) for name, times in best.items()}
    result["bytes_per_msg"] = round(len(stream) / n)
    return result


def bench_feed_loop(frames: list[bytes], markets: list[str], rounds: int) -> dict:
    """µs per message through a whole ``FeedConnection`` (frame read, loop, counters, decode,
    book, wake) against ``protocol.handle`` alone on the same frames, in the same run: the
    difference is what the feed thread costs beyond decode and apply."""
    stream = b"".join(map(_ws_frame, frames))
    server = _StreamServer(stream)
    url = f"ws://127.0.0.1:{server.port}/websocket/v1"
    n = len(frames)
    direct, looped = [], []
    for _ in range(rounds):
        board = BookBoard(markets)
        proto = UpbitBookProtocol(board.sink(Venue.UPBIT), markets, 15)
        gc.collect()
        t0 = time.thread_time_ns()
        for frame in frames:
            proto.handle(frame, 0)
        direct.append(time.thread_time_ns() - t0)
        board = BookBoard(markets)
        feed = FeedConnection(url, UpbitBookProtocol(board.sink(Venue.UPBIT), markets, 15),
                              watchdog_s=30.0)
        gc.collect()
        feed.start()
        clock = time.pthread_getcpuclockid(feed._thread.ident)
        deadline = time.monotonic() + 60.0
        while feed.messages < n and time.monotonic() < deadline:
            time.sleep(0.002)
        looped.append(time.clock_gettime_ns(clock))  # the feed thread's CPU time since it began
        applied = feed.messages == n and not feed.decode_errors and all(
            board.get(Venue.UPBIT, m).view.valid for m in markets)
        feed.stop(5.0)  # (the disconnect invalidates the books)
        if not applied:
            raise SystemExit("feed_loop: not every frame was applied: the bench is broken")
    server.close()
    per_direct, per_loop = min(direct) / n / 1000, min(looped) / n / 1000
    return {"markets": len(markets), "handle_us": round(per_direct, 2),
            "feed_loop_us": round(per_loop, 2), "outside_handle_us": round(per_loop - per_direct, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000, help="frames per stream")
    parser.add_argument("--e2e-messages", type=int, default=2000, help="frames for the end-to-end run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3, help="alternating floor/path passes per stream")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    from loguru import logger

    logger.remove()  # a benchmark prints numbers only
    rng = random.Random(args.seed)
    board = BookBoard([MARKET])
    rounds = args.rounds
    results = {
        "upbit15": bench_snapshots(snapshot_frames(rng, args.messages, 15), Venue.UPBIT, board, rounds),
        "upbit30": bench_snapshots(snapshot_frames(rng, args.messages, 30), Venue.UPBIT, board, rounds),
        "bithumb_v2": bench_snapshots(snapshot_frames(rng, args.messages, 30), Venue.BITHUMB, board,
                                      rounds),
        "bithumb_legacy": bench_legacy(rng, args.messages, BookBoard([MARKET]), rounds),
    }
    results["spread_0.1btc"] = bench_spread(0.1)
    results["spread_1btc"] = bench_spread(1.0)
    results["e2e_upbit15"] = bench_end_to_end(snapshot_frames(rng, args.e2e_messages, 15))
    results["frame_read_upbit15"] = bench_frame_read(snapshot_frames(rng, args.messages, 15), rounds)
    results["frame_read_bithumb_legacy"] = bench_frame_read(legacy_stream(rng, args.messages)[1],
                                                            rounds)
    markets = [f"KRW-C{i:03d}" for i in range(150)]
    results["feed_loop_upbit15_150"] = bench_feed_loop(
        snapshot_frames(rng, args.messages, 15, markets=tuple(markets)), markets, rounds)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{'stream':<16}{'median us':>10}{'p99 us':>10}{'msgs/s':>10}"
          f"{'floor med':>11}{'floor p99':>11}{'floor/s':>10}{'x floor':>9}{'bytes':>7}")
    for name, r in results.items():
        if "floor_median_us" in r:
            print(f"{name:<16}{r['median_us']:>10}{r['p99_us']:>10}{r['msgs_per_s']:>10}"
                  f"{r['floor_median_us']:>11}{r['floor_p99_us']:>11}{r['floor_msgs_per_s']:>10}"
                  f"{r['x_floor']:>9}{r['bytes_per_msg']:>7}")
    for name, r in results.items():
        if name.startswith("spread"):
            print(f"{name:<16}{r['median_us']:>10}{r['p99_us']:>10}{r['msgs_per_s']:>10}"
                  f"   (both directions, walking levels, fees; {r['walked_btc']} BTC walked)")
    e2e = results["e2e_upbit15"]
    print(f"{'e2e_upbit15':<16}{e2e['median_us']:>10}{e2e['p99_us']:>10}"
          f"   (ws send -> reader sees the new version; {e2e['seen']}/{e2e['sent']} versions seen, "
          f"paced {e2e['pace_ms']} ms)")
    print(f"{'frame read':<26}{'websocket-client':>17}{'FrameReader':>13}{'raw recv_into':>15}"
          f"{'bytes':>7}   (us per message, loopback)")
    for name, r in results.items():
        if name.startswith("frame_read_"):
            print(f"{name[len('frame_read_'):]:<26}{r['websocket_client']:>17}{r['frame_reader']:>13}"
                  f"{r['raw_recv']:>15}{r['bytes_per_msg']:>7}")
    loop = results["feed_loop_upbit15_150"]
    print(f"feed loop, upbit15 over {loop['markets']} markets: {loop['feed_loop_us']} us per message "
          f"through FeedConnection, {loop['handle_us']} us in protocol.handle alone (same run): "
          f"{loop['outside_handle_us']} us outside decode and apply")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
