"""The rebalancing planner: which transfer would bring a low side back, what it costs, and
whether that is worth it. Pure: everything it reads is passed in (the ``Inventory`` over the
ledger, top-of-book prices, network fees, earnings); nothing is sent from here.

A side needs a plan when it is *low* (``Inventory.low``: below ``inventory.soft_share`` of its
start amount) or below its band floor. For each such side ``Planner.plans`` returns one
``Plan``, worth doing or not, with its costs itemised in KRW:

* a coin (``route: coin``) goes back to the venue it left, along its own network
  (``rebalance.net_type``, default the asset code). Amount: what brings the low side back to
  its target share (``Inventory.target_share`` of today's total), at most
  ``rebalance.max_transfer`` and what the other side holds beyond the fee. Cost: the network
  withdrawal fee (coin, from the venue's ``withdraw/chance``, else ``rebalance.network_fee``)
  times the sending venue's best bid. No trade, so no trading fee and no price risk: the coin
  stays ours on the way.
* KRW (``route: krw``) goes through the bridge coin (``rebalance.bridge``, default XRP): buy V
  on the KRW-rich venue at its best ask, send V, sell V minus the network fee on the KRW-poor
  venue at its best bid. V is the KRW the poor side lacks divided by that ask (at most the
  bridge's ``max_transfer``). Itemised: ``buy_fee`` = V x ask x taker fee there; ``spread`` =
  V x (ask - bid), the two books' spreads and the gap between the venues crossed at today's top
  of book; ``network_fee`` = fee x bid; ``sell_fee`` = (V - fee) x bid x taker fee there. Their
  sum is exactly the KRW spent less the KRW received. Plus ``price_risk``: one standard
  deviation of the bridge's price over the transfer, V x mid x ``daily_volatility`` x
  sqrt(transfer time / 1 day); the transfer time is the network's ``arrival_s`` (the overdue
  limit, a deliberately cautious stand-in for the typical time).

Expected earnings (what the move is for): the realised PnL of the directions the low side
drains (a low coin on venue X: its market's "sell on X"; low KRW on X: every market's "buy on
X"), summed over the last ``earnings_window_s`` of the journal, turned into a rate per second
over the part of the window the engine has run, times ``horizon_s`` (how long a refilled side
is expected to keep those directions trading). The caller computes the per-direction sums
(``Rebalancer``); ``Planner`` only adds them up. A plan is worth doing only when its cost is
strictly below those earnings.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, Decimal
from typing import Callable, Mapping

from karb.inventory import Inventory
from karb.model import Venue
from karb.rebalance.config import RebalanceConfig

ZERO = Decimal(0)
STEP = Decimal("0.00000001")
DAY_S = Decimal(86_400)

# (bid, ask) of a market's top of book on a venue, or None (no valid book)
TopOfBook = Callable[[Venue, str], "tuple[Decimal, Decimal] | None"]
Direction = tuple[str, Venue]  # (market, the venue it sells on)


@dataclass(frozen=True)
class Plan:
    """One proposed move. ``amount``: coin units sent (coin route) or KRW to arrive (krw
    route, with ``bridge_volume`` of the bridge coin bought and sent). ``costs``: item -> KRW."""

    asset: str
    route: str  # coin | krw
    from_venue: Venue
    to_venue: Venue
    amount: Decimal
    net_type: str
    why: str
    costs: dict[str, Decimal] = field(default_factory=dict)
    earnings_krw: Decimal = ZERO
    bridge: str | None = None
    bridge_volume: Decimal | None = None
    problem: str | None = None  # why it cannot be costed or done at all (then never worth it)

    @property
    def cost_krw(self) -> Decimal:
        return sum(self.costs.values(), ZERO)

    @property
    def worth(self) -> bool:
        return self.problem is None and self.amount > 0 and self.cost_krw < self.earnings_krw

    @property
    def key(self) -> tuple:
        """What identifies the plan for "log once per change" (costs move every tick)."""
        return (self.asset, self.route, self.from_venue, self.to_venue, self.worth, self.problem)

    def __str__(self) -> str:
        what = (f"{_num(self.amount)} {self.asset}" if self.route == "coin" else
                f"{_num(self.amount.quantize(Decimal(1), ROUND_DOWN))} KRW via {_num(self.bridge_volume or ZERO)} "
                f"{self.bridge}")
        items = ", ".join(f"{k} {_krw(v)}" for k, v in self.costs.items())
        verdict = (f"NOT POSSIBLE: {self.problem}" if self.problem else
                   ("worth it" if self.worth else "not worth it"))
        return (f"{what} {self.from_venue.value} -> {self.to_venue.value} ({self.why}): cost {_krw(self.cost_krw)} KRW"
                f"{f' [{items}]' if items else ''} vs expected earnings {_krw(self.earnings_krw)} KRW: {verdict}")


def _num(x: Decimal) -> str:
    text = f"{x:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _krw(x: Decimal) -> str:
    return f"{x:,.0f}"


def _mid(top: tuple[Decimal, Decimal]) -> Decimal:
    return (top[0] + top[1]) / 2


class Planner:
    def __init__(self, config: RebalanceConfig, inventory: Inventory, markets: list[str],
                 taker_fee: Callable[[Venue, str], Decimal]):
        self.config = config
        self.inventory = inventory
        self.markets = list(markets)
        self.taker_fee = taker_fee

    def needs(self, asset: str) -> list[tuple[Venue, str]]:
        """The low sides of ``asset``: (venue, why)."""
        out = []
        for venue in Venue:
            band = self.inventory.band(venue, asset)
            have = self.inventory.ledger.free(venue, asset)
            if band is not None and have < band.min:
                out.append((venue, f"{venue.value} {asset} below its floor {_num(band.min)}"))
            elif self.inventory.low(venue, asset):
                out.append((venue, f"{venue.value} {asset} below {self.inventory.config.soft_share:.0%} "
                                   "of its start amount"))
        return out

    def plans(self, top: TopOfBook, network_fees: Mapping,
              earnings: Mapping[Direction, Decimal]) -> list[Plan]:
        """A plan for every low side of every traded coin and of KRW (module docstring).
        ``network_fees``: coin per withdrawal, keyed ``(venue, asset)`` or ``asset``."""
        out = []
        coins = sorted({m.split("-", 1)[1] for m in self.markets})
        for asset in coins + ["KRW"]:
            for poor, why in self.needs(asset):
                rich = poor.other
                if asset == "KRW":
                    directions = [(m, rich) for m in self.markets]  # buying on poor = selling on rich
                    plan = self._krw(poor, rich, why, top, network_fees)
                else:
                    directions = [(f"KRW-{asset}", poor)]
                    plan = self._coin(asset, poor, rich, why, top, network_fees)
                earned = sum((earnings.get(d, ZERO) for d in directions), ZERO)
                out.append(_with(plan, earnings_krw=earned))
        return out

    def _deficit(self, asset: str, poor: Venue) -> Decimal:
        share = self.inventory.target_share(poor, asset)
        ledger = self.inventory.ledger
        total = ledger.free(Venue.UPBIT, asset) + ledger.free(Venue.BITHUMB, asset)
        if share is None:
            return ZERO
        return (Decimal(repr(share)) * total - ledger.free(poor, asset)).quantize(STEP, ROUND_DOWN)

    def net_type(self, asset: str) -> str:
        return self.config.net_type.get(asset, asset)

    def _coin(self, asset: str, poor: Venue, rich: Venue, why: str, top: TopOfBook,
              network_fees: Mapping[str, Decimal]) -> Plan:
        net = self.net_type(asset)
        plan = Plan(asset, "coin", rich, poor, ZERO, net, why)
        fee = _fee(network_fees, rich, asset)
        book = top(rich, f"KRW-{asset}")
        if fee is None:
            return _with(plan, problem=f"no network fee known for {asset} (rebalance.network_fee.{asset})")
        if book is None:
            return _with(plan, problem=f"no {rich.value} KRW-{asset} book to price it")
        amount = min(self._deficit(asset, poor), self.inventory.ledger.free(rich, asset) - fee)
        cap = self.config.max_transfer.get(asset)
        if cap is not None:
            amount = min(amount, cap)
        amount = max(amount, ZERO).quantize(STEP, ROUND_DOWN)
        plan = _with(plan, amount=amount, costs={"network_fee": fee * book[0]})
        return plan if amount > 0 else _with(plan, problem=f"nothing to send from {rich.value}")

    def _krw(self, poor: Venue, rich: Venue, why: str, top: TopOfBook,
             network_fees: Mapping[str, Decimal]) -> Plan:
        bridge = self.config.bridge
        market = f"KRW-{bridge}"
        net = self.net_type(bridge)
        plan = Plan("KRW", "krw", rich, poor, ZERO, net, why, bridge=bridge)
        fee = _fee(network_fees, rich, bridge)
        buy_top, sell_top = top(rich, market), top(poor, market)
        if fee is None:
            return _with(plan, problem=f"no network fee known for the bridge {bridge}")
        if buy_top is None or sell_top is None:
            return _with(plan, problem=f"no {market} books on both venues (rebalance.bridge {bridge})")
        ask, bid = buy_top[1], sell_top[0]
        deficit = self._deficit("KRW", poor)
        volume = (deficit / ask).quantize(STEP, ROUND_DOWN) if ask > 0 else ZERO
        cap = self.config.max_transfer.get(bridge)
        if cap is not None:
            volume = min(volume, cap)
        if volume <= fee:
            return _with(plan, problem=f"{_num(deficit)} KRW is too little to bridge", bridge_volume=volume)
        buy_fee, sell_fee = self.taker_fee(rich, market), self.taker_fee(poor, market)
        hours = Decimal(repr(self.config.arrival_for(net))) / DAY_S
        costs = {
            "buy_fee": volume * ask * buy_fee,
            "spread": volume * (ask - bid),
            "network_fee": fee * bid,
            "sell_fee": (volume - fee) * bid * sell_fee,
            "price_risk": volume * _mid(sell_top) * self.config.daily_volatility * hours.sqrt(),
        }
        arriving = (volume - fee) * bid * (1 - sell_fee)
        return _with(plan, amount=arriving, costs=costs, bridge_volume=volume)


def _fee(fees: Mapping, venue: Venue, asset: str) -> Decimal | None:
    """The sending venue's fee for ``asset`` (keyed ``(venue, asset)``), else the asset's."""
    found = fees.get((venue, asset))
    return found if found is not None else fees.get(asset)


def _with(plan: Plan, **changes) -> Plan:
    return replace(plan, **changes)
