"""The backtest's inline journal: the live journal's rows, on the calling thread."""
import sqlite3

import pytest

from karb.backtest.journal import InlineJournal
from karb.journal import JournalError


def test_inline_journal_reads_its_own_rows_and_a_failed_call_loses_only_its_rows(tmp_path):
    journal = InlineJournal(tmp_path / "journal.sqlite")
    journal.start()
    journal.record_incident("a", "first")
    with pytest.raises(JournalError):  # the second statement fails: the whole call is undone
        journal.commit_now([("INSERT INTO incidents (kind, detail) VALUES (?, ?)", ("b", "lost")),
                            ("INSERT INTO no_such_table VALUES (1)", ())])
    journal.record_incident("c", "third")
    assert [r["kind"] for r in journal.query("SELECT kind FROM incidents ORDER BY id")] == ["a", "c"]
    assert journal.errors == 1
    journal.stop()
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:  # committed at stop, a normal file
        assert [k for (k,) in db.execute("SELECT kind FROM incidents ORDER BY id")] == ["a", "c"]
    with pytest.raises(JournalError):
        journal.record_risk_event("halt", "after stop")


def test_an_oracle_run_keeps_its_trades_outcomes_and_drops_the_per_order_rows(tmp_path):
    # the oracle runs' journal: two statements per trade; the summary read from it is the same
    from karb.backtest.run import BacktestOptions, _simulate, oracle_config, start_balances
    from tests.test_backtest import _config

    config = oracle_config(_config(tmp_path))
    options = BacktestOptions(days=300 / 86400, oracle=False, parallel=False)
    start = start_balances(config, options)
    full = _simulate(config, options, tmp_path / "full.sqlite", None, "oracle", start)
    lean = _simulate(config, options, tmp_path / "lean.sqlite", None, "oracle", start, oracle=True)
    assert full.summary["trades"] > 0
    assert (lean.summary["pnl_krw"], lean.summary["trades"], lean.summary["fees_krw"]) == (
        full.summary["pnl_krw"], full.summary["trades"], full.summary["fees_krw"])
    assert {m: (v["pnl_krw"], v["trades"]) for m, v in lean.per_market.items()} == {
        m: (v["pnl_krw"], v["trades"]) for m, v in full.per_market.items()}
    with sqlite3.connect(tmp_path / "lean.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM fills").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM signals WHERE status IS NOT NULL").fetchone()[0] \
            == full.summary["trades"]
    with sqlite3.connect(tmp_path / "full.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM fills").fetchone()[0] > 0


def test_a_single_statement_that_fails_loses_only_itself(tmp_path):
    journal = InlineJournal(tmp_path / "journal.sqlite")
    journal.start()
    journal.record_incident("a", "first")
    with pytest.raises(JournalError):
        journal.commit_now([("INSERT INTO no_such_table VALUES (1)", ())])
    journal.record_incident("b", "second")
    assert [r["kind"] for r in journal.query("SELECT kind FROM incidents ORDER BY id")] == ["a", "b"]
    journal.stop()
