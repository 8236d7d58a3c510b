"""Exact integer price and size units for the sim's hot path.

The sim keeps every price and size as an ``int`` count of 1e-8 units ("sats"), so that a
generated book is on the venue's tick by construction and never drifts by float error. The
tick bands are derived from ``karb.rules.KRW_TICK_TABLES`` (the one tick table in the project),
scaled to sats once at import.

Conversions: ``to_float`` for JSON numbers (``n / 1e8`` is correctly rounded, so the shortest
float repr is the exact decimal), ``to_str`` for venue string fields, ``to_decimal`` for
matching and balances, ``from_decimal`` for order parameters.
"""
from __future__ import annotations

from bisect import bisect_right
from decimal import Decimal

from karb.model import Venue
from karb.rules import KRW_TICK_TABLES

SCALE = 100_000_000
SCALE_DIGITS = 8


def from_decimal(value: Decimal) -> int:
    """Exact sats of ``value``; raises ``ValueError`` if it has more than 8 decimals."""
    scaled = value.scaleb(SCALE_DIGITS)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more than {SCALE_DIGITS} decimals")
    return int(scaled)


def to_decimal(sats: int) -> Decimal:
    return Decimal(sats).scaleb(-SCALE_DIGITS).normalize() if sats else Decimal(0)


def to_float(sats: int) -> float:
    return sats / SCALE


def to_str(sats: int) -> str:
    """``150000000000`` -> ``"1500"``; ``12345`` -> ``"0.00012345"`` (no exponent, no padding)."""
    whole, frac = divmod(sats, SCALE)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:08d}".rstrip("0")


class TickGrid:
    """One venue's KRW tick bands in sats. Pure and immutable; safe from any thread."""

    def __init__(self, venue: Venue):
        table = KRW_TICK_TABLES[venue]
        self.venue = venue
        self.bounds = [from_decimal(bound) for bound, _ in table]
        self.ticks = [from_decimal(tick) for _, tick in table]

    def band(self, price: int) -> int:
        return bisect_right(self.bounds, price) - 1

    def tick(self, price: int) -> int:
        return self.ticks[bisect_right(self.bounds, price) - 1]

    def band_of(self, price: int) -> tuple[int, int, int]:
        """``(low, high, tick)`` of ``price``'s band (``high`` exclusive; a huge int for the top)."""
        i = bisect_right(self.bounds, price) - 1
        high = self.bounds[i + 1] if i + 1 < len(self.bounds) else 1 << 62
        return self.bounds[i], high, self.ticks[i]

    def upper(self, band: int) -> int | None:
        """Lower bound of the next band up (exclusive upper bound of ``band``)."""
        return self.bounds[band + 1] if band + 1 < len(self.bounds) else None

    def floor(self, price: int) -> int:
        """Largest on-grid price <= ``price`` (the tick of the band ``price`` lies in)."""
        tick = self.tick(price)
        return price - price % tick

    def ceil(self, price: int) -> int:
        """Smallest on-grid price >= ``price``."""
        tick = self.tick(price)
        rem = price % tick
        if not rem:
            return price
        up = price - rem + tick
        # Crossing into a band with a larger tick: the band's bound is always on its own grid.
        return up if up % self.tick(up) == 0 else self.ceil(up)

    def below(self, price: int, ticks: int) -> int:
        """On-grid price ``ticks`` steps (of ``price``'s tick) below ``price``, at least one tick."""
        step = self.tick(price - 1)  # the band just under an on-grid bound has the smaller tick
        return self.floor(max(price - ticks * step, step))

    def above(self, price: int, ticks: int) -> int:
        return self.ceil(price + ticks * self.tick(price))

    def on_grid(self, price: int) -> bool:
        return price > 0 and price % self.tick(price) == 0


GRIDS: dict[Venue, TickGrid] = {venue: TickGrid(venue) for venue in Venue}
