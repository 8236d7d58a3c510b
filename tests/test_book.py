"""Book and BookBoard: snapshots, deltas, validity rules, published views, waiting."""
from __future__ import annotations

import threading

import pytest

from karb.book import Book, BookBoard
from karb.model import Venue

BIDS = [(100.0, 1.0), (99.0, 2.0), (98.0, 3.0)]
ASKS = [(101.0, 1.5), (102.0, 2.5), (103.0, 3.5)]


def _book(depth: int = 15) -> Book:
    book = Book(Venue.UPBIT, "KRW-BTC", depth)
    assert book.apply_snapshot(BIDS, ASKS, 1000, 1)
    return book


def test_book_before_any_snapshot_is_invalid_and_empty():
    book = Book(Venue.UPBIT, "KRW-BTC")
    assert not book.view.valid
    assert book.health(0, 10**9).startswith("invalid")
    book._check()


def test_snapshot_with_sorted_levels_publishes_top_n_view():
    book = _book(depth=2)
    view = book.view
    assert view.valid and view.version == 1 and view.exch_ts_ms == 1000 and view.recv_ns == 1
    assert view.bids == ((100.0, 1.0), (99.0, 2.0))
    assert view.asks == ((101.0, 1.5), (102.0, 2.5))
    assert view.best_bid == 100.0 and view.best_ask == 101.0
    assert book.levels() == (BIDS, ASKS)
    book._check()


def test_snapshot_with_zero_size_level_drops_that_level():
    book = Book(Venue.UPBIT, "KRW-BTC")
    assert book.apply_snapshot([(100.0, 1.0), (99.0, 0.0)], [(101.0, 0.0), (102.0, 1.0)], 1, 1)
    assert book.view.bids == ((100.0, 1.0),) and book.view.asks == ((102.0, 1.0),)
    book._check()


def test_snapshot_older_than_book_is_dropped_without_change():
    book = _book()
    before = book.view
    assert not book.apply_snapshot([(90.0, 1.0)], [(91.0, 1.0)], 999, 2)
    assert book.view is before


@pytest.mark.parametrize("bids, asks, why", [
    ([(100.0, 1.0)], [(100.0, 1.0)], "crossed (touching)"),
    ([(100.0, 1.0)], [(99.0, 1.0)], "crossed"),
    ([(100.0, -1.0)], [(101.0, 1.0)], "negative size"),
    ([(-100.0, 1.0)], [(101.0, 1.0)], "negative price"),
    ([(0.0, 1.0)], [(101.0, 1.0)], "zero price"),
    ([("100", 1.0)], [(101.0, 1.0)], "string price"),
    ([(100.0, None)], [(101.0, 1.0)], "null size"),
    ([(100.0, float("nan"))], [(101.0, 1.0)], "nan size"),
    ([(100.0, 1.0)], [(float("inf"), 1.0)], "infinite price"),
    ([(99.0, 1.0), (100.0, 1.0)], [(101.0, 1.0)], "bids ascending"),
    ([(100.0, 1.0), (100.0, 2.0)], [(101.0, 1.0)], "duplicate price"),
    ([(100.0,)], [(101.0, 1.0)], "short level"),
])
def test_snapshot_with_bad_values_marks_book_invalid(bids, asks, why):
    book = _book()
    assert not book.apply_snapshot(bids, asks, 2000, 2), why
    assert not book.view.valid and book.view.bids == ()
    assert book.health(2, 10**9).startswith("invalid")
    book._check()
    assert book.apply_snapshot(BIDS, ASKS, 2001, 3)  # a fresh snapshot restores it
    assert book.view.valid


def test_delta_sets_and_removes_levels_after_snapshot():
    book = _book()
    assert book.apply_delta([("bid", 100.5, 4.0), ("ask", 101.0, 0.0), ("bid", 98.0, 0.0)], 1001, 5)
    assert book.view.bids == ((100.5, 4.0), (100.0, 1.0), (99.0, 2.0))
    assert book.view.asks == ((102.0, 2.5), (103.0, 3.5))
    assert book.view.exch_ts_ms == 1001 and book.view.version == 2
    book._check()


