"""The market thread (``sim-market``): paces the book stream against the wall clock and publishes.

Each ``BookEvent`` (sim time ``t_ns``) is published when ``start + t_ns / speed`` is reached:
under the venue's publish lock the exchange records the book (and fills resting orders it
crosses), then every hub of that venue queues the frame to its subscribers. Frame timestamps
are ``start_ms + t_ns // 1e6``, so the bytes depend only on the stream and ``start_ms``.
If publishing falls behind schedule the thread publishes without waiting and counts the lag.
``ready`` is set once every expected (venue, market) book has been published once: the sim
serves only from then on, so nobody reads an empty book.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from loguru import logger

from feeds.recorder import RecordingError
from karb.model import Venue
from karb.sim.exchange import SimExchange
from karb.sim.market import BookEvent
from karb.sim.ws import WsHub


@dataclass
class VenueOutlets:
    """Where one venue's books go: its exchange and its WebSocket hubs."""

    exchange: SimExchange
    hubs: list[WsHub]
    publish_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class PublishStats:
    published: int = 0
    max_lag_s: float = 0.0
    sim_ns: int = 0


class MarketThread:
    """Owns the event iterator; ``on_tick(sim_ns)`` runs scheduled work (faults) on this thread."""

    def __init__(self, events: Iterator[BookEvent], outlets: dict[Venue, VenueOutlets], start_ms: int,
                 speed: float = 1.0, on_tick: Callable[[int], None] | None = None,
                 expected: set[tuple[Venue, str]] | None = None):
        self._events = events
        self._outlets = outlets
        self.start_ms = start_ms
        self._speed = speed
        self._on_tick = on_tick
        self._stop = threading.Event()
        self.started = threading.Event()
        self.ready = threading.Event()
        self._unpublished = set(expected or ())
        if not self._unpublished:
            self.ready.set()
        self.stats = PublishStats()
        self._thread = threading.Thread(target=self._run, name="sim-market", daemon=True)

    def start(self) -> "MarketThread":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("sim-market thread did not stop in {}s", timeout)

    def publish(self, event: BookEvent) -> None:
        """Publish one event now (also used by the benchmark without pacing)."""
        out = self._outlets[event.venue]
        ts_ms = self.start_ms + event.t_ns // 1_000_000
        with out.publish_lock:
            old = out.exchange.published_ints(event.market)
            out.exchange.on_book(event.market, event.bids, event.asks, ts_ms)
            for hub in out.hubs:
                hub.publish(event.market, event.bids, event.asks, ts_ms, old)
        self.stats.published += 1
        self.stats.sim_ns = event.t_ns
        if self._unpublished:
            self._unpublished.discard((event.venue, event.market))
            if not self._unpublished:
                self.ready.set()

    def missing(self) -> set[tuple[Venue, str]]:
        """The (venue, market) books not published yet (empty once ``ready``)."""
        return set(self._unpublished)

    def _run(self) -> None:
        origin = time.monotonic()
        self.started.set()
        try:
            for event in self._events:
                due = origin + event.t_ns / 1e9 / self._speed
                delay = due - time.monotonic()
                if delay > 0:
                    if self._stop.wait(delay):
                        return
                else:
                    if self._stop.is_set():
                        return
                    self.stats.max_lag_s = max(self.stats.max_lag_s, -delay)
                self.publish(event)
                if self._on_tick is not None:
                    self._on_tick(event.t_ns)
        except RecordingError as exc:  # a bad replay file: one line, no traceback
            logger.error("sim replay stopped, the simulated books stop updating: {}", exc)
        except Exception:
            logger.exception("sim-market thread failed; the simulated books stop updating")
