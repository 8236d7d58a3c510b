"""Inventory: trading without transfers drains one venue's coin and the other venue's KRW.

Three jobs, all read-only over the ``Ledger``'s free balances:

* targets: each asset's target share per venue, by default where it started (``set_targets``
  with the first balances the journal holds, so a restart keeps the original targets);
* bands: per venue and asset (``KRW`` included) a ``[min, max]``; a direction whose trade would
  take a balance outside its band is capped, and blocked when nothing tradeable is left
  (``volume_cap`` on the hot path with top-of-book prices, then ``exact_cap`` and ``check``
  exactly, with fees, at the candidate's limit prices). Where the config names no band, the
  floor is ``floor_share`` of the start amount (the hard band; ``soft_share`` of it marks an
  asset as low and suggests a transfer);
* skew: each direction's threshold follows the *pressure* on each side it drains (coin on the
  sell venue, KRW on the buy venue): ``p = (target - have) / (target - floor)``, 0 at target, 1
  at the floor. A side below target raises the threshold by ``skew_bps * p / (1 - p)``
  (``skew_bps`` half-way to the floor, 4x at 80 %, unbounded at the floor); a side above target
  lowers it by ``skew_bps * |p|`` (at most ``skew_bps`` per side; never below zero). The curve
  is smooth at the target, so a market keeps trading both ways whenever the gap swings, and
  drains ever more slowly as a side empties;

Called from the strategy thread (caps, threshold), the status thread (shares) and the
rebalancer (``karb.rebalance.plan``: low sides, bands);
the targets are set once at start-up, before either runs, so no lock.
"""
from __future__ import annotations

import math
from decimal import ROUND_DOWN, Decimal

from karb.config import BandConfig, InventoryConfig
from karb.ledger import Ledger
from karb.model import VENUES, Signal, Venue, base_currency, quote_currency
from karb.sizing import steps_within

INF = math.inf
STEP = Decimal("0.00000001")  # finest coin precision either venue uses


