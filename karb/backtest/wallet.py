"""Coin transfers in the backtest: the sim's ``SimWallet`` model on the backtest's clock.

``BacktestWallet`` gives each venue the wallet methods the ``TransferExecutor`` and the
rebalancer call (``withdraw_coin``, ``get_withdraw(s)``, ``get_deposits``,
``get_withdraw_chance``) backed by one ``SimWallet`` (``karb.sim.wallet``: the same network fees,
minimums, confirmation delays and wallet states as ``run --sim``, from ``sim.wallet``) whose
clock is the backtest's ``ManualClock``. The wallet moves funds in the ``ModelVenue`` balances
(the withdrawal's amount plus fee at once, the deposit when its confirmations are done), and
answers in the venues' shapes (``karb.exchanges.wallet``).

The backtest's single account is ``ACCESS_KEY``, so the deposit addresses the wallet gives out
are fixed: ``deposit_address(venue, asset)`` (``config/backtest.yaml``'s whitelist lists them).

``BacktestRebalance`` is the rebalancer of one backtest run: built like the engine's (planner,
``TransferExecutor`` enabled as on the sim when ``rebalance.mode: auto``), stepped by the loop
every ``rebalance.check_s`` of simulated time (``tick``), reloading the ledger from the model
venues after a transfer moved funds; ``summary`` adds its cost to the run's.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Sequence

from karb.book import BookBoard
from karb.clock import NS_PER_S, ManualClock
from karb.config import Config
from karb.exchanges.errors import InsufficientFunds, InvalidOrder, OrderNotFound, WalletSuspended
from karb.exchanges.wallet import Deposit, Withdrawal, WithdrawChance
from karb.inventory import Inventory
from karb.journal import Journal
from karb.model import Venue
from karb.rebalance.plan import Planner
from karb.rebalance.rebalancer import Rebalancer
from karb.rebalance.transfer import TransferExecutor, auto_transfer_refusal
from karb.risk import Risk, taker_fee
from karb.rules import RulesBook
from karb.sim.config import SimConfig, SimMarketConfig
from karb.sim.orders import Reject, RejectKind
from karb.sim.wallet import SimWallet, SimWithdrawal, WalletRefusal, kst_text

ACCESS_KEY = "backtest"


class _Accounts:
    """What ``SimWallet`` needs of a ``SimExchange``: the account and ``move_funds``."""

    def __init__(self, client):
        self.client = client

    def account_keys(self) -> list[str]:
        return [ACCESS_KEY]

    def move_funds(self, access_key: str, currency: str, amount: Decimal) -> None:
        if not self.client.move_funds(currency, amount):
            raise Reject(RejectKind.INSUFFICIENT, f"{currency} balance too low for {-amount}")


def make_wallet(config: Config, clients: dict, clock: ManualClock) -> SimWallet:
    sim = config.sim or SimConfig()
    prices = {m.split("-", 1)[1]: (sim.markets.get(m) or SimMarketConfig(price=Decimal(1000))).price
              for m in config.markets}
    return SimWallet({v: _Accounts(c) for v, c in clients.items()}, sim.wallet, prices, clock)


def deposit_address(wallet: SimWallet, venue: Venue, asset: str) -> str:
    return wallet.deposit_address(venue, ACCESS_KEY, asset)


class VenueWallet:
    """One venue's wallet methods over the shared ``SimWallet``."""

    def __init__(self, venue: Venue, wallet: SimWallet):
        self.venue = venue
        self.wallet = wallet

    def withdraw_coin(self, currency: str, net_type: str, amount: Decimal, address: str, *,
                      secondary_address: str | None = None, client_id: str | None = None) -> Withdrawal:
        try:
            w = self.wallet.withdraw(self.venue, ACCESS_KEY, currency, net_type, amount, address, secondary_address)
        except WalletRefusal as refusal:
            kind = {"insufficient": InsufficientFunds, "suspended": WalletSuspended}.get(refusal.kind, InvalidOrder)
            raise kind(self.venue, refusal.message, refusal.kind, 400) from None
        return self._withdrawal(w)

    def get_withdraw(self, uuid: str | None = None, txid: str | None = None) -> Withdrawal:
        found = [w for w in self.wallet.withdrawals(self.venue, ACCESS_KEY)
                 if (uuid is None or w.uuid == uuid) and (txid is None or w.txid == txid)]
        if not found:
            raise OrderNotFound(self.venue, "withdraw_not_found", "withdraw_not_found", 404)
        return self._withdrawal(found[-1])

    def get_withdraws(self, currency: str | None = None, *, uuids: Sequence[str] = ()) -> list[Withdrawal]:
        return [self._withdrawal(w) for w in self.wallet.withdrawals(self.venue, ACCESS_KEY)
                if (currency is None or w.currency == currency) and (not uuids or w.uuid in uuids)]

    def get_deposits(self, currency: str | None = None, *, txids: Sequence[str] = ()) -> list[Deposit]:
        return [Deposit(self.venue, d.uuid, d.currency, d.net_type, d.amount,
                        "ACCEPTED" if d.credited else "PROCESSING", d.txid, kst_text(d.created_ns),
                        kst_text(d.credit_ns) if d.credited else None)
                for d in self.wallet.deposits(self.venue, ACCESS_KEY)
                if (currency is None or d.currency == currency) and (not txids or d.txid in txids)]

    def get_withdraw_chance(self, currency: str, net_type: str) -> WithdrawChance:
        try:
            network = self.wallet.network(currency, net_type)
        except WalletRefusal as refusal:
            raise InvalidOrder(self.venue, refusal.message, refusal.kind, 400) from None
        state = self.wallet.wallet_state(self.venue, currency)
        return WithdrawChance(currency, network.fee, network.minimum, state in ("working", "withdraw_only"),
                              state, False)

    def _withdrawal(self, w: SimWithdrawal) -> Withdrawal:
        state = w.state_at(self.wallet.clock.wall_ns())
        return Withdrawal(self.venue, w.uuid, w.currency, w.net_type, w.amount, w.fee, state,
                          None if state == "WAITING" else w.txid, kst_text(w.created_ns),
                          kst_text(w.done_ns) if state == "DONE" else None)


