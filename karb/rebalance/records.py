"""Coin transfers and transfer blocks in the journal (tables ``transfers``, ``transfer_blocks``).

Every write is committed by the calling thread before it returns (``Journal.commit_now``): a
withdrawal's row exists before its request is sent, so after a crash it is looked up, never sent
again. Transfer states:

    intent -> sent -> withdrawn -> arrived          (the normal path)
    intent -> failed                                (the venue refused: nothing left)
    intent -> unknown -> sent ...                   (answer lost, then found by look-up)
    any open state -> abandoned                     (an operator cleared the asset's block)

``overdue`` is set once a transfer has not arrived within its expected time; the asset is then
blocked (a ``block`` row) until an operator's ``clear`` row.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from karb.clock import Clock
from karb.journal import Journal
from karb.model import Venue

OPEN_STATES = ("intent", "unknown", "sent", "withdrawn")
NOT_COUNTED = ("failed",)  # withdrawn amounts the daily cap does not count: nothing left


@dataclass(frozen=True)
class Transfer:
    """One journalled transfer (``id`` is the client-side identifier)."""

    id: str
    asset: str
    amount: Decimal
    from_venue: Venue
    to_venue: Venue
    net_type: str
    address: str
    secondary_address: str | None
    is_test: bool
    state: str
    withdraw_uuid: str | None
    txid: str | None
    fee: Decimal | None
    error: str | None
    overdue: bool
    created_wall_ns: int
    arrived_wall_ns: int | None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


def _transfer(row: dict[str, Any]) -> Transfer:
    return Transfer(row["id"], row["asset"], Decimal(row["amount"]), Venue(row["from_venue"]), Venue(row["to_venue"]),
                    row["net_type"], row["address"], row["secondary_address"], bool(row["is_test"]), row["state"],
                    row["withdraw_uuid"], row["txid"], Decimal(row["fee"]) if row["fee"] is not None else None,
                    row["error"], bool(row["overdue"]), row["created_wall_ns"], row["arrived_wall_ns"])


class TransferRecords:
    """Reads and writes of the two tables; any thread."""

    def __init__(self, journal: Journal, clock: Clock):
        self.journal = journal
        self.clock = clock

    def add(self, t: Transfer) -> None:
        self.journal.commit_now([(
            "INSERT INTO transfers (id, asset, amount, from_venue, to_venue, net_type, address, "
            "secondary_address, is_test, state, created_wall_ns, updated_wall_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (t.id, t.asset, str(t.amount), t.from_venue.value, t.to_venue.value, t.net_type, t.address,
             t.secondary_address, int(t.is_test), t.state, t.created_wall_ns, t.created_wall_ns))])

    def update(self, transfer_id: str, **fields: Any) -> Transfer:
        """Set columns (``state``, ``withdraw_uuid``, ``txid``, ``fee``, ``error``, ``overdue``,
        ``arrived_wall_ns``) and return the row as it now is."""
        values = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in fields.items()}
        values["updated_wall_ns"] = self.clock.wall_ns()
        assignments = ", ".join(f"{k}=?" for k in values)
        self.journal.commit_now([(f"UPDATE transfers SET {assignments} WHERE id=?",
                                  (*values.values(), transfer_id))])
        return self.get(transfer_id)

    def get(self, transfer_id: str) -> Transfer:
        (row,) = self.journal.query("SELECT * FROM transfers WHERE id=?", (transfer_id,))
        return _transfer(row)

    def open_transfers(self, asset: str | None = None) -> list[Transfer]:
        marks = ",".join("?" * len(OPEN_STATES))
        rows = self.journal.query(f"SELECT * FROM transfers WHERE state IN ({marks}) ORDER BY created_wall_ns",
                                  OPEN_STATES)
        return [t for t in map(_transfer, rows) if asset is None or t.asset == asset]

    def sent_since(self, asset: str, since_wall_ns: int) -> Decimal:
        """Coin of ``asset`` withdrawn (or possibly withdrawn) since ``since_wall_ns``."""
        marks = ",".join("?" * len(NOT_COUNTED))
        rows = self.journal.query(f"SELECT amount FROM transfers WHERE asset=? AND created_wall_ns>=? "
                                  f"AND state NOT IN ({marks})", (asset, since_wall_ns, *NOT_COUNTED))
        return sum((Decimal(r["amount"]) for r in rows), Decimal(0))

    def proven(self, to_venue: Venue, asset: str, net_type: str, address: str) -> bool:
        """Has a transfer to this address ever arrived?"""
        return bool(self.journal.query(
            "SELECT 1 FROM transfers WHERE to_venue=? AND asset=? AND net_type=? AND address=? "
            "AND state='arrived' LIMIT 1", (to_venue.value, asset, net_type, address)))

    def claimed_uuids(self, venue: Venue) -> set[str]:
        rows = self.journal.query("SELECT withdraw_uuid FROM transfers WHERE from_venue=? AND "
                                  "withdraw_uuid IS NOT NULL", (venue.value,))
        return {r["withdraw_uuid"] for r in rows}

    # --- blocks ----------------------------------------------------------------------------
    def block(self, asset: str, reason: str) -> None:
        self._block_row(asset, "block", reason)

    def clear_block(self, asset: str, reason: str) -> list[Transfer]:
        """An operator checked ``asset`` on both venues: close its open transfers as
        ``abandoned`` (their coin is wherever the balances now say) and unblock it. Return
        the transfers closed."""
        closed = [self.update(t.id, state="abandoned", error=f"closed by operator: {reason}")
                  for t in self.open_transfers(asset)]
        self._block_row(asset, "clear", reason)
        return closed

    def _block_row(self, asset: str, kind: str, reason: str) -> None:
        self.journal.commit_now([("INSERT INTO transfer_blocks (wall_ns, asset, kind, reason) VALUES (?,?,?,?)",
                                  (self.clock.wall_ns(), asset, kind, reason))])

    def blocks(self) -> dict[str, str]:
        """Blocked assets and why: those whose last block row is a ``block``."""
        rows = self.journal.query("SELECT asset, kind, reason FROM transfer_blocks WHERE id IN "
                                  "(SELECT MAX(id) FROM transfer_blocks GROUP BY asset)")
        return {r["asset"]: r["reason"] for r in rows if r["kind"] == "block"}
