"""The one way coin leaves a venue: checked, journalled, sent once, followed until it arrives.

``TransferExecutor.submit(intent)`` refuses (``TransferRefused``, before any request and
without a journal row) unless all of these hold: withdrawals are enabled
(``auto_transfer_refusal``: ``rebalance.mode: auto``, and for real venues ``mode: live`` plus
``--live``; the engine passes its answer as ``disabled_reason``); the asset is not blocked and has no transfer still open; the destination is in
``rebalance.whitelist`` for that venue, asset and network; the amount is within
``max_transfer`` and, with what the journal shows withdrawn over the last 24 hours, within
``daily_cap``. To an address no transfer has arrived at yet, only ``test_amount`` is sent (the
returned ``Transfer`` says ``is_test``): the planner sends the rest once that arrived.

Then the transfer's row is committed with its own id, and only then is the withdrawal sent. The
venues take no client identifier for withdrawals, so an answer lost to a timeout
(``OrderStateUnknown``) leaves the row ``unknown`` and the withdrawal is looked up in the venue's
list (same asset, network and amount, created from ``lookup_window_s`` before the request on,
not already claimed by another row), never sent again; until it is found the asset has a
transfer open and nothing more of it is sent. A refusal marks the row ``failed`` and re-raises
the venue's typed error.

``poll()`` (the rebalancer thread calls it; so may tests) follows every open transfer: the
sending venue's withdrawal to ``DONE`` (its txid) or to a failure, then the receiving venue's
deposit with that txid to credited (``arrived``). One not arrived within ``arrival_s`` of its
network is marked overdue, raises a ``transfer_overdue`` alert and blocks the asset until an
operator runs ``clear_block`` (journalled; both survive a restart, as do the daily cap and the
open transfers, which all come from the journal).
"""
from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Callable, Mapping, Protocol, Sequence

from loguru import logger

from karb.alerts import Alert
from karb.clock import NS_PER_S, Clock
from karb.exchanges.errors import OrderStateUnknown, VenueError
from karb.exchanges.wallet import Deposit, Withdrawal
from karb.journal import Journal
from karb.model import Venue
from karb.rebalance.config import RebalanceConfig
from karb.rebalance.records import Transfer, TransferRecords

DAY_NS = 86_400 * NS_PER_S


class WalletClient(Protocol):
    """What the executor needs of a venue client (``UpbitClient``, ``BithumbClient``)."""

    venue: Venue

    def withdraw_coin(self, currency: str, net_type: str, amount: Decimal, address: str, *,
                      secondary_address: str | None = None, client_id: str | None = None) -> Withdrawal: ...

    def get_withdraw(self, uuid: str | None = None, txid: str | None = None) -> Withdrawal: ...

    def get_withdraws(self, currency: str | None = None, *, uuids: Sequence[str] = ()) -> list[Withdrawal]: ...

    def get_deposits(self, currency: str | None = None, *, txids: Sequence[str] = ()) -> list[Deposit]: ...


@dataclass(frozen=True)
class TransferIntent:
    asset: str
    amount: Decimal  # coin to arrive; the network fee comes on top
    from_venue: Venue
    to_venue: Venue
    net_type: str