class BacktestRebalance:
    """The rebalancer of one backtest run (module docstring)."""

    def __init__(self, config: Config, clients: dict, board: BookBoard, rules: RulesBook, risk: Risk,
                 inventory: Inventory, journal: Journal, clock: ManualClock):
        self.clients = clients
        self.ledger = risk.ledger
        self.wallet = make_wallet(config, clients, clock)
        wallets = {v: VenueWallet(v, self.wallet) for v in Venue}
        cfg = config.rebalance
        executor = TransferExecutor(cfg, wallets, journal, clock=clock,
                                    disabled_reason=auto_transfer_refusal(cfg.mode, "sim"))
        planner = Planner(cfg, inventory, config.markets,
                          lambda venue, market: taker_fee(config, rules, venue, market))
        self.rebalancer = Rebalancer(cfg, planner, executor, board, journal, clock, fee_clients=wallets,
                                     on_moved=self._reload)
        self.every_ns = int(cfg.check_s * NS_PER_S)
        self.next_ns = 0

    def tick(self, now_ns: int) -> None:
        """Call once per loop pass, with no trade in flight: a step every ``check_s``."""
        if now_ns >= self.next_ns:
            self.next_ns = now_ns + self.every_ns
            self.rebalancer.step(now_ns)

    def _reload(self) -> None:
        for venue, client in self.clients.items():
            self.ledger.load(venue, client.get_balances())

    def summary(self, pnl_krw: Decimal) -> dict:
        """``rebalance_cost_krw`` (network fees of the transfers sent, in KRW at the sending
        venue's bid), ``transfers`` (withdrawals sent, test transfers included) and
        ``pnl_after_rebalancing_krw``."""
        cost = self.rebalancer.cost_krw
        return {"rebalance_mode": self.rebalancer.config.mode, "transfers": len(self.rebalancer.sent),
                "rebalance_cost_krw": str(cost), "pnl_after_rebalancing_krw": str(pnl_krw - cost)}
