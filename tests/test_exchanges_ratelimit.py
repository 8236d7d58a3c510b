"""Request windows on a fake clock (and a real one): limits per window, priority headroom,
slots counted from the answer, the venue's Remaining-Req and 429 as the authority."""
from __future__ import annotations

import random
import threading
import time

import pytest

from karb.config import RateLimitConfig
from karb.exchanges.ratelimit import (
    BAN_DEFAULT_S, BAN_MAX_S, BAN_STREAK_RESET_S, MAX_PAUSE_S, WINDOW_MARGIN_S, Group, RateLimiter,
    RequestWindow, WindowClosed, parse_remaining_req,
)
from tests.exchanges_support import FakeClock

SPAN = 1.0 + WINDOW_MARGIN_S


def window(limit: int, reserve: int = 0) -> tuple[RequestWindow, FakeClock]:
    clock = FakeClock()
    return RequestWindow(limit, reserve=reserve, clock=clock, wait=clock.wait), clock


def call(w: RequestWindow, priority: bool = False) -> float:
    """One request answered at once; returns the seconds waited for its slot."""
    with w.slot(priority) as ticket:
        return ticket.waited_s


def test_acquire_within_limit_does_not_wait():
    w, clock = window(4)

    assert [call(w) for _ in range(4)] == [0, 0, 0, 0] and clock.waits == []


def test_acquire_beyond_limit_waits_for_the_first_slot_to_leave_the_window():
    w, clock = window(4)
    for _ in range(4):
        call(w)

    assert call(w) == pytest.approx(SPAN)


def test_window_edge_never_admits_more_than_the_limit_in_one_second():
    # The token bucket's failure: full burst just before an edge, full burst just after.
    w, clock = window(10)
    clock.now += 0.9
    starts = []
    for _ in range(30):
        call(w)
        starts.append(clock.now)

    for t in starts:
        assert sum(1 for s in starts if t <= s < t + 1.0) <= 10
    assert starts[-1] - starts[0] == pytest.approx(2 * SPAN)


def test_random_traffic_never_has_more_than_the_limit_in_any_window():
    w, clock = window(7)
    rng = random.Random(3)
    answered = []
    for _ in range(200):
        clock.now += rng.expovariate(12.0)
        with w.slot():
            clock.now += rng.uniform(0, 0.05)  # the venue answers some time later
        answered.append(clock.now)

    for t in answered:
        assert sum(1 for s in answered if t < s <= t + 1.0) <= 7


def test_slot_counts_from_its_release_not_its_acquisition():
    w, clock = window(1)
    ticket = w.acquire()
    clock.now += 0.3  # the answer takes 300 ms
    w.release(ticket)

    assert call(w) == pytest.approx(SPAN)  # 1.31 s after the acquisition


def test_slot_in_flight_never_expires():
    w, clock = window(2)
    w.acquire()  # no answer yet
    clock.now += 5

    assert w.remaining == 1 and w.stats().in_flight == 1


def test_waiter_on_in_flight_slots_wakes_on_release():
    w = RequestWindow(1, window_s=0.05, margin_s=0.0)
    ticket = w.acquire()
    got = threading.Event()
    worker = threading.Thread(target=lambda: (w.acquire(), got.set()), name="test-window-waiter")
    worker.start()

    assert not got.wait(0.2)  # the slot is in flight: however long, no second request
    w.release(ticket)
    assert got.wait(2.0)
    worker.join(2.0)


def test_release_twice_frees_one_slot_only():
    w, _ = window(3)
    ticket = w.acquire()
    w.release(ticket)
    w.release(ticket)

    assert w.stats().used == 1 and w.stats().in_flight == 0


def test_ordinary_requests_leave_the_reserve_for_priority():
    w, clock = window(8, reserve=2)
    for _ in range(6):
        assert call(w) == 0

    assert call(w, priority=True) == 0  # cancels and unwinds still go at once
    assert call(w, priority=True) == 0
    assert call(w) == pytest.approx(SPAN)


def test_concurrent_ordinary_burst_never_takes_the_reserved_slots():
    w = RequestWindow(5, window_s=0.2, reserve=2, margin_s=0.0)
    stop = threading.Event()
    peak = []

    def flood():
        while not stop.is_set():
            with w.slot():
                peak.append(w.stats().used)

    workers = [threading.Thread(target=flood, name=f"test-flood-{i}") for i in range(4)]
    for t in workers:
        t.start()
    try:
        time.sleep(0.1)  # let the flood fill the window; the assertion below is not timed
        assert max(peak) <= 3
        waited = w.acquire(priority=True).waited_s
    finally:
        stop.set()
        for t in workers:
            t.join(5.0)
    assert waited == 0


def test_reserve_never_takes_the_last_ordinary_slot():
    assert RequestWindow(1, reserve=3).reserve == 0
    assert RequestWindow.per_second(8, 0.25).reserve == 2
    assert RequestWindow.per_second(12, 0.25).reserve == 3


