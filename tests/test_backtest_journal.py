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
