"""Coin transfers between the two simulated venues: deposit addresses, withdrawals, deposits.

One ``SimWallet`` is shared by both venues of a ``SimCluster`` (a withdrawal on one arrives as a
deposit on the other, at the address it was sent to). Per venue, asset and network it knows a
deposit address of every account, a withdrawal fee and minimum, the wallet state
(``working | withdraw_only | deposit_only | paused``, the venues' ``/v1/status/wallet`` words)
and the withdrawal-address list each account registered (by default: every address the other
venue gives out; ``register_address`` adds outside ones).

A withdrawal debits amount + fee at once and is answered ``WAITING``; it is ``PROCESSING`` (with a
txid) from then on and ``DONE`` ``confirm_s`` later on the wallet's clock, when the deposit is
credited at the destination (``PROCESSING`` there until then, ``ACCEPTED`` after). Time comes
from a ``karb.clock`` clock, so tests step a ``ManualClock`` instead of waiting; ``settle()``
applies whatever is due (the REST layer calls it before every wallet answer, the cluster on
every market tick). Faults: ``suspend`` a network (withdrawals refused), ``lose_next_transfer``
(the withdrawal completes, nothing ever arrives).

Thread-safe (one lock); balances change through ``SimExchange.move_funds``.
"""
from __future__ import annotations

import hashlib
import itertools
import threading
import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import ROUND_UP, Decimal

from karb.clock import NS_PER_S, Clock, SystemClock
from karb.model import Venue
from karb.sim.config import SimWalletConfig
from karb.sim.exchange import SimExchange
from karb.sim.orders import Reject, RejectKind

KST = timezone(timedelta(hours=9))
WALLET_STATES = ("working", "withdraw_only", "deposit_only", "paused")
_FEE_QUANTUM = Decimal("0.0001")
_CREDITING = ("working", "deposit_only")  # wallet states in which deposits are credited
_NEVER = 1 << 62


