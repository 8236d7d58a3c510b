"""SQLite journal (WAL): signals with every stage's timestamp, orders, fills, balances, incidents.

One writer thread, ``journal``, owns the write connection and drains a queue, committing each
batch once, so nothing on the hot path waits for the disk, with one exception by design:
``record_intent`` (both legs, sizes, prices, client ids) is committed by the calling thread
before it returns, because the intent must be on disk before the first byte of an order is
sent; a crash after that leaves the ids behind for start-up reconciliation (``open_orders``).
The same holds for a venue's order id (``record_order_id``) and for the ``risk_events`` a
restart rebuilds its risk state from: every halt (``record_risk_event``), every operator resume
(``record_resume``: it clears the halts up to the id in its ``upto`` column, the ones the operator
was shown, never a later one) and every circuit-breaker trip and close (the row's ``wall_ns``);
and every coin transfer and transfer block (``commit_now``, ``karb.rebalance.records``).
It uses a connection of its own, and shares one Python lock with the writer's batches, so it
never meets SQLite's sleeping busy handler: measured ~60 us per intent here, against ~250 us
when handed to the writer thread and waited for. With WAL and ``synchronous=NORMAL`` a
commit survives a process crash without an fsync per commit.

Amounts are stored as TEXT so they come back as the exact ``Decimal`` that went in. Readers
(``open_orders``, ``query``) use their own connection; any thread may call them.
"""
from __future__ import annotations

import queue
import sqlite3
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

from loguru import logger

from karb.clock import Clock, SystemClock

SCHEMA = """
CREATE TABLE IF NOT EXISTS signals (
    id TEXT PRIMARY KEY, market TEXT, buy_venue TEXT, sell_venue TEXT, volume TEXT,
    buy_price TEXT, sell_price TEXT, buy_vwap REAL, sell_vwap REAL, gross_bps REAL,
    net_bps REAL, est_profit_krw TEXT,
    recv_ns INTEGER, signal_ns INTEGER, submit_ns INTEGER, sent_ns INTEGER, acked_ns INTEGER,
    done_ns INTEGER, wall_ns INTEGER,
    status TEXT, realised_krw TEXT, fees_krw TEXT, residual TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS orders (
    client_id TEXT PRIMARY KEY, signal_id TEXT, role TEXT, venue TEXT, market TEXT, side TEXT,
    order_type TEXT, tif TEXT, price TEXT, volume TEXT, funds TEXT, order_id TEXT, state TEXT,
    executed_volume TEXT, executed_funds TEXT, paid_fee TEXT, error TEXT,
    created_wall_ns INTEGER, updated_wall_ns INTEGER);
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT, venue TEXT, trade_id TEXT, price TEXT,
    volume TEXT, funds TEXT, wall_ns INTEGER, UNIQUE (venue, client_id, trade_id));
CREATE TABLE IF NOT EXISTS balances (
    id INTEGER PRIMARY KEY AUTOINCREMENT, wall_ns INTEGER, venue TEXT, currency TEXT,
    free TEXT, locked TEXT, source TEXT);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT, wall_ns INTEGER, severity TEXT, kind TEXT,
    signal_id TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS risk_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, wall_ns INTEGER, kind TEXT, reason TEXT, upto INTEGER);
CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY, asset TEXT, amount TEXT, from_venue TEXT, to_venue TEXT, net_type TEXT,
    address TEXT, secondary_address TEXT, is_test INTEGER, state TEXT, withdraw_uuid TEXT,
    txid TEXT, fee TEXT, error TEXT, overdue INTEGER DEFAULT 0, created_wall_ns INTEGER,
    updated_wall_ns INTEGER, arrived_wall_ns INTEGER);
CREATE TABLE IF NOT EXISTS transfer_blocks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, wall_ns INTEGER, asset TEXT, kind TEXT, reason TEXT);
CREATE INDEX IF NOT EXISTS orders_state ON orders (state);
CREATE INDEX IF NOT EXISTS signals_status ON signals (status);
CREATE INDEX IF NOT EXISTS signals_wall ON signals (wall_ns);
"""
# Journals written before fills were keyed on the venue's trade id: (client_id, price, volume,
# funds) was UNIQUE, which merged two identical executions of one order into one row.
MIGRATE_FILLS = """
ALTER TABLE fills RENAME TO fills_v1;
CREATE TABLE fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT, venue TEXT, trade_id TEXT, price TEXT,
    volume TEXT, funds TEXT, wall_ns INTEGER, UNIQUE (venue, client_id, trade_id));
INSERT INTO fills (client_id, venue, trade_id, price, volume, funds, wall_ns)
    SELECT client_id, venue, 'v1-' || id, price, volume, funds, wall_ns FROM fills_v1;
DROP TABLE fills_v1;
"""
# The last halt id resumes have cleared (a resume row from before ``upto`` clears all before it).
_CLEARED_UPTO = ("SELECT COALESCE(MAX(COALESCE(upto, id)), 0) AS upto FROM risk_events "
                 "WHERE kind = 'resume'")
