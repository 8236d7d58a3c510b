"""The strategy's freshness check uses the venue's own timestamp, not only the receive time."""
import karb.book
from karb.model import Venue
from tests.test_strategy import BT_BOOK, UP_BOOK, Harness
from tests.trading_fixtures import MARKET


def test_strategy_with_lagging_venue_timestamps_skips_the_book_as_stale(tmp_path, monkeypatch):
    wall = [1_700_000_000_000 * 10**6]
    monkeypatch.setattr(karb.book, "_wall_ns", lambda: wall[0])
    h = Harness(tmp_path, strategy={"threshold_bps": 10})
    up = h.board.get(Venue.UPBIT, MARKET)
    bt = h.board.get(Venue.BITHUMB, MARKET)
    venue_ms = 1_700_000_000_000
    up.apply_snapshot(*UP_BOOK, venue_ms, h.clock.monotonic_ns())
    bt.apply_snapshot(*BT_BOOK, venue_ms, h.clock.monotonic_ns())
    # Upbit keeps sending on time, but its content falls 3 s behind its own earlier pace
    wall[0] += 3 * 10**9
    h.clock.advance(3.0)
    up.apply_snapshot(*UP_BOOK, venue_ms + 1, h.clock.monotonic_ns())
    bt.apply_snapshot(*BT_BOOK, venue_ms + 3_000, h.clock.monotonic_ns())
    h.evaluate()
    assert h.received == []
    assert "upbit book stale" in str(h.strategy.stats())
