"""Token buckets on a fake clock: waiting, reserve for priority traffic, venue feedback."""
from __future__ import annotations

import threading

import pytest

from karb.config import RateLimitConfig
from karb.exchanges.ratelimit import Group, RateLimiter, TokenBucket, parse_remaining_req
from tests.exchanges_support import FakeClock


def bucket(rate: float, reserve: float = 0.0) -> tuple[TokenBucket, FakeClock]:
    clock = FakeClock()
    return TokenBucket(rate, reserve, clock, clock.wait), clock


def test_acquire_within_burst_does_not_wait():
    b, clock = bucket(4)

    waited = [b.acquire() for _ in range(4)]

    assert waited == [0, 0, 0, 0] and clock.waits == []


def test_acquire_beyond_burst_waits_for_refill():
    b, clock = bucket(4)
    for _ in range(4):
        b.acquire()

    waited = b.acquire()

    assert waited == pytest.approx(0.25) and clock.waits == [pytest.approx(0.25)]


def test_acquire_after_idle_refills_only_to_one_second_of_burst():
    b, clock = bucket(2)
    clock.now += 60

    assert b.tokens == 2
    b.acquire(), b.acquire()
    assert b.acquire() == pytest.approx(0.5)


def test_ordinary_acquire_with_reserve_leaves_headroom_for_priority():
    b, clock = bucket(8, reserve=0.25)  # 2 of 8 tokens kept for priority
    for _ in range(6):
        assert b.acquire() == 0

    ordinary_wait_needed = (1 + b.reserve - b.tokens) / b.rate
    assert b.acquire(priority=True) == 0  # unwinds and cancels still go at once
    assert b.acquire(priority=True) == 0
    assert b.acquire() == pytest.approx(ordinary_wait_needed + 2 / 8)


def test_bucket_with_rate_one_and_reserve_still_admits_ordinary_traffic():
    b, _ = bucket(1, reserve=0.9)

    assert b.reserve == 0 and b.acquire() == 0


def test_observe_remaining_below_estimate_lowers_tokens():
    b, clock = bucket(30)

    b.observe_remaining(2)
    b.acquire(), b.acquire()

    assert b.acquire() == pytest.approx(1 / 30)


def test_observe_remaining_above_estimate_changes_nothing():
    b, _ = bucket(10)
    for _ in range(8):
        b.acquire()

    b.observe_remaining(9)

    assert b.tokens == pytest.approx(2)


def test_penalise_with_retry_after_blocks_until_it_passes():
    b, clock = bucket(10)

    b.penalise(retry_after_s=1.5)

    assert b.acquire(priority=True) == pytest.approx(1.5)


def test_penalise_without_retry_after_waits_out_the_venues_one_second_window():
    b, _ = bucket(10)

    b.penalise()

    assert b.acquire() == pytest.approx(1.0)


def test_bucket_with_non_positive_rate_raises():
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_acquire_with_real_clock_wakes_waiting_thread():
    # One token per 20 ms, burst 1 after taking it: a second thread must wait for the refill,
    # on the Condition's timed wait, and then get its token.
    b = TokenBucket(50)
    for _ in range(50):
        b.acquire()
    done = threading.Event()
    worker = threading.Thread(target=lambda: (b.acquire(), done.set()), name="test-acquire")

    worker.start()

    assert done.wait(2.0)
    worker.join(2.0)


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
def test_limiter_with_remaining_req_header_lowers_the_matching_bucket(group_name, used, lowered):
    clock = FakeClock()
    limiter = RateLimiter(RateLimitConfig(public_per_s=10, private_per_s=30, order_per_s=8),
                          clock, clock.wait)

    limiter.observe_headers(used, {"Remaining-Req": f"group={group_name}; min=1; sec=0"})

    for group, b in limiter.buckets.items():
        assert (b.tokens == 0) == (group is lowered)


def test_limiter_without_header_changes_nothing():
    limiter = RateLimiter(RateLimitConfig())

    limiter.observe_headers(Group.PUBLIC, {})

    assert limiter.buckets[Group.PUBLIC].tokens == 10


def test_limiter_penalise_and_acquire_use_the_named_bucket():
    clock = FakeClock()
    limiter = RateLimiter(RateLimitConfig(order_per_s=4), clock, clock.wait)

    limiter.penalise(Group.ORDER, 2.0)

    assert limiter.acquire(Group.PUBLIC) == 0
    assert limiter.acquire(Group.ORDER, priority=True) == pytest.approx(2.0)
