"""Orders and accounts of a simulated venue, in exact ``Decimal``.

``SimOrder`` is the venue's record of one order (Upbit / Bithumb 2.0 vocabulary: ``ord_type``
``limit|price|market|best``, ``state`` ``wait|done|cancel``). ``Account`` holds free and locked
balances; every change goes through ``lock`` / ``unlock`` / ``settle`` so the totals stay
start +/- fills +/- fees exactly. ``Reject`` is a venue-neutral refusal that each REST layer
turns into its venue's error body.

Not thread-safe by themselves: ``SimExchange`` calls them under its lock.
"""
from __future__ import annotations

import decimal
import enum
from dataclasses import dataclass, field, replace
from decimal import Decimal

from karb.model import Side

MONEY = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN, traps=[decimal.InvalidOperation])
ZERO = Decimal(0)


class RejectKind(enum.Enum):
    BAD_PARAMS = "bad_params"  # missing/invalid parameter
    BAD_ORDER = "bad_order"  # parameters that do not fit the order type (create_*_error)
    INVALID_PRICE = "invalid_price"  # not on the tick
    INVALID_VOLUME = "invalid_volume"  # too many decimals
    UNDER_MIN = "under_min_total"
    OVER_MAX = "over_max_total"  # above the venue's per-order maximum (1,000,000,000 KRW)
    INSUFFICIENT = "insufficient_funds"
    DUPLICATE_ID = "duplicate_identifier"
    NOT_FOUND = "order_not_found"
    UNKNOWN_MARKET = "unknown_market"
    REJECTED = "rejected"  # injected fault: the venue refused to create the order
    NOT_CANCELLABLE = "not_cancellable"


class Reject(Exception):
    def __init__(self, kind: RejectKind, message: str, side: Side | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.side = side


@dataclass
class SimTrade:
    price: Decimal
    volume: Decimal
    funds: Decimal
    fee: Decimal
    maker: bool
    created_at: str
    uuid: str


@dataclass
class SimOrder:
    uuid: str
    access_key: str
    market: str
    side: Side
    ord_type: str  # limit | price | market | best
    price: Decimal | None  # limit price, or KRW to spend for price / best buy
    volume: Decimal | None
    tif: str | None  # ioc | fok | post_only | None (rests)
    identifier: str | None
    created_at: str
    fee_rate: Decimal
    state: str = "wait"
    executed_volume: Decimal = ZERO
    executed_funds: Decimal = ZERO
    paid_fee: Decimal = ZERO
    locked: Decimal = ZERO  # still locked for this order: KRW (bid, fee included) or coin (ask)
    reserved_fee: Decimal = ZERO
    trades: list[SimTrade] = field(default_factory=list)
    cancel_type: str | None = None
    created_ns: int = 0  # wall clock, ns (``created_at`` has the venues' one-second resolution)
    visible_at: float = 0.0  # monotonic; before it, look-ups answer "not found" (slow_registration)
    accepted_locked: Decimal = ZERO  # what placement locked (shown while fills are not visible)
    fill_visible_at: float = 0.0  # monotonic; before it, reads show the order as just accepted
    not_ready_until: float = 0.0  # monotonic; before it, Bithumb reads answer order_not_ready

    @property
    def remaining_volume(self) -> Decimal:
        """The unfilled volume, kept after a cancel as the venues do (a cancelled order of 1
        that filled 0.4 shows ``remaining_volume`` 0.6); 0 once fully filled."""
        if self.volume is None:
            return ZERO
        return self.volume - self.executed_volume

    @property
    def is_open(self) -> bool:
        return self.state == "wait"

    def seen_at(self, now: float) -> "SimOrder":
        """The order as a read at monotonic ``now`` shows it: before ``fill_visible_at``, as
        accepted, else as it is."""
        return self if now >= self.fill_visible_at else self.accepted()

    def accepted(self) -> "SimOrder":
        """The order as just accepted: state wait, nothing executed, the placement's lock."""
        return replace(self, state="wait", executed_volume=ZERO, executed_funds=ZERO, paid_fee=ZERO,
                       locked=self.accepted_locked, trades=[])


class Account:
    """Balances of one API key: currency -> [free, locked]."""

    def __init__(self, access_key: str, secret_key: str, balances: dict[str, Decimal]):
        self.access_key = access_key
        self.secret_key = secret_key
        self.start = dict(balances)
        self._bal: dict[str, list[Decimal]] = {c: [Decimal(v), ZERO] for c, v in balances.items()}

    def free(self, currency: str) -> Decimal:
        return self._bal.get(currency, [ZERO, ZERO])[0]

    def locked(self, currency: str) -> Decimal:
        return self._bal.get(currency, [ZERO, ZERO])[1]

    def currencies(self) -> list[str]:
        return list(self._bal)

    def lock(self, currency: str, amount: Decimal) -> None:
        entry = self._bal.setdefault(currency, [ZERO, ZERO])
        if amount > entry[0]:
            raise ValueError(f"cannot lock {amount} {currency}, free is {entry[0]}")
        entry[0] = MONEY.subtract(entry[0], amount)
        entry[1] = MONEY.add(entry[1], amount)

    def unlock(self, currency: str, amount: Decimal) -> None:
        entry = self._bal[currency]
        entry[1] = MONEY.subtract(entry[1], amount)
        entry[0] = MONEY.add(entry[0], amount)

    def pay_locked(self, currency: str, amount: Decimal) -> None:
        entry = self._bal[currency]
        entry[1] = MONEY.subtract(entry[1], amount)

    def receive(self, currency: str, amount: Decimal) -> None:
        entry = self._bal.setdefault(currency, [ZERO, ZERO])
        entry[0] = MONEY.add(entry[0], amount)


def dec_str(value: Decimal | None) -> str | None:
    """A venue number string: no exponent, no trailing zeros (``"0.0005"``, ``"1000"``)."""
    if value is None:
        return None
    if not value:
        return "0"
    text = format(value.normalize(MONEY), "f")
    return text


def parse_decimal(value: object, name: str) -> Decimal | None:
    """A request number (string or JSON number) as an exact Decimal; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Reject(RejectKind.BAD_PARAMS, f"{name} must be a number")
    try:
        number = Decimal(str(value))
    except decimal.InvalidOperation:
        raise Reject(RejectKind.BAD_PARAMS, f"{name} is not a number: {value!r}") from None
    if not number.is_finite() or number <= 0:
        raise Reject(RejectKind.BAD_PARAMS, f"{name} must be positive, was {value!r}")
    return number
