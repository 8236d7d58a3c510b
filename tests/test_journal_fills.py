"""Fills keyed on the venue's trade id: identical executions stay two rows; old journals migrate."""
import sqlite3
from decimal import Decimal as D

from karb.exchanges.upbit.parse import parse_order
from karb.journal import Journal
from karb.legs import Leg
from karb.model import (Fill, OrderRequest, OrderResult, OrderStatus, OrderType, Side, TimeInForce,
                        Venue)


def _leg(fills):
    leg = Leg("buy", OrderRequest(Venue.UPBIT, "KRW-BTC", Side.BUY, OrderType.LIMIT, "s1b",
                                  price=D("140000000"), volume=D("0.02"), tif=TimeInForce.IOC))
    leg.mark_sent(1)
    leg.apply(OrderResult(Venue.UPBIT, "KRW-BTC", "U-1", "s1b", Side.BUY, OrderType.LIMIT,
                          OrderStatus.DONE, executed_volume=D("0.02"), executed_funds=D("2800000"),
                          fills=tuple(fills)))
    return leg


def test_fills_with_two_identical_executions_keep_both_rows(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    journal.start()
    try:
        same = (D("140000000"), D("0.01"), D("1400000"))
        leg = _leg([Fill(*same, "t-1"), Fill(*same, "t-2")])
        journal.record_fills(leg)
        journal.record_fills(leg)  # the same answer again adds nothing
        journal.flush()
        rows = journal.query("SELECT trade_id, volume FROM fills ORDER BY trade_id")
        assert rows == [{"trade_id": "t-1", "volume": "0.01"}, {"trade_id": "t-2", "volume": "0.01"}]
    finally:
        journal.stop()


def test_fills_without_a_venue_trade_id_are_keyed_by_position(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    journal.start()
    try:
        same = (D("140000000"), D("0.01"), D("1400000"))
        journal.record_fills(_leg([Fill(*same), Fill(*same)]))
        journal.flush()
        assert len(journal.query("SELECT * FROM fills")) == 2
    finally:
        journal.stop()


def test_upbit_order_trades_carry_their_uuid_as_trade_id():
    body = {"uuid": "o-1", "side": "bid", "ord_type": "limit", "price": "100", "state": "done",
            "market": "KRW-BTC", "volume": "2", "remaining_volume": "0", "executed_volume": "2",
            "trades": [{"uuid": "t-a", "price": "100", "volume": "1", "funds": "100"},
                       {"uuid": "t-b", "price": "100", "volume": "1", "funds": "100"}]}
    result = parse_order(Venue.UPBIT, body)
    assert [f.trade_id for f in result.fills] == ["t-a", "t-b"]


def test_journal_with_old_fills_table_is_migrated_keeping_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE fills (id INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT, venue TEXT,
            price TEXT, volume TEXT, funds TEXT, wall_ns INTEGER,
            UNIQUE (client_id, price, volume, funds));
        INSERT INTO fills (client_id, venue, price, volume, funds, wall_ns)
            VALUES ('a', 'upbit', '1', '1', '1', 5);
    """)
    conn.commit()
    conn.close()
    journal = Journal(path)
    journal.start()
    try:
        same = (D("140000000"), D("0.01"), D("1400000"))
        journal.record_fills(_leg([Fill(*same, "t-1"), Fill(*same, "t-2")]))
        journal.flush()
        rows = journal.query("SELECT client_id, trade_id FROM fills ORDER BY id")
        assert rows == [{"client_id": "a", "trade_id": "v1-1"}, {"client_id": "s1b", "trade_id": "t-1"},
                        {"client_id": "s1b", "trade_id": "t-2"}]
    finally:
        journal.stop()
