"""Raw frames with their receive times to a gzip JSON-lines file, for replay.

One object per line: ``{"t": recv_time_ns, "venue": "upbit", "frame": "<text>"}`` where ``t``
is the feed thread's ``time.monotonic_ns()`` at receipt and ``frame`` the frame's UTF-8 text
(Upbit sends binary frames of UTF-8 JSON; they are stored as text). This is the format the
sim's replay source reads (karb/sim/replay.py).

Reading (``read_recording``, ``read_recordings`` for a file or a directory of them): a bad file
raises ``RecordingError`` naming the file, the line and why (not gzip, corrupt gzip data, bad
JSON, not an object, a missing or mistyped key, an unknown venue). A file cut short (the
recorder was killed with -9, or the disk filled) has no gzip end marker: every complete line is
yielded first, then ``RecordingTruncated`` says after which line the file ends. Callers that
expect it (the newest hour of a recording that was killed) pass ``truncated_ok=True`` and get
the complete lines with one WARNING instead; a partial last line is never yielded.

Feed threads only append to a deque; the ``feed-recorder`` thread compresses and writes, so
no file I/O happens on a feed thread. A write that fails (disk full, file gone) ends the
recording: one ERROR line, ``error`` says why (the engine's snapshot carries it and the alerter
raises ``recorder_failed``), the queue is dropped and ``record`` drops every later frame, so
nothing piles up in memory. Trading does not depend on the recording and carries on.
"""
from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections import deque
from pathlib import Path
from typing import Iterator

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
        self.bytes = 0  # uncompressed JSON-lines bytes written
        self.by_venue: dict[str, int] = {}  # frames written per venue (swapped, never mutated)
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
        counts = dict(self.by_venue)
        while queue:
            recv_ns, venue, data = queue.popleft()
            text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
            lines.append(orjson.dumps({"t": recv_ns, "venue": venue, "frame": text}))
            counts[venue] = counts.get(venue, 0) + 1
        if lines:
            self._before_write()
            blob = b"\n".join(lines) + b"\n"
            self._file.write(blob)
            self._file.flush()
            self.frames += len(lines)
            self.bytes += len(blob)
            self.by_venue = counts

    def _before_write(self) -> None:
        """Hook run on the writer thread before each batch (``HourlyRecorder`` rotates here)."""


class HourlyRecorder(FrameRecorder):
    """A ``FrameRecorder`` writing ``DIR/karb-YYYYMMDD-HH.jsonl.gz``, a new file each UTC hour.

    The writer thread switches files before the first batch it writes in a new hour, so a file
    holds the frames written in its hour (a batch spans at most ``flush_every_s``). An existing
    file of the same hour is appended to (a new gzip member), as ``FrameRecorder`` does.
    """

    def __init__(self, directory: str | Path, flush_every_s: float = 0.2,
                 clock=time.time) -> None:
        self.directory = Path(directory)
        self._clock = clock
        self._hour = self._hour_now()
        super().__init__(self._hour_path(self._hour), flush_every_s)

    def _hour_now(self) -> str:
        return time.strftime("%Y%m%d-%H", time.gmtime(self._clock()))

    def _hour_path(self, hour: str) -> Path:
        return self.directory / f"karb-{hour}.jsonl.gz"

    def _before_write(self) -> None:
        hour = self._hour_now()
        if hour != self._hour:
            self._file.close()
            self._hour, self.path = hour, self._hour_path(hour)
            self._file = gzip.open(self.path, "ab")
            logger.info("recording now to {}", self.path)


VENUES = ("upbit", "bithumb")
_CHUNK = 1 << 16


class RecordingError(ValueError):
    """A recording cannot be read: ``path``, ``line`` (1-based; None for the whole file), ``why``."""

    def __init__(self, path: str | Path, line: int | None, why: str):
        self.path, self.line, self.why = str(path), line, why
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {why}")


class RecordingTruncated(RecordingError):
    """The file ends without a gzip end marker: every complete line before ``line`` was read."""


