"""Small immutable types shared by every part of the engine.

Two worlds meet here:

* the hot path (feeds -> books -> strategy) works in ``float`` and plain tuples, because
  object creation per level costs more than the arithmetic;
* the edges (orders sent to venues, fills, balances, PnL) work in ``Decimal``, because money
  sent to a venue or booked in the ledger must be exact.

Conversion happens exactly once, where a signal becomes an order (``karb.strategy``).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple


class Venue(str, enum.Enum):
    UPBIT = "upbit"
    BITHUMB = "bithumb"

    @property
    def other(self) -> "Venue":
        return Venue.BITHUMB if self is Venue.UPBIT else Venue.UPBIT


VENUES = tuple(Venue)  # iterating the enum itself costs a generator per loop; hot paths use this


class Side(str, enum.Enum):
    """Order side. Upbit and Bithumb 2.0 spell these ``bid`` / ``ask`` on the wire."""

    BUY = "bid"
    SELL = "ask"

    @property
    def opposite(self) -> "Side":
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(str, enum.Enum):
    LIMIT = "limit"
    MARKET_BUY = "price"  # spend a KRW amount (``funds``)
    MARKET_SELL = "market"  # sell a volume


class TimeInForce(str, enum.Enum):
    GTC = "gtc"  # rests until cancelled; sent as no time_in_force at all
    IOC = "ioc"
    FOK = "fok"


class OrderStatus(str, enum.Enum):
    """The venue's view of an order, normalised.

    Upbit/Bithumb ``wait``/``watch`` -> OPEN, ``done`` -> DONE, ``cancel`` -> CANCELLED.
    An IOC that filled partly ends DONE on Bithumb and CANCELLED on Upbit; callers look at
    ``executed_volume`` rather than the status to learn what filled.
    """

    OPEN = "open"
    DONE = "done"
    CANCELLED = "cancelled"


# --- market data (hot path: floats and tuples) ---------------------------------------------

Level = tuple[float, float]
"""(price, size). Bids are ordered best (highest) first, asks best (lowest) first."""


class BookView(NamedTuple):
    """Immutable top-N picture of one venue's book for one market.

    Published by reference after each change (``Book.view``), so readers never take the
    book's lock. ``version`` increases by one per applied change; ``exch_ts_ms`` is the
    venue's timestamp (ms); ``recv_ns`` is our ``time.monotonic_ns()`` when the frame arrived.
    ``valid`` is False while the book cannot be trusted (crossed, reconnecting, no snapshot).
    ``lag_ns`` is how far the venue's timestamp was behind our wall clock at receipt, beyond the
    smallest such lag this book has seen (that minimum stands for clock offset plus network
    latency; see ``karb.book``): a venue that is publishing late has a growing ``lag_ns``
    though its frames arrive on time. Freshness checks use ``as_of_ns``, not ``recv_ns``.
    """

    venue: Venue
    market: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    version: int
    exch_ts_ms: int
    recv_ns: int
    valid: bool
    lag_ns: int = 0

    @property
    def as_of_ns(self) -> int:
        """Monotonic time the content is as of: the receive time, less the venue's lag."""
        return self.recv_ns - self.lag_ns

    @property
    def best_bid(self) -> float | None:
        return self.bids[0][0] if self.bids else None

    @property
    def best_ask(self) -> float | None:
        return self.asks[0][0] if self.asks else None


# --- account and orders (edges: Decimal) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Balance:
    currency: str
    free: Decimal
    locked: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """One order as we intend to send it. Prices and volumes are already on the venue grid.

    LIMIT needs ``price`` and ``volume``; MARKET_BUY needs ``funds`` (KRW to spend);
    MARKET_SELL needs ``volume``. ``client_id`` is the idempotency key (Upbit ``identifier``,
    Bithumb ``client_order_id``): a venue never accepts it twice.
    """

    venue: Venue
    market: str
    side: Side
    order_type: OrderType
    client_id: str
    price: Decimal | None = None
    volume: Decimal | None = None
    funds: Decimal | None = None
    tif: TimeInForce = TimeInForce.GTC


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution (a venue "trade") of one of our orders.

    ``fee`` / ``fee_currency``: what this execution was charged, in the currency it was charged
    in. Upbit and Bithumb 2.0 charge KRW (and report the fee per order, so it stays 0 here);
    legacy Bithumb reports it per execution and may charge it in the coin, which then comes off
    the coin received (``Ledger.apply_fill``).
    """

    price: Decimal
    volume: Decimal
    funds: Decimal  # price * volume as the venue reports it, KRW
    trade_id: str | None = None  # the venue's id of this execution (Upbit/Bithumb 2.0 ``uuid``)
    fee: Decimal = Decimal(0)
    fee_currency: str = "KRW"


@dataclass(frozen=True, slots=True)
class OrderResult:
    """What a venue says about one order. Volumes and amounts are exact decimals.

    ``executed_funds`` is the KRW value of what filled (before fees); ``paid_fee`` is in KRW
    (a fee charged in coin counted at its fill's price; the coin amount is on the fills).
    """

    venue: Venue
    market: str
    order_id: str
    client_id: str | None
    side: Side
    order_type: OrderType
    status: OrderStatus
    price: Decimal | None = None
    volume: Decimal | None = None
    executed_volume: Decimal = Decimal(0)
    executed_funds: Decimal = Decimal(0)
    paid_fee: Decimal = Decimal(0)
    remaining_volume: Decimal = Decimal(0)
    fills: tuple[Fill, ...] = ()
    created_at: str = ""

    @property
    def avg_price(self) -> Decimal | None:
        if self.executed_volume == 0:
            return None
        return self.executed_funds / self.executed_volume

    @property
    def is_final(self) -> bool:
        return self.status is not OrderStatus.OPEN


@dataclass(frozen=True, slots=True)
class Signal:
    """An executable opportunity: buy ``volume`` on ``buy_venue``, sell it on ``sell_venue``.

    ``buy_price`` / ``sell_price`` are the worst acceptable limit prices, on tick (buy rounded
    down, sell rounded up, so the edge is never worse than computed). ``buy_vwap`` /
    ``sell_vwap`` are the expected average prices from walking the books. Basis points are
    of the buy VWAP. ``est_profit_krw`` is net of both taker fees.
    """

    market: str
    buy_venue: Venue
    sell_venue: Venue
    volume: Decimal
    buy_price: Decimal
    sell_price: Decimal
    buy_vwap: float
    sell_vwap: float
    gross_bps: float
    net_bps: float
    est_profit_krw: Decimal
    created_ns: int
    book_versions: tuple[int, int] = (0, 0)  # (buy venue book, sell venue book)
    book_recv_ns: tuple[int, int] = (0, 0)
    id: str = field(default="")
    # False when no book changed since the market's last evaluation (a cooldown ended, a
    # balance moved): the signal is then no reaction to a frame, so frame->signal latency
    # is not sampled for it
    on_update: bool = True

    @property
    def direction(self) -> str:
        """``upbit_sell`` means: sell on Upbit, buy on Bithumb."""
        return f"{self.sell_venue.value}_sell"


def base_currency(market: str) -> str:
    """``KRW-BTC`` -> ``BTC``."""
    return market.split("-", 1)[1]


def quote_currency(market: str) -> str:
    """``KRW-BTC`` -> ``KRW``."""
    return market.split("-", 1)[0]
