"""The backtest's journal: the engine's tables and rows, written on the backtest's one thread.

A backtest is one thread on a virtual clock and is rerun, never recovered after a crash, so it
needs neither of the live journal's costly guarantees: the intent committed before a leg is sent
(a commit per trade, taken in turn with the writer thread's batches) and the ``journal`` writer
thread that keeps the disk off the hot path. ``InlineJournal`` writes every row on the calling
thread into one connection, inside one transaction committed every ``COMMIT_EVERY`` statements
and at ``stop``; reads on that connection see every row written so far. The rows and the schema
are the live journal's, so ``karb report`` reads the file exactly like a live one. A statement
that fails loses only its own call's rows (a savepoint per call of several statements), as in
the live journal.
"""
from __future__ import annotations

import sqlite3
from typing import Any

from loguru import logger

from karb.journal import Journal, JournalError


CACHE_KIB = 65_536


class InlineJournal(Journal):
    """``outcomes_only`` (the oracle runs, read for their trades' outcomes only): drop the
    per-order rows (orders, fills, incidents), keep every other table. Two statements per
    trade instead of about nine; nothing a run reads back during the run is dropped
    (recovery's order look-ups happen only at start-up, on an empty journal)."""

    COMMIT_EVERY = 20_000  # statements per commit (a 7-day run writes a few million)
    ORDER_DETAIL = ("INSERT INTO orders", "UPDATE orders", "INSERT OR IGNORE INTO fills",
                    "INSERT INTO incidents")

    def __init__(self, path, clock=None, outcomes_only: bool = False):
        super().__init__(path, clock)
        self.outcomes_only = outcomes_only

    def start(self) -> None:
        self._conn: sqlite3.Connection | None = self._create()
        # a crash loses a rerunnable backtest only: no fsync, the rollback journal in memory;
        # and a 64 MB page cache, since every trade inserts at random places in the id indexes
        # (measured with this schema at 200,000 trades: ~240 -> ~140 us of SQL per trade)
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.execute("PRAGMA journal_mode=MEMORY")
        self._conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._pending = 0

    def stop(self, timeout: float = 5.0) -> None:
        if self._conn is not None:
            self._conn.commit()
            self._conn.close()
            self._conn = None

    def flush(self, timeout: float = 5.0) -> None:
        if self._conn is not None:
            self._conn.commit()

    def query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        cursor = self._live().execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def _enqueue(self, ops: list) -> None:
        try:
            self._commit_now(ops, 0.0)
        except JournalError as exc:  # as the live writer thread does: log, count, go on
            logger.error("journal write failed, row lost: {}", exc)

    def _sync(self, ops: list, timeout: float) -> None:
        self._commit_now(ops, timeout)

    def _commit_now(self, ops: list, timeout: float) -> int:
        conn = self._live()
        if self.outcomes_only:
            ops = [op for op in ops if not op[0].startswith(self.ORDER_DETAIL)]
            if not ops:
                return 0
        if not conn.in_transaction:
            conn.execute("BEGIN")
        if len(ops) == 1:  # one statement is atomic by itself (SQLite's ABORT undoes only it)
            try:
                rowid = conn.execute(*ops[0]).lastrowid
            except sqlite3.Error as exc:
                self.errors += 1
                raise JournalError(f"journal write failed: {exc}") from exc
            return self._written(conn, 1, rowid)
        conn.execute("SAVEPOINT call")
        try:
            rowid = 0
            for sql, params in ops:
                rowid = conn.execute(sql, params).lastrowid
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK TO call")
            conn.execute("RELEASE call")
            self.errors += 1
            raise JournalError(f"journal write failed: {exc}") from exc
        conn.execute("RELEASE call")
        return self._written(conn, len(ops), rowid)

    def _written(self, conn: sqlite3.Connection, n: int, rowid: int) -> int:
        self.written += n
        self._pending += n
        if self._pending >= self.COMMIT_EVERY:
            conn.commit()
            self._pending = 0
        return rowid

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError("journal is not running")
        return self._conn
