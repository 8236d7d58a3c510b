"""Property and stress tests: any sequence of snapshots and deltas keeps the book equal to a
naive reference dict, sorted, and never crossed while valid."""
from __future__ import annotations

import random
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from karb.book import Book
from karb.model import Venue

PRICES = st.integers(min_value=1, max_value=40).map(float)
SIZES = st.one_of(st.just(0.0), st.integers(min_value=1, max_value=5).map(float))


class Reference:
    """The obvious model: two plain dicts, rebuilt or edited, with the same validity rules."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.valid = False
        self.ts = 0

    def snapshot(self, bids, asks, ts):
        if self.valid and ts < self.ts:
            return
        bids = {p: s for p, s in bids if s > 0}
        asks = {p: s for p, s in asks if s > 0}
        if bids and asks and max(bids) >= min(asks):
            self.bids, self.asks, self.valid = {}, {}, False
            return
        self.bids, self.asks, self.valid, self.ts = bids, asks, True, ts

    def delta(self, changes, ts):
        if not self.valid:
            return
        for side, price, size in changes:
            levels = self.bids if side == "bid" else self.asks
            if size > 0:
                levels[price] = size
            else:
                levels.pop(price, None)
        if self.bids and self.asks and max(self.bids) >= min(self.asks):
            self.bids, self.asks, self.valid = {}, {}, False
        else:
            self.ts = max(self.ts, ts)

    def sorted_levels(self):
        return (sorted(self.bids.items(), reverse=True), sorted(self.asks.items()))


def _side(descending: bool):
    return st.dictionaries(PRICES, SIZES, max_size=12).map(
        lambda d: sorted(d.items(), reverse=descending))


SNAPSHOT = st.tuples(st.just("snapshot"), _side(True), _side(False), st.integers(0, 50))
DELTA = st.tuples(st.just("delta"),
                  st.lists(st.tuples(st.sampled_from(["bid", "ask"]), PRICES, SIZES), max_size=6),
                  st.integers(0, 50))
RESET = st.tuples(st.just("reset"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(SNAPSHOT, DELTA, RESET), max_size=40))
def test_book_with_any_update_sequence_matches_reference(ops):
    book = Book(Venue.BITHUMB, "KRW-BTC", depth=5)
    ref = Reference()
    last_version = 0
    for op in ops:
        if op[0] == "snapshot":
            book.apply_snapshot(op[1], op[2], op[3], 1)
            ref.snapshot(op[1], op[2], op[3])
        elif op[0] == "delta":
            book.apply_delta(op[1], op[2], 1)
            ref.delta(op[1], op[2])
        else:
            book.invalidate("reset")
            ref.bids, ref.asks, ref.valid = {}, {}, False
        book._check()
        assert book.view.valid == ref.valid
        bids, asks = ref.sorted_levels()
        assert book.levels() == (bids, asks)
        assert book.view.bids == tuple(bids[:5]) and book.view.asks == tuple(asks[:5])
        if book.view.valid and bids and asks:
            assert book.view.best_bid < book.view.best_ask
        assert book.view.version >= last_version
        last_version = book.view.version


def test_book_stress_with_random_actions_keeps_invariants():
    rng = random.Random(0)
    book = Book(Venue.BITHUMB, "KRW-BTC", depth=10)
    ref = Reference()
    for step in range(3000):
        action = rng.random()
        mid = 1000 + rng.randint(-20, 20)
        if action < 0.1:
            bids = [(float(mid - i), float(rng.randint(1, 9))) for i in range(1, 16)]
            asks = [(float(mid + i), float(rng.randint(1, 9))) for i in range(0, 15)]
            book.apply_snapshot(bids, asks, step, step)
            ref.snapshot(bids, asks, step)
        elif action < 0.98:
            changes = [(rng.choice(["bid", "ask"]), float(mid + rng.randint(-25, 25)),
                        float(rng.choice([0, 0, 1, 2, 3]))) for _ in range(rng.randint(1, 5))]
            book.apply_delta(changes, step, step)
            ref.delta(changes, step)
        else:
            book.invalidate("reset")
            ref.bids, ref.asks, ref.valid = {}, {}, False
        book._check()
        assert book.levels() == ref.sorted_levels(), f"step {step}"


def test_book_with_concurrent_reader_sees_only_consistent_views():
    book = Book(Venue.UPBIT, "KRW-BTC", depth=15)
    stop = threading.Event()
    problems: list[str] = []

    def reader():
        seen = 0
        while not stop.is_set():
            view = book.view
            if view.version < seen:
                problems.append("version went back")
            seen = view.version
            if view.valid and view.bids and view.asks and view.bids[0][0] >= view.asks[0][0]:
                problems.append("crossed view")
            if any(a[0] <= b[0] for a, b in zip(view.bids, view.bids[1:])):
                problems.append("unsorted bids")

    thread = threading.Thread(target=reader, name="test-reader")
    thread.start()
    rng = random.Random(1)
    for step in range(20000):
        mid = 1000 + rng.randint(-50, 50)
        if step % 10 == 0:
            book.apply_snapshot([(float(mid - i), 1.0) for i in range(1, 31)],
                                [(float(mid + i), 1.0) for i in range(30)], step, step)
        else:
            book.apply_delta([(rng.choice(["bid", "ask"]), float(mid + rng.randint(-40, 40)), 1.0)],
                             step, step)
    stop.set()
    thread.join(5.0)
    assert not thread.is_alive()
    assert problems == []
