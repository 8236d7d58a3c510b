"""Upbit JSON <-> model types. Bithumb 2.0 answers in the same shapes and reuses these.

Quotation (public) bodies carry JSON numbers; account and order bodies carry strings. Every
amount that leaves this module for the edges is a ``Decimal`` (numbers through ``str()``);
book levels stay floats for the hot path. Functions raise ``KeyError`` / ``ValueError`` /
``TypeError`` on a malformed body; the client turns that into a typed venue error.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from karb.exchanges.errors import InvalidOrder, UnknownVenueError
from karb.model import (
    Balance, BookView, Fill, OrderRequest, OrderResult, OrderStatus, OrderType, Side,
    TimeInForce, Venue,
)
from karb.rules import MarketInfo

STATES = {"wait": OrderStatus.OPEN, "watch": OrderStatus.OPEN,
          "done": OrderStatus.DONE, "cancel": OrderStatus.CANCELLED}
ZERO = Decimal(0)


def dec(value) -> Decimal | None:
    """A venue number (string or JSON number) as an exact Decimal; None when absent."""
    if value is None or value == "":
        return None
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return result


def fmt_decimal(value: Decimal) -> str:
    """``Decimal`` for the wire: plain digits, no exponent, no trailing zeros (1E+8 -> 100000000)."""
    return format(value.normalize(), "f")


# --- public -----------------------------------------------------------------------------------

def parse_markets(body: list) -> list[str]:
    """``[{"market": "KRW-BTC", "korean_name": ..., "english_name": ...}, ...]`` -> KRW markets."""
    return [item["market"] for item in body if str(item["market"]).startswith("KRW-")]


def parse_ticker(body: list) -> dict[str, Decimal]:
    """``[{"market": "KRW-BTC", "trade_price": 140000000.0, ...}]`` -> last price per market."""
    return {item["market"]: dec(item["trade_price"]) for item in body}


def parse_orderbook(venue: Venue, market: str, body: list, recv_ns: int) -> BookView:
    """One market of a ``GET /v1/orderbook`` answer as a ``BookView``.

    ::

        [{"market": "KRW-BTC", "timestamp": 1704067200123, "total_ask_size": 1.2,
          "total_bid_size": 3.4, "orderbook_units": [
            {"ask_price": 140010000.0, "bid_price": 140000000.0, "ask_size": 0.5, "bid_size": 0.7},
            ...], "level": 0}]

    Levels with size 0 are dropped; bids best (highest) first, asks best (lowest) first. A
    crossed snapshot is returned with ``valid=False``. A µs timestamp (Bithumb's single-market
    answer before 2025-11) is turned into ms.
    """
    entry = next(item for item in body if item["market"] == market)
    units = entry["orderbook_units"]
    bids = sorted(((float(u["bid_price"]), float(u["bid_size"])) for u in units
                   if float(u["bid_size"]) > 0), reverse=True)
    asks = sorted((float(u["ask_price"]), float(u["ask_size"])) for u in units
                  if float(u["ask_size"]) > 0)
    crossed = bool(bids and asks and bids[0][0] >= asks[0][0])
    ts = int(entry.get("timestamp") or 0)
    if ts > 10**14:
        ts //= 1000
    return BookView(venue, market, tuple(bids), tuple(asks), 0, ts, recv_ns, not crossed)


def parse_instruments(body: list) -> dict[str, Decimal]:
    """``[{"market": "KRW-BTC", "quote_currency": "KRW", "tick_size": "1000", ...}]`` -> tick."""
    return {item["market"]: dec(item["tick_size"]) for item in body}


# --- account ----------------------------------------------------------------------------------

def parse_balances(body: list) -> dict[str, Balance]:
    """``[{"currency": "KRW", "balance": "1000000.0", "locked": "0.0", ...}]``."""
    return {
        item["currency"]: Balance(item["currency"], dec(item["balance"]) or ZERO,
                                  dec(item.get("locked")) or ZERO)
        for item in body
    }


def parse_chance(market: str, body: dict) -> MarketInfo:
    """``GET /v1/orders/chance``: fees (``bid_fee``, ``ask_fee``, ``maker_*``) and ``min_total``.

    The taker fee is the larger of bid/ask; the maker fee likewise (taker when not given).
    """
    taker = max(dec(body["bid_fee"]), dec(body["ask_fee"]))
    makers = [dec(body.get(k)) for k in ("maker_bid_fee", "maker_ask_fee")]
    makers = [m for m in makers if m is not None]
    rules = body.get("market") or {}
    totals = [dec((rules.get(side) or {}).get("min_total")) for side in ("bid", "ask")]
    totals = [t for t in totals if t is not None]
    return MarketInfo(market, min_total=max(totals) if totals else None, taker_fee=taker,
                      maker_fee=max(makers) if makers else taker)


# --- orders -----------------------------------------------------------------------------------

def order_body(venue: Venue, request: OrderRequest, type_key: str = "ord_type",
               id_key: str = "identifier") -> dict[str, str]:
    """The JSON body of a placement, every value a string, in the order it is hashed.

    Raises ``InvalidOrder`` (code ``client_validation``; nothing sent) for a request the venue
    would refuse anyway: missing price/volume/funds, non-positive amounts, a time-in-force on
    a market order.
    """
    def need(value: Decimal | None, name: str) -> str:
        if value is None or not value.is_finite() or value <= 0:
            raise InvalidOrder(venue, f"{request.order_type.name} order needs a positive {name}, "
                               f"was {value}", "client_validation")
        return fmt_decimal(value)

    if request.venue is not venue:
        raise InvalidOrder(venue, f"order is for {request.venue.value}", "client_validation")
    body = {"market": request.market, "side": request.side.value}
    if request.order_type is OrderType.LIMIT:
        body["volume"] = need(request.volume, "volume")
        body["price"] = need(request.price, "price")
    elif request.order_type is OrderType.MARKET_BUY:
        body["price"] = need(request.funds, "funds")
    else:
        body["volume"] = need(request.volume, "volume")
    body[type_key] = request.order_type.value
    if request.tif is not TimeInForce.GTC:
        if request.order_type is not OrderType.LIMIT:
            raise InvalidOrder(venue, f"time_in_force {request.tif.value} needs a limit order",
                               "client_validation")
        body["time_in_force"] = request.tif.value
    body[id_key] = request.client_id
    return body


def _order_type(raw: str, side: Side) -> OrderType:
    if raw == "best":  # best-price orders behave as market orders of that side
        return OrderType.MARKET_BUY if side is Side.BUY else OrderType.MARKET_SELL
    return OrderType(raw)


def parse_order(venue: Venue, body: dict, client_id: str | None = None) -> OrderResult:
    """An Upbit-shaped order object (``GET /v1/order``, ``POST /v1/orders``, cancel, lists).

    ::

        {"uuid": "cdd92199-...", "side": "bid", "ord_type": "limit", "price": "100000000",
         "state": "wait", "market": "KRW-BTC", "created_at": "2024-01-01T09:00:00+09:00",
         "volume": "0.01", "remaining_volume": "0.01", "paid_fee": "0", "executed_volume": "0",
         "identifier": "arb-...", "trades": [{"uuid": "...", "price": "...", "volume": "...", "funds": "..."}]}

    Bithumb 2.0 spells ``order_type`` / ``order_id`` / ``client_order_id`` in some answers;
    both spellings are read. ``executed_funds`` is the venue's field when present, else the
    sum of the trades' funds. For a market buy ``price`` is the KRW budget, as the venue says.
    """
    state = body["state"]
    if state not in STATES:
        raise UnknownVenueError(venue, f"unknown order state {state!r}", "bad_state")
    side = Side(body["side"])
    fills = tuple(Fill(dec(t["price"]), dec(t["volume"]), dec(t["funds"]), t.get("uuid"))
                  for t in body.get("trades") or ())
    executed_volume = dec(body.get("executed_volume"))
    executed_funds = dec(body.get("executed_funds"))
    return OrderResult(
        venue=venue,
        market=body["market"],
        order_id=str(body.get("uuid") or body["order_id"]),
        client_id=body.get("identifier") or body.get("client_order_id") or client_id,
        side=side,
        order_type=_order_type(body.get("ord_type") or body["order_type"], side),
        status=STATES[state],
        price=dec(body.get("price")),
        volume=dec(body.get("volume")),
        executed_volume=executed_volume if executed_volume is not None
        else sum((f.volume for f in fills), ZERO),
        executed_funds=executed_funds if executed_funds is not None
        else sum((f.funds for f in fills), ZERO),
        paid_fee=dec(body.get("paid_fee")) or ZERO,
        remaining_volume=dec(body.get("remaining_volume")) or ZERO,
        fills=fills,
        created_at=body.get("created_at") or "",
    )
