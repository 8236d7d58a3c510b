"""Balance ledger per venue and currency, with reservations, in exact ``Decimal``.

``free`` is what the venue would let us spend (its ``balance``, not its ``locked``).
A ``Reservation`` holds amounts for one trade so that two signals in flight can never spend the
same won or the same coin: ``available = free - everything held``. Fills move money between
currencies and shift the trade's holds onto what it received (bought coin stays held for its
own unwind until the trade is released), so nothing the trade may still need is spent by
another trade. Every method takes the ledger's one lock, does arithmetic only, and returns;
any thread may call any method.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from decimal import Decimal

from karb.model import Balance, Fill, Side, Venue, base_currency, quote_currency

ZERO = Decimal(0)
Key = tuple[Venue, str]


@dataclass
class Reservation:
    """Amounts one trade holds. Mutated only by ``Ledger`` under its lock."""

    id: str
    holds: dict[Key, Decimal] = field(default_factory=dict)
    released: bool = False

    def held(self, venue: Venue, currency: str) -> Decimal:
        return self.holds.get((venue, currency), ZERO)


class Ledger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: dict[Key, Decimal] = {}
        self._held: dict[Key, Decimal] = {}
        self._open: dict[str, Reservation] = {}
        self._stranded: set[str] = set()  # open reservations nothing books fills against
        self._version = 0  # bumped by every reserve, fill and release
        self._free_version = 0  # bumped by every change of a free balance (fill or load)

    @property
    def version(self) -> int:
        """Changes whenever trading touched the ledger; read it before fetching balances."""
        return self._version

    @property
    def free_version(self) -> int:
        """Changes whenever a free balance may have changed (a fill or a load): what a cache
        of anything computed from ``free`` is keyed on."""
        return self._free_version

    # --- balances ---------------------------------------------------------------------------
    def load(self, venue: Venue, balances: dict[str, Balance], if_version: int | None = None) -> bool:
        """Replace ``venue``'s free balances with what the venue reported.

        With ``if_version`` (the ``version`` read before the venue was asked), load only if no
        trade touched the ledger since and none is open (stranded ones aside), so an answer that
        raced a trade is never taken as truth. Return whether it loaded.
        """
        with self._lock:
            if if_version is not None and (if_version != self._version
                                           or self._open.keys() - self._stranded):
                return False
            for key in [k for k in self._free if k[0] is venue]:
                if key[1] not in balances:
                    self._free[key] = ZERO
            for currency, balance in balances.items():
                self._free[(venue, currency)] = balance.free
            self._free_version += 1
            return True

    def free(self, venue: Venue, currency: str) -> Decimal:
        with self._lock:
            return self._free.get((venue, currency), ZERO)

    def available(self, venue: Venue, currency: str) -> Decimal:
        """Free minus every open reservation's hold (may be negative after a drift)."""
        key = (venue, currency)
        with self._lock:
            return self._free.get(key, ZERO) - self._held.get(key, ZERO)

    def free_balances(self) -> dict[Key, Decimal]:
        """Every free balance at one instant (one lock hold, however many assets)."""
        with self._lock:
            return dict(self._free)

    def snapshot(self) -> dict[Key, tuple[Decimal, Decimal]]:
        """``(venue, currency) -> (free, held)`` for every known balance."""
        with self._lock:
            keys = set(self._free) | set(self._held)
            return {k: (self._free.get(k, ZERO), self._held.get(k, ZERO)) for k in keys}

    def open_reservations(self) -> int:
        with self._lock:
            return len(self._open)

    # --- reservations -----------------------------------------------------------------------
    def reserve(self, reservation_id: str, amounts: dict[Key, Decimal]) -> Reservation | str:
        """Hold all ``amounts`` or none; return the reservation, or why it was refused."""
        with self._lock:
            if reservation_id in self._open:
                return f"reservation {reservation_id} already exists"
            for key, amount in amounts.items():
                if amount < 0:
                    return f"cannot reserve a negative amount of {key[1]} on {key[0].value}"
                left = self._free.get(key, ZERO) - self._held.get(key, ZERO)
                if amount > left:
                    return (f"{key[0].value} {key[1]} available {left} is less than the "
                            f"{amount} needed")
            reservation = Reservation(reservation_id)
            for key, amount in amounts.items():
                self._hold(reservation, key, amount)
            self._open[reservation_id] = reservation
            self._version += 1
            return reservation

    def extend(self, reservation: Reservation, venue: Venue, currency: str,
               amount: Decimal) -> bool:
        """Hold ``amount`` more for an open reservation if available (unwind orders)."""
        key = (venue, currency)
        with self._lock:
            if reservation.released or amount < 0:
                return False
            if self._free.get(key, ZERO) - self._held.get(key, ZERO) < amount:
                return False
            self._hold(reservation, key, amount)
            self._version += 1
            return True

    def apply_fill(self, reservation: Reservation, venue: Venue, market: str, side: Side,
                   volume: Decimal, funds: Decimal, fee: Decimal,
                   fills: tuple[Fill, ...] = ()) -> None:
        """Book one order's execution. ``fee`` is the KRW value of every fee (``paid_fee``).

        A buy spends ``funds + fee`` KRW and receives ``volume`` coin; a sell gives ``volume``
        coin and receives ``funds - fee`` KRW. A fee the ``fills`` say was charged in the coin
        (legacy Bithumb) is booked in coin instead: off the coin a buy receives (or on top of
        what a sell gives), and its KRW value (fee x fill price, as in ``paid_fee``) is not
        charged in KRW. What was spent comes out of the trade's hold; what was received is held
        for the trade until ``release``.
        """
        coin, krw = (venue, base_currency(market)), (venue, quote_currency(market))
        coin_fee = coin_fee_krw = ZERO
        for f in fills:
            if f.fee and f.fee_currency == coin[1]:
                coin_fee += f.fee
                coin_fee_krw += f.fee * f.price
        krw_fee = fee - coin_fee_krw
        spent_key, spent, got_key, got = (
            (krw, funds + krw_fee, coin, volume - coin_fee) if side is Side.BUY
            else (coin, volume + coin_fee, krw, funds - krw_fee)
        )
        with self._lock:
            self._free[spent_key] = self._free.get(spent_key, ZERO) - spent
            self._free[got_key] = self._free.get(got_key, ZERO) + got
            self._version += 1
            self._free_version += 1
            if not reservation.released:
                self._hold(reservation, spent_key, -min(spent, reservation.held(*spent_key)))
                self._hold(reservation, got_key, got)

    def strand(self, reservation: Reservation) -> None:
        """Keep ``reservation``'s holds (what its orders may have spent or bought stays
        unspendable by other trades) but stop it blocking ``load``: its trade's resolution gave
        up, so no fill will be booked against it and the venue's balances are the truth."""
        with self._lock:
            if reservation.id in self._open:
                self._stranded.add(reservation.id)

    def release(self, reservation: Reservation) -> None:
        """Drop every hold of ``reservation``; calling it twice is harmless."""
        with self._lock:
            if reservation.released:
                return
            for key, amount in list(reservation.holds.items()):
                self._hold(reservation, key, -amount)
            reservation.released = True
            self._open.pop(reservation.id, None)
            self._stranded.discard(reservation.id)
            self._version += 1

    def _hold(self, reservation: Reservation, key: Key, delta: Decimal) -> None:
        # caller holds self._lock
        reservation.holds[key] = reservation.holds.get(key, ZERO) + delta
        self._held[key] = self._held.get(key, ZERO) + delta
        if reservation.holds[key] == 0:
            del reservation.holds[key]
        if self._held[key] == 0:
            del self._held[key]


def order_side_amounts(side: Side, market: str, venue: Venue, volume: Decimal,
                       price: Decimal, fee_rate: Decimal) -> dict[Key, Decimal]:
    """What an order at worst ``price`` can spend: KRW incl. fee for a buy, coin for a sell."""
    if side is Side.BUY:
        return {(venue, quote_currency(market)): volume * price * (1 + fee_rate)}
    return {(venue, base_currency(market)): volume}
