"""Deposits and withdrawals as both venues report them (Upbit and Bithumb 2.0 share the shapes).

Parsers for ``POST /v1/withdraws/coin`` / ``GET /v1/withdraw(s)`` (``Withdrawal``), ``GET
/v1/deposits`` (``Deposit``), ``GET /v1/status/wallet`` (``WalletStatus``) and ``GET
/v1/withdraws/chance`` (``WithdrawChance``); field lists in ``karb.sim.rest_wallet``. States are
compared case-insensitively: Upbit's current docs write ``DONE``/``CANCELLED``, older answers
``done``/``canceled``, and Bithumb prefixes deposit states (``DEPOSIT_ACCEPTED``).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from karb.model import Venue

# A withdrawal in one of these moved nothing (the venue gives the coin back).
WITHDRAW_FAILED = frozenset({"failed", "cancelled", "canceled", "rejected"})
WITHDRAW_DONE = frozenset({"done"})
DEPOSIT_CREDITED = frozenset({"accepted", "deposit_accepted"})
DEPOSIT_FAILED = frozenset({"cancelled", "canceled", "rejected", "deposit_cancelled", "refunded",
                            "refunding"})


@dataclass(frozen=True)
class Withdrawal:
    venue: Venue
    uuid: str
    currency: str
    net_type: str | None
    amount: Decimal
    fee: Decimal
    state: str  # the venue's word, as sent
    txid: str | None = None
    created_at: str | None = None
    done_at: str | None = None

    @property
    def is_done(self) -> bool:
        """The venue sent it (the coin is on its way, or arrived)."""
        return self.state.lower() in WITHDRAW_DONE

    @property
    def is_failed(self) -> bool:
        """Failed, cancelled or rejected: nothing left the account."""
        return self.state.lower() in WITHDRAW_FAILED


@dataclass(frozen=True)
class Deposit:
    venue: Venue
    uuid: str
    currency: str
    net_type: str | None
    amount: Decimal
    state: str
    txid: str | None = None
    created_at: str | None = None
    done_at: str | None = None

    @property
    def is_credited(self) -> bool:
        return self.state.lower() in DEPOSIT_CREDITED


@dataclass(frozen=True)
class WalletStatus:
    currency: str
    net_type: str | None
    wallet_state: str  # working | withdraw_only | deposit_only | paused (| unsupported)
    block_state: str | None  # normal | delayed | inactive

    @property
    def can_withdraw(self) -> bool:
        return self.wallet_state in ("working", "withdraw_only") and self.block_state != "inactive"

    @property
    def can_deposit(self) -> bool:
        return self.wallet_state in ("working", "deposit_only") and self.block_state != "inactive"


@dataclass(frozen=True)
class WithdrawChance:
    currency: str
    fee: Decimal
    minimum: Decimal | None
    can_withdraw: bool
    wallet_state: str | None
    wallet_locked: bool
    free: Decimal | None = None
    remaining_daily: Decimal | None = None


def _dec(value: Any) -> Decimal | None:
    return None if value in (None, "") else Decimal(str(value))


def parse_withdrawal(venue: Venue, body: dict) -> Withdrawal:
    return Withdrawal(venue, str(body["uuid"]), str(body["currency"]), body.get("net_type"),
                      Decimal(str(body["amount"])), _dec(body.get("fee")) or Decimal(0), str(body["state"]),
                      body.get("txid"), body.get("created_at"), body.get("done_at"))


def parse_deposit(venue: Venue, body: dict) -> Deposit:
    return Deposit(venue, str(body["uuid"]), str(body["currency"]), body.get("net_type"),
                   Decimal(str(body["amount"])), str(body["state"]), body.get("txid"),
                   body.get("created_at"), body.get("done_at"))


def parse_wallet_status(body: list) -> list[WalletStatus]:
    return [WalletStatus(str(e["currency"]), e.get("net_type"), str(e["wallet_state"]), e.get("block_state"))
            for e in body]


def parse_chance(body: dict) -> WithdrawChance:
    currency, limit = body["currency"], body.get("withdraw_limit") or {}
    account, member = body.get("account") or {}, body.get("member_level") or {}
    return WithdrawChance(str(currency["code"]), Decimal(str(currency["withdraw_fee"])), _dec(limit.get("minimum")),
                          bool(limit.get("can_withdraw", True)), currency.get("wallet_state"),
                          bool(member.get("wallet_locked", False)), _dec(account.get("balance")),
                          _dec(limit.get("remaining_daily")))
