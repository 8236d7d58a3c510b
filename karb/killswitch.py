"""Kill switch: a file, a POSIX signal or a call stops new trading; the process keeps running.

The file is the single source of truth: ``karb kill`` creates it, ``karb kill --clear`` removes
it, a ``SIGUSR1`` creates it, and ``engage()`` creates it. The ``kill-switch`` thread polls for
it (and wakes at once on the signal); listeners run on that thread when the switch engages
(the executor cancels open orders there) or clears. Strategy and executor read ``engaged``, a
plain attribute, without a lock.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Callable

from loguru import logger

from karb.threads import stop_thread

Listener = Callable[[bool, str], None]


class KillSwitch:
    def __init__(self, path: str | Path, poll_s: float = 0.2):
        self.path = Path(path)
        self.poll_s = poll_s
        self.engaged = False
        self.reason = ""
        self._sticky = False  # engaged but the file could not be written: only clear() clears
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._signal_reason = ""
        self._thread: threading.Thread | None = None

    def add_listener(self, listener: Listener) -> None:
        """``listener(engaged, reason)`` runs on the thread that changed the state."""
        self._listeners.append(listener)

    def write_file(self, reason: str) -> None:
        """Create the kill file only (``karb kill``): whoever polls it engages. ``OSError``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(reason + "\n", encoding="utf-8")

    def remove_file(self) -> bool:
        """Remove the kill file only (``karb kill --clear``); return whether it was there."""
        try:
            self.path.unlink()
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False

    def engage(self, reason: str) -> None:
        """Engage now and leave the file behind so a restart stays stopped."""
        try:
            self.write_file(reason)
            sticky = False
        except OSError as exc:
            logger.error("kill switch: cannot write {} ({}); engaged in memory only", self.path, exc)
            sticky = True
        self._set(True, reason, sticky)

    def clear(self) -> None:
        """Remove the file and let trading resume (an ``OSError`` if it cannot be removed)."""
        self.remove_file()
        self._set(False, "cleared", False)

    def check(self) -> bool:
        """Poll the file (and a pending signal) once; return whether the switch is engaged."""
        if self._signal_reason:
            reason, self._signal_reason = self._signal_reason, ""
            self.engage(reason)
        exists = self.path.exists()
        if exists and not self.engaged:
            try:
                text = self.path.read_text(encoding="utf-8").strip()
            except OSError:
                text = ""
            self._set(True, f"kill file {self.path}" + (f": {text}" if text else ""), False)
        elif not exists and self.engaged and not self._sticky:
            self._set(False, f"kill file {self.path} removed", False)
        return self.engaged

    def install_signal_handler(self, signum: int = signal.SIGUSR1) -> None:
        """Engage on ``signum``. Call from the main thread (Python's rule for handlers)."""
        name = signal.Signals(signum).name

        def handler(_signum, _frame):
            # runs between bytecodes on the main thread: only flag it, the poll thread acts
            self._signal_reason = f"signal {name}"
            self._wake.set()

        signal.signal(signum, handler)

    def start(self) -> None:
        self.check()
        self._thread = threading.Thread(target=self._run, name="kill-switch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        stop_thread(self._thread, timeout, self._stop, self._wake)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.check()
            except Exception:  # a listener bug must not stop the switch from being watched
                logger.exception("kill switch check failed")

    def _set(self, engaged: bool, reason: str, sticky: bool) -> None:
        with self._lock:
            changed = engaged != self.engaged
            self.engaged, self.reason, self._sticky = engaged, reason, sticky
        if not changed:
            return
        if engaged:
            logger.critical("KILL SWITCH engaged ({}): no new trades, cancelling open orders", reason)
        else:
            logger.warning("kill switch cleared ({}): trading may resume", reason)
        for listener in list(self._listeners):
            try:
                listener(engaged, reason)
            except Exception:
                logger.exception("kill switch listener failed")