def test_delta_removing_absent_level_changes_nothing_but_version():
    book = _book()
    assert book.apply_delta([("ask", 150.0, 0.0)], 1001, 5)
    assert book.levels() == (BIDS, ASKS)


def test_delta_without_base_snapshot_marks_book_invalid():
    book = Book(Venue.BITHUMB, "KRW-BTC")
    assert not book.apply_delta([("bid", 100.0, 1.0)], 1, 1)
    assert not book.view.valid and book.view.bids == ()
    book._check()


def test_delta_that_crosses_book_marks_invalid_until_snapshot():
    book = _book()
    assert not book.apply_delta([("bid", 101.0, 1.0)], 1001, 2)
    assert not book.view.valid and "crossed" in book.reason
    assert not book.apply_delta([("ask", 101.0, 0.0)], 1002, 3)  # no base: stays invalid
    book._check()
    assert book.apply_snapshot(BIDS, ASKS, 900, 4)  # any snapshot after a reset is taken
    assert book.view.valid
    book._check()


@pytest.mark.parametrize("change", [
    ("bid", -1.0, 1.0), ("ask", 101.0, -2.0), ("bid", "100", 1.0), ("mid", 100.0, 1.0),
    ("bid", float("nan"), 1.0), ("bid", 100.0, float("inf")), ("bid", 100.0),
])
def test_delta_with_bad_value_marks_book_invalid(change):
    book = _book()
    assert not book.apply_delta([("bid", 99.5, 1.0), change], 1001, 2)
    assert not book.view.valid
    book._check()


def test_invalidate_publishes_invalid_view_once_per_reason():
    book = _book()
    book.invalidate("disconnected")
    version = book.view.version
    book.invalidate("disconnected")
    assert book.view.version == version and not book.view.valid
    assert book.reason == "disconnected"


def test_is_fresh_with_old_receive_time_is_false():
    book = _book()  # recv_ns=1
    assert book.is_fresh(1 + 500, 1000)
    assert not book.is_fresh(1 + 2000, 1000)
    assert book.health(1 + 2000, 1000).startswith("stale")
    assert book.health(1 + 500, 1000) is None


def test_snapshot_after_deltas_replaces_sorted_levels():
    book = _book()
    book.apply_delta([("bid", 99.5, 1.0)], 1001, 2)
    assert book.apply_snapshot([(97.0, 1.0)], [(98.0, 1.0)], 1002, 3)
    assert book.levels() == ([(97.0, 1.0)], [(98.0, 1.0)])
    assert book.apply_delta([("ask", 97.5, 2.0)], 1003, 4)
    assert book.view.asks == ((97.5, 2.0), (98.0, 1.0))
    book._check()


def test_board_seq_bumps_once_per_applied_change():
    board = BookBoard(["KRW-BTC", "KRW-ETH"], depth=5)
    sink = board.sink("upbit")
    assert sink.on_snapshot("KRW-BTC", BIDS, ASKS, 1, 1)
    assert sink.on_delta("KRW-BTC", [("bid", 99.5, 1.0)], 2, 2)
    assert not board.sink(Venue.BITHUMB).on_delta("KRW-ETH", [("bid", 1.0, 1.0)], 2, 2)
    assert board.seq == 2  # the refused delta changed nothing
    assert board.get("upbit", "KRW-BTC").view.version == 2
    assert board.get(Venue.BITHUMB, "KRW-ETH").view.valid is False
    sink.on_reset(None, "disconnected")
    assert not board.get("upbit", "KRW-BTC").view.valid
    assert len(board.books()) == 4 and len(board.books("bithumb")) == 2


def test_board_get_with_unknown_market_raises_key_error():
    board = BookBoard(["KRW-BTC"])
    with pytest.raises(KeyError):
        board.get("upbit", "KRW-XRP")


