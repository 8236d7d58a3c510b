"""Both legs on the wire together: prepared on the submitting thread and written by it once the
intent is committed, or prepared on the leg threads and released together by a ``LegPair``;
clients without a lean path are sent with ``place_order`` as before."""
from __future__ import annotations

import threading
import time

import pytest

from karb.journal import JournalError
from karb.legs import LegState
from karb.model import Venue
from karb.placement import LegPair
from tests.stub_venue import StubVenue
from tests.test_execution import Rig
from tests.trading_fixtures import make_signal

UP, BT = Venue.UPBIT, Venue.BITHUMB


class FakePrepared:
    """A prepared order of a ``LeanStub``: records who wrote it and what the journal held."""

    def __init__(self, venue: "LeanStub", request, priority):
        self.venue, self.request, self.priority = venue, request, priority
        self.wire_ns = 0
        self.writer = None
        self.closed = False
        self._lock = threading.Lock()

    def write(self):
        with self._lock:
            if self.closed or self.writer is not None:
                return
            self.writer = threading.current_thread().name
            self.venue.written.append((self.request.client_id, self.writer, self.venue.journalled()))
            self.wire_ns = time.monotonic_ns()

    def send(self):
        self.write()
        return StubVenue.place_order(self.venue, self.request, self.priority)

    def close(self):
        with self._lock:
            self.closed = True


class LeanStub(StubVenue):
    """A stub venue with a lean path; ``no_wait`` False makes ``wait=False`` preparation
    decline (no free slot or no warm connection)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.no_wait = True
        self.prepared: list[FakePrepared] = []
        self.written: list = []
        self.journalled = lambda: []

    def prepare_order(self, request, priority=False, wait=True):
        if not wait and not self.no_wait:
            return None
        prepared = FakePrepared(self, request, priority)
        prepared.thread = threading.current_thread().name
        self.prepared.append(prepared)
        return prepared


@pytest.fixture
def lean_rig(tmp_path):
    rigs = []

    def make():
        r = Rig(tmp_path / f"rig{len(rigs)}")
        r.executor.clients = r.executor.placer.clients = r.venues = {
            UP: LeanStub(UP, "0.0005"), BT: LeanStub(BT, "0.0004")}
        r.executor.resolver.clients = r.venues
        for venue in r.venues.values():
            venue.journalled = lambda r=r: [row["client_id"] for row in r.journal.query(
                "SELECT client_id FROM orders ORDER BY client_id")]
        r.executor.start()
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        r.close()


def test_submitting_thread_writes_both_legs_back_to_back_after_the_intent_commit(lean_rig):
    r = lean_rig()
    trade = r.run()
    assert trade.buy.state is LegState.FILLED and trade.sell.state is LegState.FILLED
    writes = r.venues[UP].written + r.venues[BT].written
    # both written by the thread that called submit (here the test's), never by a leg thread,
    # each when the journal already held both legs of the intent
    assert {w[1] for w in writes} == {threading.current_thread().name}
    assert all(w[2] == ["s1b", "s1s"] for w in writes)
    assert trade.buy.wire_ns and trade.sell.wire_ns
    assert trade.buy.sent_ns == trade.sell.sent_ns <= min(trade.buy.wire_ns, trade.sell.wire_ns)
    # then each leg's answer was read on a leg thread (StubVenue records who placed)
    assert all(t.startswith("leg-") for t in r.venues[UP].threads + r.venues[BT].threads)
    p50, p99 = r.executor.stats()["latency_us"]["signal_to_wire"]
    assert 0 < p50 <= p99


def test_intent_not_journalled_writes_nothing_and_frees_the_prepared_orders(lean_rig):
    r = lean_rig()

    def fail(*args, **kwargs):
        raise JournalError("disk full")

    r.journal.record_intent = fail
    assert r.executor.submit(make_signal()).startswith("journal:")
    prepared = r.venues[UP].prepared + r.venues[BT].prepared
    assert len(prepared) == 2 and all(p.closed and p.writer is None for p in prepared)
    assert r.venues[UP].placements == [] and r.venues[BT].placements == []
    assert r.risk.summary()["reserved"] == {}


def test_legs_that_would_wait_are_prepared_on_leg_threads_and_released_together(lean_rig,
                                                                              monkeypatch):
    monkeypatch.setattr("karb.placement.PAIR_WAIT_S", 10.0)  # a loaded machine wakes slowly
    r = lean_rig()
    r.venues[UP].no_wait = False  # the sell leg's venue: no free order slot right now, say
    trade = r.run()
    assert trade.buy.state is LegState.FILLED and trade.sell.state is LegState.FILLED
    bt_early, *_ = r.venues[BT].prepared  # the buy leg was prepared first, then given back
    assert bt_early.closed and bt_early.writer is None  # both or neither on the submitting thread
    prepared = [p for p in r.venues[UP].prepared + r.venues[BT].prepared if p.writer]
    assert len(prepared) == 2 and all(p.thread.startswith("leg-") for p in prepared)
    # the last leg ready wrote both: one writer for the two
    assert len({p.writer for p in prepared}) == 1
    assert all(w[2] == ["s1b", "s1s"] for w in r.venues[UP].written + r.venues[BT].written)


class Ready:
    def __init__(self, log):
        self.log = log

    def write(self):
        self.log.append((self, threading.current_thread().name))


def test_leg_pair_last_ready_writes_all_in_arrival_order():
    log = []
    pair = LegPair(wait_s=5.0)
    first, second = Ready(log), Ready(log)
    t = threading.Thread(target=pair.arrive, args=(first,), name="first")
    t.start()
    time.sleep(0.05)  # let it wait (the test asserts order, not timing)
    assert log == []
    pair.arrive(second)
    t.join(2)
    assert log == [(first, threading.current_thread().name), (second, threading.current_thread().name)]


def test_leg_pair_waits_for_a_missing_leg_only_as_long_as_its_bound():
    pair = LegPair(wait_s=0.05)
    start = time.monotonic()
    pair.arrive(Ready([]))
    assert 0.04 <= time.monotonic() - start < 2.0


def test_leg_pair_never_holds_a_leg_without_a_prepared_order():
    pair = LegPair(wait_s=30.0)
    start = time.monotonic()
    pair.arrive(None)  # the backtest's runner sends one leg after the other: never held
    assert time.monotonic() - start < 1.0
    log = []
    pair.arrive(Ready(log))  # the last: writes itself at once
    assert len(log) == 1
