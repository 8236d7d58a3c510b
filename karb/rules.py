"""Per-venue market rules: tick tables, minimum order value, fees, volume precision, symbols.

The venue is the authority: at start-up (and daily) the engine asks each venue for every
market's tick size, minimum order and fees (``MarketInfo`` from the REST clients) and builds
``MarketRules`` from the answer. The KRW tick tables below are the fallback used when the venue
cannot be asked, and the tables the simulated venues enforce (``karb.sim`` imports this module,
so the two sides never disagree about a tick).

All arithmetic here is exact ``Decimal``: these functions produce the numbers sent to venues.
"""
from __future__ import annotations

import threading
from bisect import bisect_right
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from karb.model import Venue

D = Decimal

# (lower bound inclusive, tick) in ascending order of bound. Source: spec/exchanges.md §5.
# Upbit: table effective 2025-07-31 for >= 100 KRW. The 10-100 row was truncated in the stored
# docs (uncertain: spec says "likely 0.1"); below 10 KRW the pre-2025 decade rule (uncertain).
UPBIT_KRW_TICKS: tuple[tuple[Decimal, Decimal], ...] = (
    (D("0"), D("0.00000001")),
    (D("0.0001"), D("0.0000001")),
    (D("0.001"), D("0.000001")),
    (D("0.01"), D("0.00001")),
    (D("0.1"), D("0.0001")),
    (D("1"), D("0.001")),
    (D("10"), D("0.1")),
    (D("100"), D("1")),
    (D("1000"), D("1")),
    (D("5000"), D("5")),
    (D("10000"), D("10")),
    (D("50000"), D("50")),
    (D("100000"), D("100")),
    (D("500000"), D("500")),
    (D("1000000"), D("1000")),
    (D("2000000"), D("1000")),
)

# Bithumb: from a third-party adapter citing Bithumb support article 51036972377241
# (uncertain, spec §5.3). Used as fallback and by the simulated Bithumb.
BITHUMB_KRW_TICKS: tuple[tuple[Decimal, Decimal], ...] = (
    (D("0"), D("0.0001")),
    (D("1"), D("0.01")),
    (D("100"), D("1")),
    (D("1000"), D("1")),
    (D("5000"), D("5")),
    (D("10000"), D("10")),
    (D("50000"), D("50")),
    (D("100000"), D("100")),
    (D("500000"), D("500")),
    (D("1000000"), D("1000")),
)

KRW_TICK_TABLES: dict[Venue, tuple[tuple[Decimal, Decimal], ...]] = {
    Venue.UPBIT: UPBIT_KRW_TICKS,
    Venue.BITHUMB: BITHUMB_KRW_TICKS,
}
_BOUNDS = {v: [b for b, _ in t] for v, t in KRW_TICK_TABLES.items()}

DEFAULT_MIN_TOTAL_KRW = D("5000")
DEFAULT_VOLUME_DECIMALS = 8


def _band_index(venue: Venue, price: Decimal) -> int:
    if price <= 0:
        raise ValueError(f"price must be positive, was {price}")
    return bisect_right(_BOUNDS[venue], price) - 1


def table_tick(venue: Venue, price: Decimal) -> Decimal:
    """Return the fallback KRW tick for ``price`` on ``venue`` (band lower bounds inclusive)."""
    return KRW_TICK_TABLES[venue][_band_index(venue, price)][1]


def round_down(value: Decimal, step: Decimal) -> Decimal:
    """Largest multiple of ``step`` that is <= ``value`` (exact)."""
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def round_up(value: Decimal, step: Decimal) -> Decimal:
    """Smallest multiple of ``step`` that is >= ``value`` (exact)."""
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


def to_upbit_symbol(legacy: str) -> str:
    """``BTC_KRW`` (Bithumb legacy) -> ``KRW-BTC`` (Upbit and Bithumb 2.0)."""
    base, quote = legacy.split("_", 1)
    return f"{quote}-{base}"


def to_legacy_symbol(market: str) -> str:
    """``KRW-BTC`` -> ``BTC_KRW`` (Bithumb legacy REST paths and pubwss symbols)."""
    quote, base = market.split("-", 1)
    return f"{base}_{quote}"


def market_code(symbol: str) -> str:
    """What a user typed (``btc``, ``KRW-BTC``, ``BTC_KRW``) -> ``KRW-BTC``."""
    symbol = symbol.strip().upper()
    if "_" in symbol:
        return to_upbit_symbol(symbol)
    return symbol if "-" in symbol else f"KRW-{symbol}"


@dataclass(frozen=True, slots=True)
class MarketInfo:
    """What a venue told us about one market; ``None`` where it did not say.

    ``tick_size`` is the venue's tick at ``ref_price`` (Upbit ``/v1/orderbook/instruments``).
    """

    market: str
    tick_size: Decimal | None = None
    ref_price: Decimal | None = None
    min_total: Decimal | None = None
    taker_fee: Decimal | None = None
    maker_fee: Decimal | None = None


