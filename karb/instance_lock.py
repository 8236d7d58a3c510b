"""One engine per journal and per kill-file directory: an exclusive ``flock`` on two lock files.

``<journal>.lock`` beside the journal and ``karb.lock`` in the kill file's directory. Each holds
the pid of the engine holding it. A second engine on either is refused at start with one line
naming the lock and that pid (exit 2). ``holder()`` tells ``karb kill`` / ``karb resume``
whether an engine runs: it probes with a shared lock for an instant, so ``acquire`` retries
for up to ``wait_s`` rather than mistaking a probe for an engine. The kernel drops a lock when
its process dies, kill -9 included, so a stale file never blocks a restart.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from karb.startup import StartupError

EXIT_LOCKED = 2


def lock_paths(config) -> list[Path]:
    """The two lock files of ``config``: beside the journal and in the kill file's directory."""
    paths = [Path(f"{config.journal.path}.lock"), Path(config.risk.kill_switch_file).parent / "karb.lock"]
    return list(dict.fromkeys(p.resolve() for p in paths))


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
    except OSError:
        return "unknown"


class InstanceLock:
    def __init__(self, paths: list[Path], wait_s: float = 1.0):
        self.paths = paths
        self.wait_s = wait_s
        self._fds: list[int] = []

    def acquire(self) -> None:
        """Take every lock or none; ``StartupError`` (exit 2) naming the lock and its pid."""
        try:
            for path in self.paths:
                self._fds.append(self._take(path))
        except BaseException:
            self.release()
            raise

    def _take(self, path: Path) -> int:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StartupError(f"cannot open lock file {path}: {exc.strerror}", EXIT_LOCKED) from None
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid = _read_pid(fd)
                    os.close(fd)
                    raise StartupError(f"another engine is running: {path} is locked by pid {pid}",
                                       EXIT_LOCKED) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def release(self, _timeout: float = 0.0) -> None:
        while self._fds:
            fd = self._fds.pop()
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def holder(paths: list[Path]) -> str | None:
    """The pid of the engine holding any of ``paths``, or None when no engine runs."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            return _read_pid(fd)
        finally:
            os.close(fd)
    return None