def test_per_second_below_one_a_second_spaces_single_requests():
    w = RequestWindow.per_second(0.5)

    assert (w.limit, w.window_s) == (1, 2.0)


def test_per_second_with_fraction_rounds_the_limit_down():
    assert RequestWindow.per_second(10.9).limit == 10


@pytest.mark.parametrize("limit, window_s", [(0, 1.0), (1, 0.0)])
def test_window_with_nothing_to_count_raises(limit, window_s):
    with pytest.raises(ValueError):
        RequestWindow(limit, window_s)


def test_per_second_with_non_positive_rate_raises():
    with pytest.raises(ValueError):
        RequestWindow.per_second(0)


def test_observe_remaining_below_ours_waits_for_the_next_window():
    w, clock = window(30)

    w.observe_remaining(2)  # another process used 28 of this second

    assert call(w) == 0 and call(w) == 0
    assert call(w) == pytest.approx(SPAN)
    assert w.stats().venue_corrections == 1


def test_observe_remaining_matching_our_own_use_changes_nothing():
    w, _ = window(10)
    for _ in range(8):
        call(w)

    w.observe_remaining(2)

    assert w.remaining == 2 and w.stats().venue_corrections == 0


def test_observe_remaining_counts_our_calls_in_flight_as_ours():
    w, clock = window(10)
    tickets = [w.acquire() for _ in range(4)]  # answered in any order

    w.observe_remaining(6)

    assert w.stats().used == 4 and w.stats().venue_corrections == 0
    for ticket in tickets:
        w.release(ticket)


def test_penalise_with_retry_after_blocks_until_it_passes():
    w, clock = window(10)

    assert w.penalise(retry_after_s=1.5) == pytest.approx(1.5)
    assert call(w, priority=True) == pytest.approx(1.5)


def test_penalise_without_retry_after_waits_a_whole_window_never_zero():
    w, _ = window(10)

    assert w.penalise() == pytest.approx(SPAN)
    assert w.closed_for() == pytest.approx(SPAN)
    assert call(w) == pytest.approx(SPAN)
    assert w.stats().rate_limited == 1


def test_penalise_with_short_retry_after_still_waits_a_window():
    w, _ = window(10)

    assert w.penalise(retry_after_s=0.0) == pytest.approx(SPAN)


def test_stats_count_requests_waits_and_use():
    w, clock = window(2)
    for _ in range(3):
        call(w)

    s = w.stats()
    assert (s.limit, s.used, s.requests, s.waits) == (2, 1, 3, 1)
    assert s.wait_s == pytest.approx(SPAN)


def test_threads_sharing_a_window_stay_exact_on_a_real_clock():
    w = RequestWindow(20, window_s=0.25, margin_s=0.0)
    answered: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(15):
            with w.slot():
                pass
            with lock:
                answered.append(time.monotonic())

    threads = [threading.Thread(target=worker, name=f"test-window-{i}") for i in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10.0)

    assert len(answered) == 60
    assert time.monotonic() - start >= 2 * 0.25  # 60 requests at 20 a window: 3 windows
    stamps = sorted(answered)
    for i, t in enumerate(stamps):
        # a slot's next use starts after its release + window; allow the append's lag
        assert sum(1 for s in stamps[i:] if s < t + 0.25 - 0.01) <= 20


@pytest.mark.parametrize("header, expected", [
    ("group=default; min=1800; sec=29", ("default", 29)),
    ("group=order; min=480; sec=7", ("order", 7)),
    ("group=candles;min=600;sec=0", ("candles", 0)),
    ("garbage", None),
    (None, None),
])
def test_parse_remaining_req_with_header_returns_group_and_sec(header, expected):
    assert parse_remaining_req(header) == expected


@pytest.mark.parametrize("group_name, used, lowered", [
    ("default", Group.PRIVATE, Group.PRIVATE),
    ("order", Group.ORDER, Group.ORDER),
    ("orderbook", Group.PUBLIC, Group.PUBLIC),
    ("order-test", Group.ORDER, Group.ORDER),
])
def test_limiter_with_remaining_req_header_lowers_the_matching_window(group_name, used, lowered):
    clock = FakeClock()
    limiter = RateLimiter(RateLimitConfig(public_per_s=10, private_per_s=30, order_per_s=8),
                          clock, clock.wait)

    limiter.observe_headers(used, {"Remaining-Req": f"group={group_name}; min=1; sec=0"})

    for group, w in limiter.windows.items():
        assert (w.remaining == 0) == (group is lowered)


def test_limiter_without_header_changes_nothing():
    limiter = RateLimiter(RateLimitConfig())

    limiter.observe_headers(Group.PUBLIC, {})

    assert limiter.windows[Group.PUBLIC].remaining == 10