@dataclass(frozen=True, slots=True)
class MarketRules:
    """Trading rules of one market on one venue.

    ``tick_override`` is ``(band_lower_bound, tick)``: the venue said this market trades on a
    tick different from the table's within that band (e.g. Upbit USDT/KRW at 0.5 KRW in
    1,000-10,000). Outside that band the table applies.
    """

    venue: Venue
    market: str
    min_total: Decimal = DEFAULT_MIN_TOTAL_KRW
    taker_fee: Decimal = D("0.0025")
    maker_fee: Decimal = D("0.0025")
    volume_decimals: int = DEFAULT_VOLUME_DECIMALS
    tick_override: tuple[Decimal, Decimal] | None = None

    def tick_for(self, price: Decimal) -> Decimal:
        idx = _band_index(self.venue, price)
        if self.tick_override is not None:
            bound, tick = self.tick_override
            if KRW_TICK_TABLES[self.venue][idx][0] == bound:
                return tick
        return KRW_TICK_TABLES[self.venue][idx][1]

    @property
    def volume_step(self) -> Decimal:
        return D(1).scaleb(-self.volume_decimals)

    def round_buy_price(self, price: Decimal) -> Decimal:
        """Round a buy limit price down to the grid: never pay more than computed."""
        return round_down(price, self.tick_for(price))

    def round_sell_price(self, price: Decimal) -> Decimal:
        """Round a sell limit price up to the grid: never sell for less than computed."""
        return round_up(price, self.tick_for(price))

    def floor_volume(self, volume: Decimal) -> Decimal:
        return round_down(volume, self.volume_step)

    def is_on_tick(self, price: Decimal) -> bool:
        return price > 0 and price % self.tick_for(price) == 0

    def check_limit_order(self, price: Decimal, volume: Decimal) -> str | None:
        """Return why a limit order breaks the rules, or None. Used by the sim to reject."""
        if price <= 0 or volume <= 0:
            return "price and volume must be positive"
        if not self.is_on_tick(price):
            return f"price {price} is not on the {self.tick_for(price)} tick"
        if volume != self.floor_volume(volume):
            return f"volume {volume} has more than {self.volume_decimals} decimals"
        if price * volume < self.min_total:
            return f"order value {price * volume} is below the minimum {self.min_total}"
        return None

    def with_info(self, info: MarketInfo) -> "MarketRules":
        """Return these rules updated with what the venue said (unknown fields keep ours)."""
        changes: dict = {}
        if info.min_total is not None:
            changes["min_total"] = info.min_total
        if info.taker_fee is not None:
            changes["taker_fee"] = info.taker_fee
        if info.maker_fee is not None:
            changes["maker_fee"] = info.maker_fee
        if info.tick_size is not None and info.ref_price is not None and info.ref_price > 0:
            idx = _band_index(self.venue, info.ref_price)
            bound, table = KRW_TICK_TABLES[self.venue][idx]
            changes["tick_override"] = None if info.tick_size == table else (bound, info.tick_size)
        return replace(self, **changes)


def _pct(fee: Decimal) -> str:
    return f"{format((fee * 100).normalize(), 'f')}%"


def describe_fees(venue: Venue, infos: list[MarketInfo], fallback_taker: Decimal) -> str:
    """The start-up line saying which taker fee the venue's answer gave (``/v1/orders/chance``
    or Bithumb legacy ``/info/account``) and where the config fallback applies, and why.

    The strategy charges the larger of the venue's fee and ``venues.<v>.taker_fee``, so a
    fallback above the venue's answer is named as the fee actually used."""
    name = venue.value
    given = {i.market: i.taker_fee for i in infos if i.taker_fee is not None}
    if not given:
        return (f"{name} fees: the venue's answer gave no fee (public-only client, or no fee in its "
                f"answer); using the config fallback taker {_pct(fallback_taker)} "
                f"(venues.{name}.taker_fee)")
    fees = sorted(set(given.values()))
    parts = [f"{name} fees from the venue's answer: taker {'/'.join(_pct(f) for f in fees)} on "
             f"{len(given)}/{len(infos)} markets"]
    missing = [i.market for i in infos if i.taker_fee is None]
    if missing:
        parts.append(f"config fallback {_pct(fallback_taker)} for {', '.join(missing)} (not in the answer)")
    if fallback_taker > fees[0]:
        parts.append(f"trading charges the larger config fallback {_pct(fallback_taker)} where the venue "
                     f"says less (venues.{name}.taker_fee)")
    return "; ".join(parts)


class RulesBook:
    """All markets' rules for both venues; swapped whole on refresh so readers need no lock.

    ``get`` is called from any thread; ``update`` from the start-up / daily refresh thread.
    """

    def __init__(self, rules: dict[tuple[Venue, str], MarketRules] | None = None):
        self._rules: dict[tuple[Venue, str], MarketRules] = dict(rules or {})
        self._write_lock = threading.Lock()
        self.version = 0  # bumped after each update: a reader caching fees knows to read again

    def get(self, venue: Venue, market: str) -> MarketRules:
        try:
            return self._rules[(venue, market)]
        except KeyError:
            raise KeyError(f"no market rules for {venue.value} {market}") from None

    def markets(self) -> list[tuple[Venue, str]]:
        return list(self._rules)

    def update(self, venue: Venue, infos: list[MarketInfo]) -> None:
        with self._write_lock:
            rules = dict(self._rules)
            for info in infos:
                current = rules.get((venue, info.market)) or MarketRules(venue, info.market)
                rules[(venue, info.market)] = current.with_info(info)
            self._rules = rules
            self.version += 1

    @classmethod
    def fallback(
        cls, markets: list[str], fees: dict[Venue, tuple[Decimal, Decimal]]
    ) -> "RulesBook":
        """Rules from the tables alone; ``fees`` maps venue -> (taker, maker) from config."""
        return cls(
            {
                (venue, m): MarketRules(venue, m, taker_fee=fees[venue][0], maker_fee=fees[venue][1])
                for venue in Venue
                for m in markets
            }
        )
