"""Balance sync with a private stream: myAsset first, REST as the baseline and the check."""
from decimal import Decimal as D

import pytest

from feeds.private import AssetEvent
from karb.balance_sync import BalanceSync
from karb.clock import ManualClock
from karb.journal import Journal
from karb.model import Venue
from karb.order_stream import OrderStreams
from karb.risk import Risk
from tests.stub_venue import StubVenue
from tests.trading_fixtures import balances, make_config, make_rules

UP, BT = Venue.UPBIT, Venue.BITHUMB


class CountingVenue(StubVenue):
    fetches = 0
    during_fetch = None

    def get_balances(self):
        self.fetches += 1
        if self.during_fetch is not None:
            self.during_fetch()
        return super().get_balances()


@pytest.fixture
def parts(tmp_path):
    config = make_config(tmp_path, monitor={"balance_sync_s": 60, "balance_rest_check_s": 60})
    clock = ManualClock()
    risk = Risk(config, make_rules(config), clock)
    venues = {UP: CountingVenue(UP), BT: CountingVenue(BT)}
    for v in Venue:
        venues[v].balances = balances(KRW=1_000_000, BTC="0.5")
        risk.ledger.load(v, balances(KRW=1_000_000, BTC="0.5"))
    journal = Journal(config.journal.path)
    journal.start()
    streams = OrderStreams([UP])  # Bithumb without a stream
    streams.on_stream(UP, True, "test")
    sync = BalanceSync(venues, risk, journal, config, clock, streams=streams)
    yield sync, risk, venues, streams, journal, clock
    journal.stop()


def asset(streams, **amounts):
    streams.on_asset(UP, AssetEvent("upbit", {c: (D(str(v)), D(0)) for c, v in amounts.items()}, 1, 0))


def test_sync_reads_the_stream_view_after_one_rest_baseline_without_a_request(parts):
    sync, risk, venues, streams, journal, clock = parts
    assert sync.sync(UP) and venues[UP].fetches == 1
    asset(streams, KRW="1000000", BTC="0.5")  # an event that agrees with the ledger
    assert sync.sync(UP) and venues[UP].fetches == 1
    assert sync.stats()["drift"]["upbit"] == {}
    risk.ledger.load(UP, balances(KRW=900_000, BTC="0.6"))  # a trade, booked and streamed
    asset(streams, KRW="900000")
    asset(streams, BTC="0.6")
    assert sync.sync(UP) and venues[UP].fetches == 1
    journal.flush()
    # journalled: the REST baseline, then only what changed (nothing for the agreeing sync)
    rows = journal.query("SELECT source, currency, free FROM balances WHERE venue = 'upbit' ORDER BY id")
    assert [(r["source"], r["currency"], r["free"]) for r in rows] == [
        ("sync", "KRW", "1000000"), ("sync", "BTC", "0.5"), ("stream", "KRW", "900000"),
        ("stream", "BTC", "0.6")]


def test_drift_seen_on_the_stream_is_confirmed_by_rest_before_it_is_adopted(parts):
    sync, risk, venues, streams, journal, clock = parts
    sync.sync(UP)
    venues[UP].balances = balances(KRW="1000050", BTC="0.5")  # a deposit
    asset(streams, KRW="1000050")
    assert sync.sync(UP) and venues[UP].fetches == 2
    assert risk.ledger.free(UP, "KRW") == D(1000050) and sync.stats()["drift"]["upbit"] == {"KRW": D(50)}


def test_a_stale_or_wrong_stream_view_never_rewrites_the_ledger(parts):
    sync, risk, venues, streams, journal, clock = parts
    sync.sync(UP)
    asset(streams, KRW="12")  # a stream that lies (or an event from long ago)
    assert sync.sync(UP) and venues[UP].fetches == 2  # REST asked, and REST agrees with the ledger
    assert risk.ledger.free(UP, "KRW") == D(1_000_000) and sync.stats()["drift"]["upbit"] == {}
    journal.flush()
    assert journal.query("SELECT * FROM incidents") == []
    assert sync.sync(UP) and venues[UP].fetches == 2  # the view now holds REST's answer


def test_rest_is_still_asked_when_the_view_is_older_than_the_check_interval(parts):
    sync, risk, venues, streams, journal, clock = parts
    sync.sync(UP)
    clock.advance(59)
    sync.sync(UP)
    assert venues[UP].fetches == 1
    clock.advance(2)
    venues[UP].balances = balances(KRW=999_000, BTC="0.5")  # something the stream missed
    assert sync.sync(UP) and venues[UP].fetches == 2
    assert risk.ledger.free(UP, "KRW") == D(999_000)
    clock.advance(1)
    assert sync.sync(UP) and venues[UP].fetches == 2


def test_a_reconnect_or_a_down_stream_sends_sync_back_to_rest(parts):
    sync, risk, venues, streams, journal, clock = parts
    sync.sync(UP)
    streams.on_stream(UP, False, "lost")
    streams.on_stream(UP, True, "back")  # events in between may be lost
    sync.sync(UP)
    assert venues[UP].fetches == 2
    streams.on_stream(UP, False, "lost")
    sync.sync(UP)
    sync.sync(UP)
    assert venues[UP].fetches == 4
    sync.sync(BT)
    sync.sync(BT)
    assert venues[BT].fetches == 2  # no stream: REST every time, as before


def test_an_event_racing_the_rest_answer_discards_the_baseline(parts):
    sync, risk, venues, streams, journal, clock = parts
    venues[UP].during_fetch = lambda: asset(streams, KRW="1000100")  # newer than the answer?
    sync.sync(UP)
    venues[UP].during_fetch = None
    sync.sync(UP)
    assert venues[UP].fetches == 2  # the raced baseline was not trusted
    sync.sync(UP)
    assert venues[UP].fetches == 2


def test_asset_event_wakes_the_sync_thread(parts):
    sync, risk, venues, streams, journal, clock = parts
    sync._wake.clear()
    asset(streams, KRW="1")
    assert sync._wake.is_set()
    sync.sync(UP)
    sync.sync(UP)
    assert (sync.stats()["rest_fetches"], sync.stats()["stream_syncs"]) == (1, 1)
