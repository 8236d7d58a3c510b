"""One way to end a worker thread: set its events, join with a bound, say if it hung."""
from __future__ import annotations

import threading

from loguru import logger


def stop_thread(thread: threading.Thread | None, timeout: float, *events: threading.Event) -> bool:
    """Set ``events`` (stop, wake...), join ``thread`` for at most ``timeout`` seconds.

    Return True if it ended (or never started); log a warning naming it if not.
    """
    for event in events:
        event.set()
    if thread is None or thread.ident is None:
        return True
    thread.join(timeout)
    if thread.is_alive():
        logger.warning("{} thread did not stop within {} s", thread.name, timeout)
        return False
    return True
