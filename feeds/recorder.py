"""Raw frames with their receive times to a gzip JSON-lines file, for replay.

One object per line: ``{"t": recv_time_ns, "venue": "upbit", "frame": "<text>"}`` where ``t``
is the feed thread's ``time.monotonic_ns()`` at receipt and ``frame`` the frame's UTF-8 text
(Upbit sends binary frames of UTF-8 JSON; they are stored as text). This is the format the
sim's replay source reads (karb/sim/replay.py).

Feed threads only append to a deque; the ``feed-recorder`` thread compresses and writes, so
no file I/O happens on a feed thread. A write that fails (disk full, file gone) ends the
recording: one ERROR line, ``error`` says why (the engine's snapshot carries it and the alerter
raises ``recorder_failed``), the queue is dropped and ``record`` drops every later frame, so
nothing piles up in memory. Trading does not depend on the recording and carries on.
"""
from __future__ import annotations

import gzip
import threading
from collections import deque
from pathlib import Path

import orjson
from loguru import logger


class FrameRecorder:
    """Write every recorded frame to ``path`` (created with its parent directory).

    ``record`` is called by any feed thread; ``stop`` flushes what is queued and closes.
    """

    def __init__(self, path: str | Path, flush_every_s: float = 0.2) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = gzip.open(self.path, "ab")
        self._queue: deque = deque()
        self._flush_every_s = flush_every_s
        self._stop = threading.Event()
        self.frames = 0
        self.error: str | None = None  # why recording stopped early; set once by the thread
        self._thread = threading.Thread(target=self._run, name="feed-recorder", daemon=True)
        self._thread.start()

    def record(self, recv_ns: int, venue: str, data: bytes | str) -> None:
        if self.error is None:
            self._queue.append((recv_ns, venue, data))

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Write what is queued, close the file. Return True if the thread ended in time."""
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("feed-recorder did not stop within {} s", timeout_s)
            return False
        return True

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._flush_every_s):
                self._drain()
            self._drain()
        except Exception as exc:  # noqa: BLE001 - any failure ends the recording the same way
            self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            try:
                self._file.close()
            except Exception as exc:  # noqa: BLE001 - a close on a full disk fails too
                self._fail(f"closing: {type(exc).__name__}: {exc}")

    def _fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason  # from here on record() drops frames
            logger.error("frame recording to {} stopped after {} frames: {}; dropping {} queued "
                         "frames, trading continues", self.path, self.frames, reason,
                         len(self._queue))
        self._queue.clear()

    def _drain(self) -> None:
        queue = self._queue
        lines = []
        while queue:
            recv_ns, venue, data = queue.popleft()
            text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
            lines.append(orjson.dumps({"t": recv_ns, "venue": venue, "frame": text}))
        if lines:
            self._file.write(b"\n".join(lines) + b"\n")
            self._file.flush()
            self.frames += len(lines)


def read_recording(path: str | Path):
    """Yield ``(recv_ns, venue, frame_text)`` from a recording, in file order."""
    with gzip.open(path, "rb") as file:
        for line in file:
            if line.strip():
                record = orjson.loads(line)
                yield record["t"], record["venue"], record["frame"]