def read_recording(path: str | Path, truncated_ok: bool = False) -> Iterator[tuple[int, str, str]]:
    """Yield ``(recv_ns, venue, frame_text)`` from a recording, in file order."""
    line_no = 0
    try:
        for line_no, line in enumerate(_lines(path), 1):
            if line.strip():
                yield _record(path, line_no, line)
    except _Cut:
        why = (f"truncated: the file ends mid-stream after line {line_no} (no gzip end marker; "
               "was the recorder killed?)")
        if not truncated_ok:
            raise RecordingTruncated(path, line_no + 1, why) from None
        logger.warning("recording {}: {}; read the {} complete lines", path, why, line_no)


def recording_files(path: str | Path) -> list[Path]:
    """``path`` itself, or the ``*.jsonl.gz`` files of a directory in name order (time order for
    the hourly ``karb-YYYYMMDD-HH.jsonl.gz`` files ``karb record`` writes)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith(".jsonl.gz") and p.is_file())
        if not files:
            raise RecordingError(path, None, "no *.jsonl.gz files in this directory")
        return files
    if not path.exists():
        raise RecordingError(path, None, "no such file or directory")
    return [path]


def read_recordings(path: str | Path, truncated_ok: bool = False) -> Iterator[tuple[int, str, str]]:
    """Every record of a recording file, or of a directory's files in name order."""
    for file in recording_files(path):
        yield from read_recording(file, truncated_ok)


class _Cut(Exception):
    """The gzip stream ended before its end marker."""


def _lines(path: str | Path) -> Iterator[bytes]:
    """Complete lines of a (multi-member) gzip file; raises ``_Cut`` at a truncation."""
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise RecordingError(path, None, f"cannot open ({exc.strerror})") from None
    with handle:
        head = handle.read(2)
        if not head:
            return  # an empty file: a recording that never got a frame
        if head != b"\x1f\x8b":
            raise RecordingError(path, None, "not a gzip file (no gzip magic bytes)")
        handle.seek(0)
        inflater, fed, lines = zlib.decompressobj(16 + zlib.MAX_WBITS), False, _Lines()
        while chunk := handle.read(_CHUNK):
            while chunk:
                before = inflater.copy()
                try:
                    data = inflater.decompress(chunk)
                except zlib.error as exc:
                    yield from lines.add(_salvage(before, chunk))
                    raise RecordingError(path, lines.count + 1, f"corrupt gzip data ({exc})") from None
                fed, chunk = True, b""
                if inflater.eof:  # end of one gzip member; ``FrameRecorder`` appends members
                    chunk = inflater.unused_data
                    inflater, fed = zlib.decompressobj(16 + zlib.MAX_WBITS), False
                yield from lines.add(data)
        if fed and not inflater.eof:
            raise _Cut()
        if lines.pending:
            yield lines.pending  # a last line without its newline, in a complete file


class _Lines:
    """Splits decompressed bytes into complete lines, keeping the unfinished one."""

    def __init__(self) -> None:
        self.pending, self.count = b"", 0

    def add(self, data: bytes) -> list[bytes]:
        if not data:
            return []
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        self.count += len(lines)
        return lines


def _salvage(inflater, chunk: bytes) -> bytes:
    """What ``chunk`` decompresses to before its first bad byte (the error path only)."""
    out = []
    for i in range(len(chunk)):
        try:
            out.append(inflater.decompress(chunk[i:i + 1]))
        except zlib.error:
            break
        if inflater.eof:
            break
    return b"".join(out)


def _record(path: str | Path, line_no: int, line: bytes) -> tuple[int, str, str]:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RecordingError(path, line_no, f"bad JSON ({exc})") from None
    if not isinstance(record, dict):
        raise RecordingError(path, line_no, f"expected an object, was {type(record).__name__}")
    for key, kind in (("t", int), ("venue", str), ("frame", str)):
        if key not in record:
            raise RecordingError(path, line_no, f"missing key {key!r}")
        if not isinstance(record[key], kind) or isinstance(record[key], bool):
            raise RecordingError(path, line_no, f"key {key!r} must be {kind.__name__}, was {record[key]!r:.40}")
    if record["venue"] not in VENUES:
        raise RecordingError(path, line_no, f"unknown venue {record['venue']!r} (upbit or bithumb)")
    return record["t"], record["venue"], record["frame"]
