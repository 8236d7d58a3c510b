"""Journal: intent committed before return, exact decimals, upserts, open orders, bad rows."""
import threading
from decimal import Decimal as D

import pytest

from karb.journal import Journal, JournalError
from karb.legs import Leg
from karb.model import (Balance, Fill, OrderRequest, OrderResult, OrderStatus, OrderType, Side,
                        TimeInForce, Venue)
from tests.trading_fixtures import make_signal


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    j.start()
    yield j
    j.stop()


def _legs(sid="s1"):
    buy = Leg("buy", OrderRequest(Venue.BITHUMB, "KRW-BTC", Side.BUY, OrderType.LIMIT, f"{sid}b",
                                  price=D("140000000"), volume=D("0.01"), tif=TimeInForce.IOC))
    sell = Leg("sell", OrderRequest(Venue.UPBIT, "KRW-BTC", Side.SELL, OrderType.LIMIT, f"{sid}s",
                                    price=D("140700000"), volume=D("0.01"), tif=TimeInForce.IOC))
    return buy, sell


def test_record_intent_returns_only_after_commit_with_exact_amounts(journal):
    signal = make_signal("s1", volume="0.01234567")
    journal.record_intent(signal, _legs(), {"recv_ns": 5, "submit_ns": 7})
    # no flush: the rows must already be there
    (row,) = journal.query("SELECT * FROM signals")
    assert D(row["volume"]) == D("0.01234567") and row["status"] == "sending"
    assert (row["recv_ns"], row["signal_ns"], row["submit_ns"]) == (5, 1, 7)
    orders = journal.query("SELECT client_id, state, price, side FROM orders ORDER BY client_id")
    assert orders == [
        {"client_id": "s1b", "state": "new", "price": "140000000", "side": "buy"},
        {"client_id": "s1s", "state": "new", "price": "140700000", "side": "sell"},
    ]


def test_journal_file_is_in_wal_mode(journal):
    assert journal.query("PRAGMA journal_mode") == [{"journal_mode": "wal"}]


def test_record_order_updates_state_and_amounts_in_place(journal):
    buy, sell = _legs()
    journal.record_intent(make_signal("s1"), (buy, sell), {})
    buy.mark_sent(1)
    buy.apply(OrderResult(Venue.BITHUMB, "KRW-BTC", "B-9", "s1b", Side.BUY, OrderType.LIMIT,
                          OrderStatus.DONE, executed_volume=D("0.01"), executed_funds=D("1400000"),
                          paid_fee=D("560"),
                          fills=(Fill(D("140000000"), D("0.01"), D("1400000")),)))
    journal.record_order("s1", buy)
    journal.record_fills(buy)
    journal.record_fills(buy)  # the same fill twice is stored once
    journal.flush()
    (row,) = journal.query("SELECT * FROM orders WHERE client_id='s1b'")
    assert (row["state"], row["order_id"], D(row["paid_fee"])) == ("filled", "B-9", D(560))
    assert len(journal.query("SELECT * FROM fills")) == 1
    assert [o["client_id"] for o in journal.open_orders()] == ["s1s"]


def test_record_result_balances_and_incidents_are_stored(journal):
    journal.record_intent(make_signal("s1"), _legs(), {})
    journal.record_result("s1", "done", {"sent_ns": 10, "acked_ns": 20, "done_ns": 30},
                          D("5736.5"), D("1263.5"), D(0))
    journal.record_balances("upbit", {"KRW": Balance("KRW", D("1.5"), D("2"))}, "sync")
    journal.record_incident("leg_rejected", "insufficient funds", "s1", "critical")
    journal.flush()
    (sig,) = journal.query("SELECT status, realised_krw, acked_ns FROM signals")
    assert sig == {"status": "done", "realised_krw": "5736.5", "acked_ns": 20}
    (bal,) = journal.query("SELECT venue, currency, free, locked, source FROM balances")
    assert bal == {"venue": "upbit", "currency": "KRW", "free": "1.5", "locked": "2", "source": "sync"}
    (inc,) = journal.query("SELECT severity, kind, signal_id FROM incidents")
    assert inc == {"severity": "critical", "kind": "leg_rejected", "signal_id": "s1"}


def test_record_intent_with_duplicate_id_raises_and_loses_only_itself(journal):
    journal.record_intent(make_signal("s1"), _legs("s1"), {})
    journal.record_incident("note", "queued before the bad intent")
    with pytest.raises(JournalError):
        journal.record_intent(make_signal("s1"), _legs("s2"), {})
    journal.flush()
    assert len(journal.query("SELECT * FROM incidents")) == 1
    assert len(journal.query("SELECT * FROM orders")) == 2  # s2's legs went with the failed intent


def test_record_intent_with_journal_not_running_raises(tmp_path):
    with pytest.raises(JournalError):
        Journal(tmp_path / "j.sqlite").record_intent(make_signal(), _legs(), {})


def test_stop_writes_everything_queued_and_a_new_journal_sees_it(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    j.start()
    threads = [threading.Thread(target=lambda n=n: [j.record_incident("k", f"{n}-{i}") for i in range(50)],
                                name=f"w{n}") for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    j.stop()
    j2 = Journal(tmp_path / "j.sqlite")
    j2.start()
    try:
        assert j2.query("SELECT COUNT(*) AS n FROM incidents") == [{"n": 200}]
    finally:
        j2.stop()
