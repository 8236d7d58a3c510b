"""One WebSocket connection on its own named thread: connect, subscribe, keepalive, watchdog,
reconnect with exponential backoff and jitter.

The thread owns the socket (websocket-client, synchronous) and the venue protocol object; the
only cross-thread traffic is ``stop()`` and reading counters. Keepalive is a WebSocket ping
frame every ``ping_interval_s`` (Upbit and Bithumb drop a connection idle for ~120 s), plus the
protocol's ``ping_text`` if it has one (a private stream's ``PING``, answered with data). The
watchdog counts data frames only: a server that answers pings but sends no data is stalled.
A frame the protocol cannot use is counted, logged (one warning with a sample per
``warn_every_s``) and dropped; nothing a frame contains can end the thread.

websocket-client opens the connection (handshake, TLS, proxy) and sends; frames are read by
``feeds.wsframe.FrameReader`` on its socket, at a tenth of websocket-client's cost per frame.
"""
from __future__ import annotations

import random
import threading
import time

import websocket
from loguru import logger

from feeds.protocol import BookProtocol, FrameError, StreamRejected
from feeds.wsframe import FrameReader

_CLOSE = websocket.ABNF.OPCODE_CLOSE
_POLL_EVERY_NS = 5_000_000  # protocol.poll at most this often: it may loop over every market
_SAMPLE_CHARS = 200