class TransferRefused(Exception):
    """Not sent, nothing journalled. ``reason``: disabled | blocked | open | same_venue | amount |
    not_whitelisted | no_cap | over_cap | daily_cap | untested_address."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def auto_transfer_refusal(rebalance_mode: str, run_mode: str) -> str | None:
    """Why withdrawals may not be sent, or None when they may. ``run_mode`` is the engine's
    resolved mode (``karb.commands.run``): ``live`` only with ``mode: live`` in the config and
    ``--live`` on the command line, ``sim`` on the loopback sim's paper accounts, else
    ``dry_run``. Withdrawals need ``rebalance.mode: auto`` and a ``live`` or ``sim`` run."""
    if rebalance_mode != "auto":
        return "rebalance.mode is plan: transfers are proposed, never sent"
    if run_mode not in ("live", "sim"):
        return "a dry run never withdraws: live withdrawals need mode: live and --live as well as rebalance.mode: auto"
    return None


class TransferExecutor:
    """Sends and follows transfers (module docstring). Not thread-safe: one caller at a time
    (the rebalancer thread)."""

    def __init__(self, config: RebalanceConfig, clients: Mapping[Venue, WalletClient], journal: Journal, *,
                 clock: Clock, disabled_reason: str | None = None,
                 notify: Callable[[Alert], None] = lambda alert: None):
        self.config = config
        self.clients = clients
        self.records = TransferRecords(journal, clock)
        self.clock = clock
        self.disabled_reason = disabled_reason
        self.notify = notify

    # --- sending --------------------------------------------------------------------------
    def submit(self, intent: TransferIntent) -> Transfer:
        """Check, journal, send once; return the journalled transfer (``sent``, or ``unknown``
        when the answer was lost and the look-up has not found it yet). Raises
        ``TransferRefused`` (nothing sent), the venue's ``VenueError`` (refused: row ``failed``)
        or ``JournalError`` (nothing sent)."""
        amount, is_test, dest = self._check(intent)
        transfer = Transfer(f"tr-{uuidlib.uuid4().hex}", intent.asset, amount, intent.from_venue, intent.to_venue,
                            intent.net_type, dest.address, dest.secondary_address, is_test, "intent", None,
                            None, None, None, False, self.clock.wall_ns(), None)
        self.records.add(transfer)  # on disk before a byte is sent
        logger.info("transfer {}: {} {} {} -> {} ({}){}", transfer.id, amount, intent.asset, intent.from_venue.value,
                    intent.to_venue.value, intent.net_type, " [test transfer to a new address]" if is_test else "")
        try:
            w = self.clients[intent.from_venue].withdraw_coin(intent.asset, intent.net_type, amount, dest.address,
                                                               secondary_address=dest.secondary_address,
                                                               client_id=transfer.id)
        except OrderStateUnknown as exc:
            self.records.update(transfer.id, state="unknown", error=f"answer lost: {exc.venue_message}")
            self.notify(Alert("transfer_unknown", intent.asset, f"transfer {transfer.id} of {amount} {intent.asset}: "
                              "the venue's answer was lost; looking it up (never re-sent)", "warning"))
            return self._look_up(self.records.get(transfer.id))
        except VenueError as exc:
            self.records.update(transfer.id, state="failed", error=f"{exc.code}: {exc.venue_message}")
            self.notify(Alert("transfer_failed", intent.asset, f"transfer of {amount} {intent.asset} from "
                              f"{intent.from_venue.value} refused: {exc}", "warning"))
            raise
        return self.records.update(transfer.id, state="sent", withdraw_uuid=w.uuid, fee=w.fee, txid=w.txid)

    def _check(self, intent: TransferIntent):
        asset, cfg = intent.asset, self.config
        if self.disabled_reason:
            raise TransferRefused("disabled", self.disabled_reason)
        blocked = self.records.blocks().get(asset)
        if blocked:
            raise TransferRefused("blocked", f"{asset} transfers blocked until an operator clears them: {blocked}")
        if self.records.open_transfers(asset):
            raise TransferRefused("open", f"a {asset} transfer is still open")
        if intent.from_venue is intent.to_venue:
            raise TransferRefused("same_venue", "a transfer needs two different venues")
        if not intent.amount > 0:
            raise TransferRefused("amount", f"amount must be above zero, was {intent.amount}")
        dest = cfg.destination(intent.to_venue, asset, intent.net_type)
        if dest is None:
            raise TransferRefused("not_whitelisted", f"no rebalance.whitelist.{intent.to_venue.value}.{asset}."
                                  f"{intent.net_type} address: {asset} is never sent there")
        cap, daily = cfg.max_transfer.get(asset), cfg.daily_cap.get(asset)
        if cap is None or daily is None:
            raise TransferRefused("no_cap", f"rebalance.max_transfer.{asset} and rebalance.daily_cap.{asset} "
                                  "must both be set before any is sent")
        amount, is_test = intent.amount, False
        if not self.records.proven(intent.to_venue, asset, intent.net_type, dest.address):
            test = cfg.test_amount.get(asset)
            if test is None:
                raise TransferRefused("untested_address", f"{dest.address} has had no transfer arrive and "
                                      f"rebalance.test_amount.{asset} is not set")
            amount, is_test = min(amount, test), True
        if amount > cap:
            raise TransferRefused("over_cap", f"{amount} {asset} is above rebalance.max_transfer.{asset} {cap}")
        sent = self.records.sent_since(asset, self.clock.wall_ns() - DAY_NS)
        if sent + amount > daily:
            raise TransferRefused("daily_cap", f"{sent} {asset} sent in the last 24 h; {amount} more would pass "
                                  f"rebalance.daily_cap.{asset} {daily}")
        return amount, is_test, dest

    # --- following ---------------------------------------------------------------------------
    def poll(self) -> list[Transfer]:
        """Advance every open transfer as far as the venues' answers allow; return them."""
        out = []
        for t in self.records.open_transfers():
            try:
                t = self._advance(t)
            except VenueError as exc:  # a read failed: try again next poll
                logger.warning("transfer {}: could not read its state ({})", t.id, exc)
            out.append(self._check_overdue(t))
        return out

    def _advance(self, t: Transfer) -> Transfer:
        if t.state in ("intent", "unknown"):  # intent: a crash between the journal and the answer
            t = self._look_up(t)
            if t.state in ("intent", "unknown"):
                return t
        if t.state == "sent":
            w = self.clients[t.from_venue].get_withdraw(uuid=t.withdraw_uuid)
            if w.is_failed:
                self.notify(Alert("transfer_failed", t.asset, f"transfer {t.id}: {t.from_venue.value} says "
                                  f"{w.state}; nothing left the account", "warning"))
                return self.records.update(t.id, state="failed", error=f"venue state {w.state}")
            if not w.is_done:
                return t
            t = self.records.update(t.id, state="withdrawn", txid=w.txid, fee=w.fee)
        if t.state == "withdrawn" and t.txid:
            deposits = self.clients[t.to_venue].get_deposits(t.asset, txids=[t.txid])
            if any(d.is_credited and d.txid == t.txid for d in deposits):
                logger.info("transfer {}: {} {} arrived on {}", t.id, t.amount, t.asset, t.to_venue.value)
                return self.records.update(t.id, state="arrived", arrived_wall_ns=self.clock.wall_ns())
        return t

    def _look_up(self, t: Transfer) -> Transfer:
        """Find the venue's record of a withdrawal whose answer was lost (never re-send it)."""
        claimed = self.records.claimed_uuids(t.from_venue)
        since_ns = t.created_wall_ns - int(self.config.lookup_window_s * NS_PER_S)
        try:
            candidates = [w for w in self.clients[t.from_venue].get_withdraws(t.asset)
                          if w.uuid not in claimed and w.amount == t.amount
                          and (w.net_type in (None, t.net_type)) and _created_ns(w) >= since_ns]
        except VenueError as exc:
            logger.warning("transfer {}: look-up failed ({}); trying again next poll", t.id, exc)
            return t
        if not candidates:
            if t.state == "intent":
                return self.records.update(t.id, state="unknown", error="no answer recorded before a restart")
            return t
        w = min(candidates, key=_created_ns)
        logger.info("transfer {}: found as {} withdrawal {} ({})", t.id, t.from_venue.value, w.uuid, w.state)
        return self.records.update(t.id, state="sent", withdraw_uuid=w.uuid, fee=w.fee, txid=w.txid, error=None)

    def _check_overdue(self, t: Transfer) -> Transfer:
        limit_ns = int(self.config.arrival_for(t.net_type) * NS_PER_S)
        if not t.is_open or t.overdue or self.clock.wall_ns() - t.created_wall_ns <= limit_ns:
            return t
        reason = (f"transfer {t.id} of {t.amount} {t.asset} {t.from_venue.value} -> {t.to_venue.value} "
                  f"({t.net_type}) not arrived after {self.config.arrival_for(t.net_type):g} s (state {t.state})")
        self.records.block(t.asset, reason)
        self.notify(Alert("transfer_overdue", t.asset, f"{reason}; {t.asset} transfers blocked until an operator "
                          "checks both venues and clears it"))
        logger.error("{}; {} transfers blocked", reason, t.asset)
        return self.records.update(t.id, overdue=1)

    # --- operator ---------------------------------------------------------------------------
    def blocked_assets(self) -> dict[str, str]:
        return self.records.blocks()

    def clear_block(self, asset: str, reason: str) -> None:
        """An operator checked ``asset`` on both venues (``TransferRecords.clear_block``;
        ``karb transfers --clear ASSET`` does the same without an engine)."""
        self.records.clear_block(asset, reason)
        logger.warning("{} transfers unblocked by operator: {}", asset, reason)


def _created_ns(w: Withdrawal) -> int:
    if not w.created_at:
        return 0
    return int(datetime.fromisoformat(w.created_at).timestamp() * NS_PER_S)
