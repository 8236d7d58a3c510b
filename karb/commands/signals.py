"""SIGINT/SIGTERM as a request to stop, for the long-running commands (``run``, ``record``)."""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from loguru import logger


class StopRequest:
    """Set by SIGINT or SIGTERM: ``event`` to wait on, ``interrupted`` if it was Ctrl-C."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: list[int] = []

    @property
    def interrupted(self) -> bool:
        return signal.SIGINT in self.received

    def on_signal(self, signum, _frame) -> None:
        logger.warning("{} received: stopping", signal.Signals(signum).name)
        self.received.append(signum)
        self.event.set()


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """SIGINT and SIGTERM set the request instead of raising; the previous handlers are back
    once the block ends (after whatever it stops in its own ``finally``)."""
    stop = StopRequest()
    previous = {s: signal.signal(s, stop.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