class FeedConnection:
    """A feed thread named ``feed-<venue>`` serving one protocol on one URL.

    Parameters
    ----------
    url : ``wss://...`` (or ``ws://127.0.0.1:...`` against the sim)
    protocol : the venue protocol (``feeds.protocol.BookProtocol``)
    watchdog_s : reconnect after this long without a data frame
    ping_interval_s : send a WebSocket ping this often
    backoff_initial_s, backoff_max_s : reconnect delay doubles from initial up to max; each wait
        is drawn uniformly from [delay/2, delay]; a connection that delivered data resets it
    connect_timeout_s : TCP + TLS + upgrade handshake limit
    recorder : optional ``FrameRecorder``; gets every data frame with its receive time
    headers : optional callable returning extra upgrade-request headers, called on every
        connect (a private stream's fresh ``Authorization``); never logged
    """

    def __init__(self, url: str, protocol: BookProtocol, *, watchdog_s: float = 60.0,
                 ping_interval_s: float = 30.0, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0, connect_timeout_s: float = 5.0,
                 recorder=None, warn_every_s: float = 10.0, name: str | None = None,
                 rng: random.Random | None = None, headers=None) -> None:
        self.url = url
        self.protocol = protocol
        self.venue = protocol.venue
        self.name = name or f"feed-{protocol.venue}"
        self._watchdog_ns = int(watchdog_s * 1e9)
        self._ping_ns = int(ping_interval_s * 1e9)
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._connect_timeout_s = connect_timeout_s
        self._poll_s = min(0.1, watchdog_s / 4, ping_interval_s / 2)
        self._recorder = recorder
        self._headers = headers
        self._warn_every_ns = int(warn_every_s * 1e9)
        self._rng = rng or random.Random()
        self._log = logger.bind(venue=self.venue)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ws: websocket.WebSocket | None = None
        # counters: written by the feed thread only, read by anyone
        self.state = "stopped"
        self.messages = 0
        self.bytes = 0
        self.reconnects = 0
        self.decode_errors = 0
        self.last_message_ns = 0
        self._started_ns = 0
        self.msgs_per_s = 0.0
        self._rate_start_ns = 0
        self._rate_count = 0
        self._last_warn_ns = 0
        self._suppressed = 0

    # --- control (any thread) -----------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        self._stop.clear()
        self._started_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to end, without waiting (to stop several feeds at once)."""
        self._stop.set()
        ws = self._ws
        if ws is not None:
            ws.abort()  # wakes a recv blocked in the feed thread

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the thread and wait up to ``timeout_s``. Return True if it ended."""
        self.request_stop()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        if thread.is_alive():
            self._log.warning("{} did not stop within {} s", self.name, timeout_s)
            return False
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self, now_ns: int | None = None) -> dict:
        """Counters for monitoring. Safe from any thread (plain reads of ints).

        ``down_for_s`` is the time since the feed last delivered a data frame (or since it was
        started, if it never did): it grows while the feed is disconnected, reconnecting, or
        connected but silent, and is 0 before ``start``.
        """
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        last = self.last_message_ns
        up = max(last, self._started_ns)
        return {
            "state": self.state,
            "messages": self.messages,
            "bytes": self.bytes,
            "reconnects": self.reconnects,
            "decode_errors": self.decode_errors,
            "last_message_age_s": (now_ns - last) / 1e9 if last else None,
            "msgs_per_s": self.msgs_per_s,
            "down_for_s": max(0.0, (now_ns - up) / 1e9) if up else 0.0,
        }

    # --- the feed thread ----------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                self.state = "connecting"
                delivered = False
                reason = "stopped"
                ws, reason = self._connect()
                if ws is not None:
                    self._ws = ws
                    try:
                        delivered, reason = self._serve(ws)
                    except (websocket.WebSocketException, OSError) as exc:
                        reason = f"connection lost: {exc or type(exc).__name__}"
                    finally:
                        self._ws = None
                        self.msgs_per_s = 0.0
                        ws.shutdown()
                        self.protocol.on_disconnected(reason)
                if self._stop.is_set():
                    break
                attempt = 1 if delivered else attempt + 1
                delay = min(self._backoff[1], self._backoff[0] * 2 ** (attempt - 1))
                delay = self._rng.uniform(delay / 2, delay)
                self.state = "backoff"
                self.reconnects += 1
                self._log.warning("{}: {}; reconnecting in {:.2f} s", self.name, reason, delay)
                self._stop.wait(delay)
        finally:
            self.state = "stopped"
            self.protocol.close()

    def _connect(self) -> tuple[websocket.WebSocket | None, str]:
        """Open the socket (upgrade headers built fresh). Return (socket or None, why not)."""
        try:
            extra = self._headers() if self._headers is not None else None
        except Exception as exc:  # e.g. no keys to sign with: a failed connect, retried
            return None, f"cannot build the request headers: {type(exc).__name__}"
        try:
            return websocket.create_connection(self.url, timeout=self._connect_timeout_s,
                                               skip_utf8_validation=True, header=extra), ""
        except (websocket.WebSocketException, OSError) as exc:
            return None, f"connect failed: {exc}"

    def _serve(self, ws: websocket.WebSocket) -> tuple[bool, str]:
        """Subscribe and read frames until stop, close or watchdog. Return (delivered, why)."""
        protocol = self.protocol
        for message in protocol.subscribe_messages():
            ws.send(message)
        ws.settimeout(self._poll_s)
        read = FrameReader(ws).read
        now = time.monotonic_ns()
        protocol.on_connected(now)
        self._rate_start_ns, self._rate_count = now, 0
        self.state = "connected"
        delivered = False
        last_data = next_ping = next_poll = now
        next_ping += self._ping_ns
        recorder = self._recorder
        handle = protocol.handle
        ping_text = getattr(protocol, "ping_text", None)
        while not self._stop.is_set():
            message = read()
            now = time.monotonic_ns()
            if now - self._rate_start_ns >= 1_000_000_000:
                self._roll_rate(now)
            if message is not None:
                opcode, data = message
                if opcode == _CLOSE:
                    return delivered, "closed by venue"
                delivered = True
                last_data = now
                self._count(data, now)
                if recorder is not None:
                    recorder.record(now, self.venue, data)
                try:
                    handle(data, now)
                except StreamRejected as exc:  # e.g. bad credentials: back off, do not hammer
                    self._bad_frame(data, exc.reason, exc.markets, now)
                    return False, f"rejected by venue: {exc.reason}"
                except FrameError as exc:
                    self._bad_frame(data, exc.reason, exc.markets, now)
                except Exception as exc:  # a decoder bug must not end the feed: count, resync
                    self._bad_frame(data, f"{type(exc).__name__}: {exc}", None, now)
            elif now - last_data > self._watchdog_ns:
                return delivered, f"watchdog: no data for {(now - last_data) / 1e9:.1f} s"
            if now >= next_ping:
                ws.ping()
                if ping_text:
                    ws.send(ping_text)  # answered with data: feeds the watchdog of a quiet stream
                next_ping = now + self._ping_ns
            if now >= next_poll:  # not per frame: at 150 markets a legacy poll costs ~12 us
                protocol.poll(now)
                next_poll = now + _POLL_EVERY_NS
        return delivered, "stopped"

    def _count(self, data: bytes, now: int) -> None:
        self.messages += 1
        self.bytes += len(data)
        self.last_message_ns = now
        self._rate_count += 1

    def _roll_rate(self, now: int) -> None:
        # messages per second over the last window of >= 1 s
        self.msgs_per_s = self._rate_count * 1e9 / (now - self._rate_start_ns)
        self._rate_start_ns = now
        self._rate_count = 0

    def _bad_frame(self, data: bytes, reason: str, markets, now: int) -> None:
        self.decode_errors += 1
        self.protocol.on_bad_frame(markets)
        if now - self._last_warn_ns < self._warn_every_ns:
            self._suppressed += 1
            return
        sample = bytes(data[:_SAMPLE_CHARS]).decode("utf-8", "replace")
        self._log.warning("{}: dropped bad frame ({}); {} more since the last warning; sample: {}",
                          self.name, reason, self._suppressed, sample)
        self._last_warn_ns = now
        self._suppressed = 0
