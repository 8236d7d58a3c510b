"""The synchronous leg path: the executor's ``LegRunner`` for a backtest.

The executor ``submit``s a trade's two leg tasks; they wait here until the driver calls
``drain`` after the strategy pass (the pass itself never blocks on a leg, as live). ``drain``
draws each leg's arrival, fills each at its arrival in arrival order (``ModelVenue.prefill``,
which moves the book stream there), then runs the executor's own leg tasks (placement,
polling, ledger, unwind, booking, journal) on this thread. Nothing is ever refused for want
of a leg thread: a trade is finished before the next decision.
"""
from __future__ import annotations

from typing import Callable


class InlineRunner:
    workers = 2

    def __init__(self, clients, wire):
        self.clients = clients
        self.wire = wire
        self._tasks: list[tuple[Callable, tuple]] = []

    def start(self) -> None:
        pass

    def stop(self, timeout: float) -> None:
        self.drain()

    def claim(self, n: int) -> bool:
        return True

    def release(self, n: int) -> None:
        pass

    def submit(self, fn: Callable, *args) -> None:
        self._tasks.append((fn, args))

    def wait_all_idle(self, timeout: float) -> bool:
        return not self._tasks

    def run_on_each(self, fn: Callable[[], None], timeout: float) -> bool:
        return True  # no connections to warm

    def drain(self) -> None:
        """Run every submitted leg task; legs leave now and fill at their arrival."""
        while self._tasks:
            tasks, self._tasks = self._tasks, []
            depart = self.wire.clock.monotonic_ns()
            planned = []
            for fn, args in tasks:  # the executor's (trade, leg)
                request = args[1].request
                planned.append((depart + self.wire.draw_ns(request.venue), request, fn, args))
            planned.sort(key=lambda p: p[0])
            for at_ns, request, _, _ in planned:
                self.clients[request.venue].prefill(request, at_ns)
            for _, _, fn, args in planned:
                fn(*args)