class Inventory:
    def __init__(self, config: InventoryConfig, ledger: Ledger):
        self.config = config
        self.ledger = ledger
        self._configured: dict[tuple[Venue, str], BandConfig] = {
            (Venue(venue), asset): band
            for venue, assets in config.bands.items() for asset, band in assets.items()
        }
        self._bands = dict(self._configured)
        self._targets: dict[str, dict[Venue, float]] = {}  # asset -> venue -> share of the total
        self._soft: dict[tuple[Venue, str], Decimal] = {}
        # (venue, asset) -> (ledger.free_version it was computed at, pressure): the strategy asks
        # on every evaluation with an edge, the balances change only on fills and loads
        self._pressure: dict[tuple[Venue, str], tuple[int, float]] = {}

    def set_targets(self, start: dict[Venue, dict[str, Decimal]]) -> None:
        """Targets and default bands from the start balances (venue -> asset -> free)."""
        assets = {a for balances in start.values() for a in balances}
        for asset in assets:
            amounts = {v: start.get(v, {}).get(asset, Decimal(0)) for v in Venue}
            total = sum(amounts.values())
            if total <= 0:
                continue
            self._targets[asset] = {v: float(a / total) for v, a in amounts.items()}
            for venue, amount in amounts.items():
                self._soft[(venue, asset)] = amount * Decimal(repr(self.config.soft_share))
                if (venue, asset) not in self._configured and amount > 0:
                    floor = (amount * Decimal(repr(self.config.floor_share))).quantize(STEP, ROUND_DOWN)
                    self._bands[(venue, asset)] = BandConfig(min=floor)
        self._pressure.clear()

    def target_share(self, venue: Venue, asset: str) -> float | None:
        """``venue``'s target share of ``asset``; None before ``set_targets`` named the asset."""
        return self._targets.get(asset, {}).get(venue)

    def band(self, venue: Venue, asset: str) -> BandConfig | None:
        """``asset``'s band on ``venue`` (configured, or the default floor), if any."""
        return self._bands.get((venue, asset))

    def shares(self, assets: list[str]) -> dict[str, dict[str, float]]:
        """Each asset's share per venue now (the panel and metrics show it beside its target)."""
        out = {}
        free = self.ledger.free_balances()  # one lock hold for all: the panel asks every second
        zero = Decimal(0)
        for asset in assets:
            held = {v: free.get((v, asset), zero) for v in VENUES}
            total = sum(held.values())
            if total > 0:
                out[asset] = {v.value: float(held[v] / total) for v in VENUES}
        return out

    def low(self, venue: Venue, asset: str) -> bool:
        """Below ``soft_share`` of its start amount on ``venue``."""
        soft = self._soft.get((venue, asset))
        return soft is not None and self.ledger.free(venue, asset) < soft

    def pressure(self, venue: Venue, asset: str) -> float:
        """How far a trade draining ``asset`` on ``venue`` has gone from target towards its
        floor: 0 at target, 1 at the floor, negative above target (at least -1)."""
        version = self.ledger.free_version  # read first: a change meanwhile makes it stale
        cached = self._pressure.get((venue, asset))
        if cached is not None and cached[0] == version:
            return cached[1]
        value = self._pressure_now(venue, asset)
        self._pressure[(venue, asset)] = (version, value)
        return value

    def _pressure_now(self, venue: Venue, asset: str) -> float:
        share = self.target_share(venue, asset)
        if share is None:  # no target: no opinion
            return 0.0
        held = {v: self.ledger.free(v, asset) for v in VENUES}
        total = float(sum(held.values()))
        if total <= 0:
            return 0.0
        target = share * total
        band = self._bands.get((venue, asset))
        floor = float(band.min) if band is not None else 0.0
        if target <= floor:
            return 0.0
        return max((target - float(held[venue])) / (target - floor), -1.0)

    def threshold_bps(self, market: str, sell_venue: Venue, base_bps: float) -> float:
        """The threshold for selling on ``sell_venue`` (buying on the other): moved by the
        pressure on each side it drains, the coin on ``sell_venue`` and KRW on the other."""
        skew = self.config.skew_bps
        if not skew:
            return base_bps
        buy_venue = Venue.UPBIT if sell_venue is Venue.BITHUMB else Venue.BITHUMB
        move = 0.0
        for venue, asset in ((sell_venue, base_currency(market)), (buy_venue, quote_currency(market))):
            p = self.pressure(venue, asset)
            if p >= 1.0:
                return INF
            move += skew * p / (1.0 - p) if p > 0.0 else skew * p
        return max(base_bps + move, 0.0)

    @property
    def max_relief_bps(self) -> float:
        """The most ``threshold_bps`` can fall below its base: both drained sides far above target."""
        return 2 * self.config.skew_bps

    def volume_cap(self, market: str, buy_venue: Venue, sell_venue: Venue, price: float) -> float:
        """Largest coin volume keeping all four balances in band (KRW valued at ``price``)."""
        if not self._bands:
            return INF
        coin, krw = base_currency(market), quote_currency(market)
        cap = INF
        # coin rises on the buy venue and falls on the sell venue; KRW the other way round
        for venue, asset, sign, unit in ((buy_venue, coin, +1, 1.0), (sell_venue, coin, -1, 1.0),
                                         (buy_venue, krw, -1, price), (sell_venue, krw, +1, price)):
            band = self._bands.get((venue, asset))
            if band is None or unit <= 0:
                continue
            have = float(self.ledger.free(venue, asset))
            if sign > 0 and band.max is not None:
                cap = min(cap, (float(band.max) - have) / unit)
            elif sign < 0:
                cap = min(cap, (have - float(band.min)) / unit)
        return max(cap, 0.0)

    def check(self, signal: Signal, buy_fee: Decimal, sell_fee: Decimal) -> str | None:
        """Why ``signal`` would push a balance out of its band, or further out (exact, worst
        case), or None. A trade moving a balance back towards its band is never refused."""
        if not self._bands:
            return None
        for (venue, asset), per_coin in self._per_coin(signal.market, signal.buy_venue,
                                                        signal.sell_venue, signal.buy_price,
                                                        signal.sell_price, buy_fee, sell_fee):
            band = self._bands.get((venue, asset))
            if band is None:
                continue
            value = self.ledger.free(venue, asset) + signal.volume * per_coin
            if ((per_coin < 0 and value < band.min)
                    or (per_coin > 0 and band.max is not None and value > band.max)):
                return (f"{venue.value} {asset} would end at {value:f}, outside its band "
                        f"[{band.min}, {band.max if band.max is not None else 'inf'}]")
        return None

    def exact_cap(self, market: str, buy_venue: Venue, sell_venue: Venue, buy_price: Decimal,
                  sell_price: Decimal, buy_fee: Decimal, sell_fee: Decimal,
                  step: Decimal) -> Decimal | None:
        """Largest multiple of ``step`` that ``check`` accepts at these limits (None: no band)."""
        cap = None
        for (venue, asset), per_coin in self._per_coin(market, buy_venue, sell_venue, buy_price,
                                                        sell_price, buy_fee, sell_fee):
            band = self._bands.get((venue, asset))
            if band is None:
                continue
            free = self.ledger.free(venue, asset)
            if per_coin > 0:
                if band.max is None:
                    continue
                room = steps_within(band.max - free, per_coin, step)
            else:
                room = steps_within(free - band.min, -per_coin, step)
            cap = room if cap is None else min(cap, room)
        return cap

    @staticmethod
    def _per_coin(market: str, buy_venue: Venue, sell_venue: Venue, buy_price: Decimal,
                  sell_price: Decimal, buy_fee: Decimal, sell_fee: Decimal):
        # each balance's change per coin traded, at the limits: coin moves from the sell venue
        # to the buy venue, KRW (fees included) the other way round
        coin, krw = base_currency(market), quote_currency(market)
        return (((buy_venue, coin), Decimal(1)), ((sell_venue, coin), Decimal(-1)),
                ((buy_venue, krw), -(buy_price * (1 + buy_fee))),
                ((sell_venue, krw), sell_price * (1 - sell_fee)))