def test_limiter_penalise_and_acquire_use_the_named_window():
    clock = FakeClock()
    limiter = RateLimiter(RateLimitConfig(order_per_s=4), clock, clock.wait)

    limiter.penalise(Group.ORDER, 2.0)

    with limiter.slot(Group.PUBLIC) as public, limiter.slot(Group.ORDER, priority=True) as order:
        assert public.waited_s == 0 and order.waited_s == pytest.approx(2.0)
    assert limiter.closed_for(Group.ORDER) == 0


def test_limiter_keeps_the_reserve_in_the_private_and_order_windows():
    limiter = RateLimiter(RateLimitConfig(public_per_s=10, private_per_s=30, order_per_s=8,
                                          reserve_fraction=0.25))

    assert {g: w.reserve for g, w in limiter.windows.items()} == {
        Group.PUBLIC: 0, Group.PRIVATE: 7, Group.ORDER: 2}


# --- bounded waits, capped pauses, 418 blocks ----------------------------------------------------

def test_penalise_caps_a_long_retry_after():
    w, _ = window(10)

    assert w.penalise(retry_after_s=3600) == pytest.approx(MAX_PAUSE_S)
    assert w.closed_for() == pytest.approx(MAX_PAUSE_S)


def test_bounded_acquire_on_a_group_closed_for_longer_raises_at_once_and_takes_no_slot():
    w, clock = window(10, reserve=2)
    w.penalise(retry_after_s=30)
    start = clock.now

    with pytest.raises(WindowClosed) as err:
        w.acquire(priority=True, max_wait_s=2.0)

    assert clock.now == start and err.value.retry_after_s == pytest.approx(30)
    assert w.stats().in_flight == 0 and w.stats().requests == 0


def test_bounded_acquire_waits_out_a_closure_within_its_bound():
    w, _ = window(10)
    w.penalise(retry_after_s=1.5)

    assert w.acquire(priority=True, max_wait_s=2.0).waited_s == pytest.approx(1.5)


def test_bounded_acquire_on_in_flight_slots_gives_up_at_its_deadline():
    w, clock = window(1)
    w.acquire()  # its answer never comes
    start = clock.now

    with pytest.raises(WindowClosed):
        w.acquire(max_wait_s=2.0)

    assert clock.now - start == pytest.approx(2.0)
    assert w.stats().in_flight == 1


def test_an_abort_set_while_waiting_cuts_the_wait_short_on_a_real_clock():
    w = RequestWindow(1)
    w.acquire()  # holds the only slot
    abort, failed = threading.Event(), []

    def waiter():
        try:
            w.acquire(max_wait_s=60.0, abort=abort)
        except WindowClosed as exc:
            failed.append(exc)

    thread = threading.Thread(target=waiter, name="test-window-abort")
    thread.start()
    time.sleep(0.05)  # let it start waiting; the assertion below does not depend on it
    started = time.monotonic()
    abort.set()
    w.wake()
    thread.join(5)

    assert not thread.is_alive() and len(failed) == 1
    assert time.monotonic() - started < 2.0


def limiter_on(clock: FakeClock) -> RateLimiter:
    return RateLimiter(RateLimitConfig(public_per_s=10, private_per_s=30, order_per_s=12),
                       clock, clock.wait)


def test_ban_closes_every_group_of_the_venue_for_the_stated_block():
    clock = FakeClock()
    limiter = limiter_on(clock)

    assert limiter.ban(Group.PUBLIC, 30.0) == pytest.approx(30.0)

    assert all(limiter.closed_for(g) == pytest.approx(30.0) for g in Group)
    assert limiter.ban_stats().blocked_for_s == pytest.approx(30.0)
    assert limiter.ban_stats().bans == 1
    assert limiter.stats()[Group.PUBLIC].rate_limited == 1
    with pytest.raises(WindowClosed):
        limiter.acquire(Group.ORDER, priority=True, max_wait_s=2.0)


def test_ban_without_a_stated_block_defaults_and_doubles_on_each_repeat_then_starts_over():
    clock = FakeClock()
    limiter = limiter_on(clock)

    assert limiter.ban(Group.PUBLIC) == pytest.approx(BAN_DEFAULT_S)
    clock.now += BAN_DEFAULT_S
    assert limiter.ban(Group.PRIVATE) == pytest.approx(2 * BAN_DEFAULT_S)
    clock.now += 2 * BAN_DEFAULT_S
    assert limiter.ban(Group.PRIVATE) == pytest.approx(4 * BAN_DEFAULT_S)
    clock.now += 4 * BAN_DEFAULT_S + BAN_STREAK_RESET_S + 1  # a long quiet spell
    assert limiter.ban(Group.PUBLIC) == pytest.approx(BAN_DEFAULT_S)
    assert limiter.ban_stats().bans == 4


def test_ban_never_closes_for_more_than_the_cap():
    clock = FakeClock()
    limiter = limiter_on(clock)

    assert limiter.ban(Group.PUBLIC, 10 * BAN_MAX_S) == pytest.approx(BAN_MAX_S)
    for _ in range(20):
        assert limiter.ban(Group.PUBLIC) <= BAN_MAX_S