OPEN_STATES = ("new", "sent", "acknowledged", "partially_filled", "unknown")
_STOP = object()


class JournalError(RuntimeError):
    """The journal could not write (disk full, locked, closed)."""


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class Journal:
    def __init__(self, path: str | Path, clock: Clock | None = None):
        self.path = Path(path)
        self.clock = clock or SystemClock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()  # the writer's batches vs. direct intent commits
        self._intent_conn: sqlite3.Connection | None = None
        self.written = 0
        self.errors = 0

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Create the file and tables, then start the ``journal`` writer thread."""
        self._reader = self._create()
        self._intent_conn = self._connect()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="journal", daemon=True)
        self._thread.start()
        ready.wait(5.0)

    def _create(self) -> sqlite3.Connection:
        """Create the file and its tables (migrating older journals); return the connection."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        columns = {row[1] for row in conn.execute("PRAGMA table_info(fills)")}
        if columns and "trade_id" not in columns:
            conn.executescript("BEGIN;" + MIGRATE_FILLS + "COMMIT;")
            logger.info("journal {}: fills table migrated to one row per venue trade", self.path)
        conn.executescript(SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(risk_events)")}
        if "upto" not in columns:  # journals from before resumes named the halts they clear
            conn.execute("ALTER TABLE risk_events ADD COLUMN upto INTEGER")
        conn.commit()
        return conn

    def stop(self, timeout: float = 5.0) -> None:
        """Write everything queued, then stop the writer."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("journal thread did not stop within {} s", timeout)
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._write_lock:
            if self._intent_conn is not None:
                self._intent_conn.close()
                self._intent_conn = None

    def flush(self, timeout: float = 5.0) -> None:
        """Block until everything queued so far is committed."""
        self._sync([], timeout)

    # --- writes (any thread) --------------------------------------------------------------
    def record_intent(self, signal, legs: Iterable, stages: dict[str, int],
                      timeout: float = 2.0) -> None:
        """Journal the trade and both legs, and return only once committed (``JournalError``)."""
        ops = [("INSERT INTO signals (id, market, buy_venue, sell_venue, volume, buy_price, "
                "sell_price, buy_vwap, sell_vwap, gross_bps, net_bps, est_profit_krw, recv_ns, "
                "signal_ns, submit_ns, wall_ns, status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (signal.id, signal.market, signal.buy_venue.value, signal.sell_venue.value,
                 str(signal.volume), str(signal.buy_price), str(signal.sell_price),
                 signal.buy_vwap, signal.sell_vwap, signal.gross_bps, signal.net_bps,
                 str(signal.est_profit_krw), stages.get("recv_ns"), signal.created_ns,
                 stages.get("submit_ns"), self.clock.wall_ns(), "sending"))]
        ops += [self._order_op(signal.id, leg) for leg in legs]
        self._commit_now(ops, timeout)

    def record_intent_order(self, signal_id: str, leg, timeout: float = 2.0) -> None:
        """Journal one more order of a trade (an unwind) and return once committed."""
        self._commit_now([self._order_op(signal_id, leg)], timeout)

    def record_order(self, signal_id: str, leg) -> None:
        """Insert or update one order row with the leg's current state and amounts."""
        self._enqueue([self._order_op(signal_id, leg)])

    def record_fills(self, leg) -> None:
        """One row per venue execution, keyed on its trade id (or, when the venue gives none,
        its position in the order's cumulative list): recording the same answer twice is a
        no-op, two identical executions are two rows."""
        now = self.clock.wall_ns()
        self._enqueue([
            ("INSERT OR IGNORE INTO fills (client_id, venue, trade_id, price, volume, funds, wall_ns) "
             "VALUES (?,?,?,?,?,?,?)",
             (leg.client_id, leg.request.venue.value, f.trade_id or f"#{n}", str(f.price),
              str(f.volume), str(f.funds), now))
            for n, f in enumerate(leg.fills)])

    def record_order_id(self, client_id: str, order_id: str, timeout: float = 1.0) -> None:
        """Commit the venue's id for an order journalled by its intent, as soon as it is known
        (clients without client-id lookups need it after a crash). ``JournalError``."""
        self._commit_now([("UPDATE orders SET order_id=? WHERE client_id=? AND order_id IS NULL",
                           (order_id, client_id))], timeout)

    def record_risk_event(self, kind: str, reason: str, timeout: float = 2.0) -> int:
        """Commit a ``halt``, ``breaker_open`` or ``breaker_closed`` now; return its id.
        ``JournalError``."""
        return self._commit_now([("INSERT INTO risk_events (wall_ns, kind, reason) VALUES (?,?,?)",
                                  (self.clock.wall_ns(), kind, reason))], timeout)

    def record_resume(self, reason: str, halts: list[dict[str, Any]], timeout: float = 2.0) -> int:
        """Commit an operator's resume of ``halts`` (rows ``active_halts`` returned): it clears
        those and nothing journalled after them. Return its id. ``JournalError``."""
        upto = max((h["id"] for h in halts), default=None)
        if upto is None:  # nothing shown: clear nothing a previous resume left active
            upto = self.query(_CLEARED_UPTO)[0]["upto"]
        return self._commit_now([(
            "INSERT INTO risk_events (wall_ns, kind, reason, upto) VALUES (?,?,?,?)",
            (self.clock.wall_ns(), "resume", reason, upto))], timeout)

    def record_result(self, signal_id: str, status: str, stages: dict[str, int],
                      realised: Decimal, fees: Decimal, residual: Decimal, detail: str = "") -> None:
        self._enqueue([(
            "UPDATE signals SET status=?, sent_ns=?, acked_ns=?, done_ns=?, realised_krw=?, "
            "fees_krw=?, residual=?, detail=? WHERE id=?",
            (status, stages.get("sent_ns"), stages.get("acked_ns"), stages.get("done_ns"),
             str(realised), str(fees), str(residual), detail, signal_id))])

    def record_balances(self, venue: str, balances: dict, source: str) -> None:
        now = self.clock.wall_ns()
        self._enqueue([
            ("INSERT INTO balances (wall_ns, venue, currency, free, locked, source) VALUES (?,?,?,?,?,?)",
             (now, venue, b.currency, str(b.free), str(b.locked), source))
            for b in balances.values()])

    def record_incident(self, kind: str, detail: str, signal_id: str | None = None,
                        severity: str = "warning") -> None:
        self._enqueue([(
            "INSERT INTO incidents (wall_ns, severity, kind, signal_id, detail) VALUES (?,?,?,?,?)",
            (self.clock.wall_ns(), severity, kind, signal_id, detail))])

    def commit_now(self, ops: list[tuple[str, tuple]], timeout: float = 2.0) -> int:
        """Commit ``(sql, params)`` statements now, from the calling thread, and return the last
        row id (``JournalError``): for modules that keep their own tables, such as
        ``karb.rebalance.records`` (``transfers``, ``transfer_blocks``: every withdrawal is on
        disk before it is sent)."""
        return self._commit_now(ops, timeout)

    # --- reads (any thread) --------------------------------------------------------------
    def open_orders(self) -> list[dict[str, Any]]:
        """Orders whose last journalled state is not final: reconcile these before trading."""
        marks = ",".join("?" * len(OPEN_STATES))
        return self.query(f"SELECT * FROM orders WHERE state IN ({marks}) ORDER BY created_wall_ns",
                          OPEN_STATES)

    def active_halts(self) -> list[dict[str, Any]]:
        """``halt`` rows no ``resume`` has cleared yet, oldest first."""
        return self.query(f"SELECT * FROM risk_events WHERE kind = 'halt' AND id > ({_CLEARED_UPTO}) "
                          "ORDER BY id")

    def resume_mark(self) -> tuple[int, int]:
        """(the last ``resume`` row's id, the last halt id resumes have cleared), 0 if none."""
        row = self.query(f"SELECT COALESCE(MAX(id), 0) AS id, ({_CLEARED_UPTO}) AS upto "
                         "FROM risk_events WHERE kind = 'resume'")[0]
        return row["id"], row["upto"]

    def first_balances(self) -> dict[str, dict[str, Decimal]]:
        """Each venue's first journalled balances (free): where inventory started."""
        rows = self.query("SELECT venue, currency, free FROM balances AS b WHERE wall_ns = "
                          "(SELECT MIN(wall_ns) FROM balances WHERE venue = b.venue) ORDER BY id")
        out: dict[str, dict[str, Decimal]] = {}
        for row in rows:
            out.setdefault(row["venue"], {})[row["currency"]] = Decimal(row["free"])
        return out

    def last_breaker_event(self) -> dict[str, Any] | None:
        """The last ``breaker_open`` or ``breaker_closed`` row (its ``wall_ns`` is when)."""
        rows = self.query("SELECT * FROM risk_events WHERE kind IN ('breaker_open', "
                          "'breaker_closed') ORDER BY id DESC LIMIT 1")
        return rows[0] if rows else None

    def query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        """Rows as dicts (tests, reports). Sees only committed data: ``flush()`` first."""
        with self._read_lock:
            conn = self._reader or self._connect()
            try:
                cursor = conn.execute(sql, params)
                names = [d[0] for d in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]
            finally:
                if conn is not self._reader:
                    conn.close()

    # --- internals ------------------------------------------------------------------------
    def _enqueue(self, ops: list) -> None:
        # written by the ``journal`` thread in its next batch; nobody waits
        self._queue.put(ops)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False,
                               isolation_level="DEFERRED")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _order_op(self, signal_id: str, leg) -> tuple[str, tuple]:
        r = leg.request
        now = self.clock.wall_ns()
        return (
            "INSERT INTO orders (client_id, signal_id, role, venue, market, side, order_type, tif, "
            "price, volume, funds, order_id, state, executed_volume, executed_funds, paid_fee, "
            "error, created_wall_ns, updated_wall_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(client_id) DO UPDATE SET order_id=excluded.order_id, state=excluded.state, "
            "executed_volume=excluded.executed_volume, executed_funds=excluded.executed_funds, "
            "paid_fee=excluded.paid_fee, error=excluded.error, updated_wall_ns=excluded.updated_wall_ns",
            (r.client_id, signal_id, leg.role, r.venue.value, r.market, r.side.name.lower(),
             r.order_type.value, r.tif.value, _text(r.price), _text(r.volume), _text(r.funds),
             leg.order_id, leg.state.value, str(leg.executed_volume), str(leg.executed_funds),
             str(leg.paid_fee), leg.error, now, now))

    def _commit_now(self, ops: list, timeout: float) -> int:
        # the calling thread commits ``ops`` itself (see the module docstring); returns the
        # last inserted row id
        if not self._write_lock.acquire(timeout=timeout):
            raise JournalError(f"journal busy for more than {timeout} s")
        try:
            conn = self._intent_conn
            if conn is None or self._thread is None or not self._thread.is_alive():
                raise JournalError("journal is not running")
            try:
                rowid = 0
                for sql, params in ops:
                    rowid = conn.execute(sql, params).lastrowid
                conn.commit()
                self.written += len(ops)
                return rowid
            except sqlite3.Error as exc:
                conn.rollback()
                self.errors += 1
                raise JournalError(f"journal write failed: {exc}") from exc
        finally:
            self._write_lock.release()

    def _sync(self, ops: list, timeout: float) -> None:
        if self._thread is None or not self._thread.is_alive():
            raise JournalError("journal is not running")
        done = threading.Event()
        box: list = []
        self._queue.put((ops, done, box))
        if not done.wait(timeout):
            raise JournalError(f"journal did not commit within {timeout} s")
        if box:
            raise JournalError(f"journal write failed: {box[0]}")

    def _run(self, ready: threading.Event) -> None:
        conn = self._connect()
        ready.set()
        try:
            while True:
                items = [self._queue.get()]
                while True:  # batch whatever else is already waiting into one commit
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(item is _STOP for item in items)
                with self._write_lock:
                    self._write(conn, [i for i in items if i is not _STOP])
                if stop:
                    return
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, items: list) -> None:
        # One commit for the whole batch; if it fails, redo item by item so one bad row
        # loses only itself, and tell a waiting ``_sync`` caller whether its rows made it.
        try:
            rows = sum(self._execute(conn, item) for item in items)
            conn.commit()
            self.written += rows
            failed: dict[int, Exception] = {}
        except sqlite3.Error:
            conn.rollback()
            failed = {}
            for n, item in enumerate(items):
                try:
                    rows = self._execute(conn, item)
                    conn.commit()
                    self.written += rows
                except sqlite3.Error as exc:
                    conn.rollback()
                    failed[n] = exc
                    self.errors += 1
                    logger.error("journal write failed, row lost: {}", exc)
        for n, item in enumerate(items):
            if isinstance(item, tuple):  # (ops, done, box) from _sync
                if n in failed:
                    item[2].append(failed[n])
                item[1].set()

    def _execute(self, conn: sqlite3.Connection, item) -> int:
        ops = item[0] if isinstance(item, tuple) else item
        for sql, params in ops:
            conn.execute(sql, params)
        return len(ops)
