"""Balance sync: drift reported and adopted when idle, never adopted across a trade."""
from decimal import Decimal as D

import pytest

from karb.balance_sync import BalanceSync
from karb.clock import ManualClock
from karb.exchanges.errors import VenueUnavailable
from karb.journal import Journal
from karb.model import Venue
from karb.risk import Risk
from tests.conftest import wait_until
from tests.stub_venue import StubVenue
from tests.trading_fixtures import balances, make_config, make_rules

UP, BT = Venue.UPBIT, Venue.BITHUMB


@pytest.fixture
def parts(tmp_path):
    config = make_config(tmp_path, monitor={"balance_sync_s": 60})
    risk = Risk(config, make_rules(config), ManualClock())
    venues = {UP: StubVenue(UP), BT: StubVenue(BT)}
    for v in Venue:
        venues[v].balances = balances(KRW=1_000_000, BTC="0.5")
        risk.ledger.load(v, balances(KRW=1_000_000, BTC="0.5"))
    journal = Journal(config.journal.path)
    journal.start()
    sync = BalanceSync(venues, risk, journal, config, risk.clock)
    yield sync, risk, venues, journal
    sync.stop()
    journal.stop()


def test_sync_with_matching_balances_reports_no_drift(parts):
    sync, risk, venues, journal = parts
    sync.sync_all()
    journal.flush()
    assert sync.stats()["drift"] == {"upbit": {}, "bithumb": {}}
    assert journal.query("SELECT * FROM incidents") == []
    assert len(journal.query("SELECT * FROM balances")) == 4


def test_sync_journals_only_the_balances_that_changed_and_a_vanished_one_as_zero(parts):
    sync, risk, venues, journal = parts
    sync.sync_all()
    sync.sync_all()  # nothing changed: nothing more journalled
    venues[UP].balances = balances(KRW=1_000_000)  # BTC no longer in the answer
    sync.sync(UP)
    journal.flush()
    rows = journal.query("SELECT venue, currency, free FROM balances ORDER BY id")
    assert len(rows) == 5
    assert rows[-1] == {"venue": "upbit", "currency": "BTC", "free": "0"}


def test_sync_with_venue_differing_reports_drift_and_adopts_the_venue(parts):
    sync, risk, venues, journal = parts
    venues[UP].balances = balances(KRW="1000012.5", BTC="0.5", ETH="2")
    assert sync.sync(UP)
    journal.flush()
    assert sync.stats()["drift"]["upbit"] == {"KRW": D("12.5"), "ETH": D(2)}
    assert risk.ledger.free(UP, "KRW") == D("1000012.5")
    (incident,) = journal.query("SELECT kind, detail FROM incidents")
    assert incident["kind"] == "balance_drift" and "KRW +12.5" in incident["detail"]


def test_sync_with_a_trade_in_flight_does_not_adopt(parts):
    sync, risk, venues, journal = parts
    venues[BT].balances = balances(KRW=600_000, BTC="0.5")  # the venue already locked the buy
    res = risk.ledger.reserve("t", {(BT, "KRW"): D(400_000)})
    assert not sync.sync(BT)
    assert risk.ledger.free(BT, "KRW") == D(1_000_000)
    assert sync.stats()["skipped"] == 1
    risk.ledger.release(res)


def test_sync_with_ledger_touched_during_the_fetch_does_not_adopt(parts):
    sync, risk, venues, journal = parts
    fetch = venues[BT].get_balances

    def racing_fetch():
        res = risk.ledger.reserve("t", {(BT, "KRW"): D(1)})  # a trade starts and ends meanwhile
        risk.ledger.release(res)
        return fetch()

    venues[BT].get_balances = racing_fetch
    venues[BT].balances = balances(KRW=5, BTC=0)
    assert not sync.sync(BT)
    assert risk.ledger.free(BT, "KRW") == D(1_000_000)


def test_thread_with_refresh_requested_syncs_now_and_survives_venue_errors(parts):
    sync, risk, venues, journal = parts

    def down():
        raise VenueUnavailable(UP, "maintenance", "503", 503)

    venues[UP].get_balances = down
    sync.start()
    sync.request_refresh()
    wait_until(lambda: sync.stats()["syncs"] >= 1 and sync.stats()["errors"] >= 1, 3.0,
               message="one sync and one error")
    sync.request_refresh()
    wait_until(lambda: sync.stats()["syncs"] >= 2, 3.0, message="a second sync")
    assert sync._thread.is_alive()


def test_sync_right_after_a_fill_does_not_adopt_a_venue_balance_that_has_not_caught_up(parts):
    from karb.balance_sync import SETTLE_S
    from karb.model import Side
    sync, risk, venues, journal = parts
    sync.sync_all()  # idle: adopted, and the ledger's version is now known
    # Arrange: a trade buys 0.01 BTC on Bithumb and finishes; the venue's balance lags it
    res = risk.ledger.reserve("t", {(BT, "KRW"): D(1_500_000) / 2})
    risk.ledger.apply_fill(res, BT, "KRW-BTC", Side.BUY, D("0.01"), D(700_000), D(280))
    risk.ledger.release(res)
    # Act: the executor's refresh right after the trade; the venue still says the old numbers
    assert not sync.sync(BT)
    # Assert: the ledger keeps what the fill booked
    assert risk.ledger.free(BT, "BTC") == D("0.51")
    assert risk.ledger.free(BT, "KRW") == D(1_000_000) - D(700_280)
    # once the settle period has passed, the venue's answer is the truth again
    venues[BT].balances = balances(KRW=299_720, BTC="0.51")
    risk.clock.advance(SETTLE_S)
    assert sync.sync(BT)
    assert sync.stats()["drift"]["bithumb"] == {}


def test_thread_after_a_settle_skip_syncs_again_once_settled(parts):
    from karb.balance_sync import SETTLE_S
    sync, risk, venues, journal = parts
    sync.sync_all()
    res = risk.ledger.reserve("t", {(BT, "KRW"): D(1)})
    risk.ledger.release(res)
    assert not sync.sync(BT)
    assert sync.next_wait_s() <= SETTLE_S
    risk.clock.advance(SETTLE_S)
    assert sync.sync(BT)
    assert sync.next_wait_s() == sync.interval_s