class WalletRefusal(Exception):
    """A withdrawal the venue refuses. ``kind``: params | network | suspended | address |
    minimum | insufficient | not_found. Each REST layer renders its venue's error body."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Network:
    asset: str
    net_type: str
    fee: Decimal
    minimum: Decimal
    confirm_ns: int


@dataclass
class SimWithdrawal:
    venue: Venue
    access_key: str
    uuid: str
    currency: str
    net_type: str
    amount: Decimal
    fee: Decimal
    address: str
    secondary_address: str | None
    transaction_type: str
    txid: str
    created_ns: int
    done_ns: int  # wall ns when it is DONE (and credited at the destination, unless lost)
    answered: bool = False  # False only for the copy the withdrawal request is answered with

    def state_at(self, now_ns: int) -> str:
        if not self.answered:
            return "WAITING"
        return "DONE" if now_ns >= self.done_ns else "PROCESSING"


@dataclass
class SimDeposit:
    venue: Venue
    access_key: str
    uuid: str
    currency: str
    net_type: str
    amount: Decimal
    txid: str
    created_ns: int
    credit_ns: int
    credited: bool = False


class SimWallet:
    """Transfers between ``exchanges`` (see the module docstring)."""

    def __init__(self, exchanges: dict[Venue, SimExchange], config: SimWalletConfig,
                 start_prices: dict[str, Decimal], clock: Clock | None = None):
        self.exchanges = exchanges
        self.config = config
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._networks = {asset: self._network(asset, price) for asset, price in start_prices.items()}
        for asset in config.networks:
            if asset not in self._networks:
                self._networks[asset] = self._network(asset, None)
        self._states: dict[tuple[Venue, str], str] = {}
        self._registered: dict[tuple[Venue, str, str, str], set[str]] = {}
        self._withdrawals: dict[str, SimWithdrawal] = {}
        self._deposits: list[SimDeposit] = []
        self._lose = 0
        self._next_due = _NEVER  # wall ns of the earliest deposit not yet credited
        self._txids = itertools.count(1)
        self.requests: Counter[tuple[Venue, str, str]] = Counter()  # (venue, method, path) -> count

    def _network(self, asset: str, price: Decimal | None) -> Network:
        given = self.config.networks.get(asset)
        fee = given.fee if given is not None and given.fee is not None else None
        if fee is None:
            fee = (self.config.fee_krw / price).quantize(_FEE_QUANTUM, ROUND_UP) if price else Decimal("0.001")
        minimum = given.minimum if given is not None and given.minimum is not None else fee * 10
        confirm_s = given.confirm_s if given is not None and given.confirm_s is not None else self.config.confirm_s
        net_type = given.net_type if given is not None and given.net_type else asset
        return Network(asset, net_type, fee, minimum, int(confirm_s * NS_PER_S))

    # --- knobs (tests, control) ---------------------------------------------------------------
    def suspend(self, venue: Venue, asset: str, state: str = "deposit_only") -> None:
        """Set ``asset``'s wallet state on ``venue``: ``deposit_only`` stops withdrawals,
        ``withdraw_only`` deposits (they wait), ``paused`` both, ``working`` resumes."""
        if state not in WALLET_STATES:
            raise ValueError(f"wallet state must be one of {WALLET_STATES}, was {state!r}")
        with self._lock:
            self._states[(venue, asset)] = state

    def lose_next_transfer(self, count: int = 1) -> None:
        """The next ``count`` withdrawals complete on the sending venue and never arrive."""
        with self._lock:
            self._lose += int(count)

    def register_address(self, venue: Venue, access_key: str, asset: str, net_type: str, address: str) -> None:
        """Add ``address`` to the account's withdrawal-address list on ``venue``."""
        with self._lock:
            self._registered.setdefault((venue, access_key, asset, net_type), set()).add(address)

    def note_request(self, venue: Venue, method: str, path: str) -> None:
        with self._lock:
            self.requests[(venue, method, path)] += 1

    def request_count(self, venue: Venue | None = None, method: str | None = None, path: str | None = None) -> int:
        with self._lock:
            return sum(n for (v, m, p), n in self.requests.items()
                       if (venue is None or v is venue) and (method is None or m == method)
                       and (path is None or p == path))

    # --- reads ----------------------------------------------------------------------------------
    def network(self, asset: str, net_type: str | None = None) -> Network:
        network = self._networks.get(asset)
        if network is None or (net_type is not None and net_type != network.net_type):
            raise WalletRefusal("network", f"{asset} has no network {net_type!r}")
        return network

    def assets(self) -> list[str]:
        return list(self._networks)

    def wallet_state(self, venue: Venue, asset: str) -> str:
        with self._lock:
            return self._states.get((venue, asset), "working")

    def deposit_address(self, venue: Venue, access_key: str, asset: str, net_type: str | None = None) -> str:
        """The account's deposit address for ``asset`` on ``venue`` (stable for a given key)."""
        network = self.network(asset, net_type)
        digest = hashlib.sha256(f"{venue.value}:{access_key}:{asset}:{network.net_type}".encode()).hexdigest()
        return f"sim{venue.value[:2]}{asset.lower()}{digest[:30]}"

    def registered(self, venue: Venue, access_key: str, asset: str, net_type: str) -> set[str]:
        """Addresses the account may withdraw ``asset`` to: the other venue's deposit addresses of
        every account, plus any ``register_address`` added."""
        other = self.exchanges[venue.other]
        own = {self.deposit_address(venue.other, key, asset, net_type) for key in other.account_keys()}
        with self._lock:
            return own | self._registered.get((venue, access_key, asset, net_type), set())

    def withdrawals(self, venue: Venue, access_key: str) -> list[SimWithdrawal]:
        self.settle()
        with self._lock:
            return [w for w in self._withdrawals.values() if w.venue is venue and w.access_key == access_key]

    def deposits(self, venue: Venue, access_key: str) -> list[SimDeposit]:
        self.settle()
        with self._lock:
            return [d for d in self._deposits if d.venue is venue and d.access_key == access_key]

    # --- withdraw ---------------------------------------------------------------------------------
    def withdraw(self, venue: Venue, access_key: str, currency: str, net_type: str | None, amount: Decimal,
                 address: str, secondary_address: str | None = None,
                 transaction_type: str = "default") -> SimWithdrawal:
        """Debit amount + fee and start the transfer, or raise ``WalletRefusal``."""
        if not currency or not net_type or not address:
            raise WalletRefusal("params", "currency, net_type, amount and address are required")
        network = self.network(currency, net_type)
        if self.wallet_state(venue, currency) in ("deposit_only", "paused"):
            raise WalletRefusal("suspended", f"{currency} ({net_type}) withdrawals are suspended")
        if address not in self.registered(venue, access_key, currency, net_type):
            raise WalletRefusal("address", "the address is not registered for withdrawals")
        if amount < network.minimum:
            raise WalletRefusal("minimum", f"minimum withdrawal is {network.minimum} {currency}")
        try:
            self.exchanges[venue].move_funds(access_key, currency, -(amount + network.fee))
        except Reject as reject:
            if reject.kind is RejectKind.INSUFFICIENT:
                raise WalletRefusal("insufficient", reject.message) from None
            raise
        now = self.clock.wall_ns()
        with self._lock:
            lost = self._lose > 0
            self._lose -= 1 if lost else 0
            txid = hashlib.sha256(f"sim-tx-{next(self._txids)}-{now}".encode()).hexdigest()
            answer = SimWithdrawal(venue, access_key, str(uuidlib.uuid4()), currency, network.net_type,
                                   amount, network.fee, address, secondary_address, transaction_type,
                                   txid, now, now + network.confirm_ns)
            self._withdrawals[answer.uuid] = replace(answer, answered=True)  # reads: PROCESSING, DONE
            destination = None if lost else self._owner(venue.other, currency, network.net_type, address)
            if destination is not None:
                self._deposits.append(SimDeposit(venue.other, destination, str(uuidlib.uuid4()), currency,
                                                 network.net_type, amount, txid, now, answer.done_ns))
                self._next_due = min(self._next_due, answer.done_ns)
        return answer

    def _owner(self, venue: Venue, asset: str, net_type: str, address: str) -> str | None:
        for key in self.exchanges[venue].account_keys():
            if self.deposit_address(venue, key, asset, net_type) == address:
                return key
        return None

    def settle(self) -> None:
        """Credit every deposit whose confirmations are done at the clock's now (one waits while
        its wallet is ``withdraw_only`` or ``paused``). Cheap when nothing is due."""
        now = self.clock.wall_ns()
        if now < self._next_due:
            return
        due: list[SimDeposit] = []
        with self._lock:
            waiting = [d for d in self._deposits if not d.credited]
            for d in waiting:
                if now >= d.credit_ns and self._states.get((d.venue, d.currency), "working") in _CREDITING:
                    d.credited = True
                    due.append(d)
            self._next_due = min((d.credit_ns for d in waiting if not d.credited), default=_NEVER)
            if any(d.credit_ns <= now for d in waiting if not d.credited):
                self._next_due = 0  # held by a suspended wallet: look again next time
        for d in due:
            self.exchanges[d.venue].move_funds(d.access_key, d.currency, d.amount)


def kst_text(wall_ns: int | None) -> str | None:
    """A venue timestamp (``2026-12-03T15:17:51+09:00``) for a wall-clock ns, or None."""
    if wall_ns is None:
        return None
    return datetime.fromtimestamp(wall_ns / NS_PER_S, KST).isoformat(timespec="seconds")