def test_wait_for_change_with_no_change_times_out_with_same_seq():
    board = BookBoard(["KRW-BTC"])
    assert board.wait_for_change(board.seq, 0.01) == board.seq


def test_wait_for_change_wakes_when_another_thread_applies_snapshot():
    board = BookBoard(["KRW-BTC"])
    started = threading.Event()
    result = []

    def waiter():
        started.set()
        result.append(board.wait_for_change(0, 5.0))

    thread = threading.Thread(target=waiter, name="test-waiter")
    thread.start()
    started.wait(1.0)
    board.sink("bithumb").on_snapshot("KRW-BTC", BIDS, ASKS, 1, 1)
    thread.join(5.0)
    assert not thread.is_alive() and result == [1]


def test_wait_for_change_with_stale_last_seq_returns_at_once():
    board = BookBoard(["KRW-BTC"])
    board.sink("upbit").on_snapshot("KRW-BTC", BIDS, ASKS, 1, 1)
    assert board.wait_for_change(0, 10.0) == 1


def test_snapshot_with_zero_padded_rows_drops_padding():
    # Arrange: the sim (and Upbit on a thin book) pads the shorter side with price 0, size 0
    book = Book(Venue.UPBIT, "KRW-BTC")
    # Act
    applied = book.apply_snapshot([(100.0, 1.0), (0.0, 0.0)], [(101.0, 1.0), (102.0, 2.0)], 1, 1)
    # Assert
    assert applied and book.view.bids == ((100.0, 1.0),)
    book._check()


def test_snapshot_with_nan_among_sizes_marks_book_invalid():
    book = Book(Venue.UPBIT, "KRW-BTC")
    assert not book.apply_snapshot([(100.0, 1.0), (99.0, float("nan"))], [(101.0, 1.0)], 1, 1)
    assert not book.view.valid


def test_snapshot_columns_with_clean_levels_equals_tuple_snapshot():
    book = Book(Venue.UPBIT, "KRW-BTC", depth=2)
    assert book.apply_snapshot_columns([100.0, 99.0, 98.0], [1.0, 2.0, 3.0],
                                       [101.0, 102.0, 103.0], [1.5, 2.5, 3.5], 1000, 1)
    assert book.view.bids == ((100.0, 1.0), (99.0, 2.0)) and book.levels() == (BIDS, ASKS)
    book._check()


@pytest.mark.parametrize("bp, bs, ap, asz, valid, bids", [
    ([100.0, 0.0], [1.0, 0.0], [101.0, 102.0], [1.0, 1.0], True, ((100.0, 1.0),)),  # padding
    ([100.0], [1.0], [100.0], [1.0], False, ()),                                    # crossed
    ([100.0, 100.0], [1.0, 2.0], [101.0], [1.0], False, ()),                        # duplicate
    ([100.0], ["1"], [101.0], [1.0], False, ()),                                    # wrong type
    ([], [], [101.0], [1.0], True, ()),                                             # one side
    ([100.0], [float("nan")], [101.0], [1.0], False, ()),                           # NaN
])
def test_snapshot_columns_off_the_fast_path_follow_the_general_rules(bp, bs, ap, asz, valid, bids):
    book = Book(Venue.UPBIT, "KRW-BTC")
    assert book.apply_snapshot_columns(bp, bs, ap, asz, 1, 1) is valid
    assert book.view.valid is valid and book.view.bids == bids
    book._check()


def test_sink_snapshot_columns_reports_validity():
    board = BookBoard(["KRW-BTC"])
    assert board.sink("upbit").on_snapshot_columns("KRW-BTC", [100.0], [1.0], [101.0], [1.0], 1, 1)
    assert not board.sink("upbit").on_snapshot_columns("KRW-BTC", [102.0], [1.0], [101.0], [1.0], 2, 2)


def _wall_ms() -> int:
    import time
    return time.time_ns() // 1_000_000


def test_book_with_one_future_dated_snapshot_drops_it_and_keeps_taking_current_frames():
    # Arrange: a live book, then one frame stamped an hour ahead of the local clock
    book = Book(Venue.UPBIT, "KRW-BTC")
    now = _wall_ms()
    assert book.apply_snapshot(BIDS, ASKS, now, 1)
    # Act
    taken = book.apply_snapshot([(100.0, 9.0)], [(101.0, 9.0)], now + 3_600_000, 2)
    # Assert: dropped, never adopted as the high-water mark; the next current frame applies
    assert not taken
    assert book.view.exch_ts_ms < now + 3_600_000
    assert book.future_frames == 1
    assert book.apply_snapshot([(100.0, 5.0)], [(101.0, 5.0)], now + 50, 3)
    assert book.view.valid and book.view.bids == ((100.0, 5.0),) and book.view.recv_ns == 3
    book._check()


def test_book_with_future_dated_delta_invalidates_instead_of_adopting_its_timestamp():
    book = Book(Venue.BITHUMB, "KRW-BTC")
    now = _wall_ms()
    assert book.apply_snapshot(BIDS, ASKS, now, 1)
    assert not book.apply_delta([("bid", 100.0, 7.0)], now + 3_600_000, 2)
    assert not book.view.valid and "ahead" in book.reason
    assert book.apply_snapshot(BIDS, ASKS, now + 10, 3)
    assert book.view.valid and book.view.exch_ts_ms == now + 10
    book._check()


def test_book_whose_venue_timestamp_lags_counts_as_stale_though_frames_keep_arriving(monkeypatch):
    import karb.book
    wall = [1_700_000_000_000 * 10**6]
    monkeypatch.setattr(karb.book, "_wall_ns", lambda: wall[0])
    # Arrange: the first frame sets the clock-offset baseline (a constant 40 s offset here)
    book = Book(Venue.UPBIT, "KRW-BTC")
    venue_ms = 1_700_000_000_000 - 40_000
    recv = 10**12
    assert book.apply_snapshot(BIDS, ASKS, venue_ms, recv)
    assert book.view.lag_ns == 0 and book.health(recv, 2 * 10**9) is None
    # Act: frames keep arriving every second, but the venue's clock in them moves 0.1 s each
    for _ in range(5):
        wall[0] += 10**9
        recv += 10**9
        venue_ms += 100
        assert book.apply_delta([("bid", 100.0, 1.0)], venue_ms, recv)
    # Assert: received just now, yet its content is 4.5 s old by the venue's own clock
    view = book.view
    assert view.recv_ns == recv and view.lag_ns == 4_500_000_000
    assert recv - view.as_of_ns == 4_500_000_000
    assert book.health(recv, 2 * 10**9).startswith("stale: venue timestamp")
    assert not book.is_fresh(recv, 2 * 10**9)
    # a snapshot that catches up makes the book fresh again
    wall[0] += 10**9
    assert book.apply_snapshot(BIDS, ASKS, venue_ms + 6_000, recv + 10**9)
    assert book.view.lag_ns == 0 and book.is_fresh(recv + 10**9, 2 * 10**9)


def test_book_after_a_clock_step_is_fresh_again_within_two_offset_windows(monkeypatch):
    import karb.book
    wall = [1_700_000_000_000 * 10**6]
    monkeypatch.setattr(karb.book, "_wall_ns", lambda: wall[0])
    book = Book(Venue.UPBIT, "KRW-BTC")
    venue_ms = 1_700_000_000_000
    assert book.apply_snapshot(BIDS, ASKS, venue_ms, 1)
    wall[0] += 3 * 10**9  # our clock steps 3 s forward (an NTP correction) and stays there
    lags = []
    for i in range(2 * karb.book.OFFSET_WINDOW_MS // 1000 + 2):
        wall[0] += 10**9
        venue_ms += 1000
        assert book.apply_snapshot(BIDS, ASKS, venue_ms, i + 2)
        lags.append(book.view.lag_ns)
    assert lags[0] == 3 * 10**9  # looks 3 s late right after the step
    assert lags[-1] == 0  # the offset was re-learnt: not stale for good
