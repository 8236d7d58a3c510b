"""Bithumb JSON -> model types, for what differs from Upbit's shapes.

API 2.0 answers like Upbit (``karb.exchanges.upbit.parse`` reads them) except the placement
acknowledgement. Legacy answers are ``{"status": "0000", "data": ...}`` envelopes with every
number a string, ``BTC_KRW`` symbols and its own error codes (``5600`` carries free text).
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from karb.exchanges.errors import (
    AuthError, InsufficientFunds, InvalidOrder, OrderNotFound, UnknownVenueError, VenueError,
    VenueUnavailable,
)
from karb.exchanges.http import classify, retry_after_of
from karb.exchanges.upbit.parse import ZERO, dec
from karb.model import (
    Balance, BookView, Fill, OrderRequest, OrderResult, OrderStatus, OrderType, Side, Venue,
)
from karb.rules import to_upbit_symbol

LEGACY_OK = "0000"
LEGACY_STATES = {"pending": OrderStatus.OPEN, "completed": OrderStatus.DONE,
                 "cancel": OrderStatus.CANCELLED}
# 5600 "CUSTOM NOTICE" is decided by its text [U: wording from pybithumb/ccxt users' reports
# and the sim's messages]. "Already filled or cancelled" counts as not found: nothing to act on.
_INSUFFICIENT = ("부족", "초과", "insufficient", "not enough")
_MINIMUM = ("최소", "minimum", "below", "단위", "tick", "decimals")
_NOT_FOUND = ("존재하지", "찾지 못", "찾을 수 없", "이미 체결", "취소된 주문", "not exist",
              "not found")
_MAINTENANCE = ("점검", "maintenance")


# --- API 2.0 ----------------------------------------------------------------------------------

def parse_place_ack(request: OrderRequest, body: dict) -> OrderResult:
    """``POST /v2/orders`` answers ids only::

        {"order_id": "C0101000003152350309", "market": "KRW-BTC", "side": "bid",
         "order_type": "limit", "created_at": "2026-07-04T14:39:04+09:00", "stp_type": "cancel_taker"}

    The result is OPEN with nothing executed; ``get_order`` tells what filled.
    """
    return OrderResult(
        venue=Venue.BITHUMB, market=body.get("market") or request.market,
        order_id=str(body["order_id"]), client_id=request.client_id, side=request.side,
        order_type=request.order_type, status=OrderStatus.OPEN,
        price=request.funds if request.order_type is OrderType.MARKET_BUY else request.price,
        volume=request.volume, remaining_volume=request.volume or ZERO,
        created_at=body.get("created_at") or "",
    )


PENDING_LIST_KEYS = ("orders", "data")  # [U] the list's key in a cursor page (not in the stored docs)


def parse_pending_page(body: Any) -> tuple[list, str | None]:
    """One ``GET /v2/orders/pending`` answer -> (order objects, next cursor or None).

    Two shapes: the bare list of order objects the endpoint first answered, and the cursor
    page of the 2026-07-09 update (apidocs.bithumb.com changelog "주문 조회 기능 고도화": page
    size ≤ 100, ``next_key`` cursor; the v2.1.5 TWAP list documents the page fields
    ``has_next`` and ``next_key`` and the request parameters ``next_key`` / ``limit``)::

        {"orders": [{...order...}, ...], "has_next": true, "next_key": "opaque-cursor"}

    Anything else raises ``ValueError`` (the client makes it ``UnknownVenueError``), so a
    caller never mistakes an unreadable answer for "no open orders".
    """
    if isinstance(body, list):
        return body, None
    if not isinstance(body, dict):
        raise ValueError(f"pending orders answer is a {type(body).__name__}")
    lists = [key for key in PENDING_LIST_KEYS if isinstance(body.get(key), list)]
    if len(lists) != 1 or "has_next" not in body or not isinstance(body["has_next"], bool):
        raise ValueError(f"pending orders page not understood (keys {sorted(body)})")
    next_key = body.get("next_key")
    if body["has_next"]:
        if not isinstance(next_key, str) or not next_key:
            raise ValueError("pending orders page says has_next without a next_key")
        return body[lists[0]], next_key
    return body[lists[0]], None


# --- legacy errors ----------------------------------------------------------------------------

def legacy_classify(code: str, message: str, http_status: int = 200) -> VenueError:
    """Map a legacy ``status`` code (``5300``, ``5600``...) and its message to a typed error."""
    venue, text = Venue.BITHUMB, message.lower()
    if code == "5600":
        if any(word in text for word in _INSUFFICIENT):
            return InsufficientFunds(venue, message, code, http_status)
        if any(word in text for word in _MINIMUM):
            return InvalidOrder(venue, message, code, http_status)
        if any(word in text for word in _NOT_FOUND):
            return OrderNotFound(venue, message, code, http_status)
        if any(word in text for word in _MAINTENANCE):
            return VenueUnavailable(venue, message, code, http_status)
        return UnknownVenueError(venue, message, code, http_status)
    if code in ("5100", "5302", "5500"):  # bad request, method not allowed, invalid parameter
        return InvalidOrder(venue, message, code, http_status)
    if code == "5200" or code.startswith("53"):  # not member, invalid api key / permissions
        return AuthError(venue, message, code, http_status)
    if code == "5400":  # database fail
        return VenueUnavailable(venue, message, code, http_status)
    return UnknownVenueError(venue, message, code, http_status)


def legacy_error(venue: Venue, status: int, body: Any, text: str, headers) -> VenueError | None:
    """Transport hook: HTTP errors, and 200 answers whose ``status`` is not ``0000``."""
    code = str(body.get("status", "")) if isinstance(body, dict) else ""
    message = str(body.get("message", "")) if isinstance(body, dict) else text[:200]
    if status in (401, 403, 418, 429) or status >= 500:  # HTTP-level meaning wins
        return classify(venue, status, code, message, retry_after_of(headers))
    if isinstance(body, dict) and code != LEGACY_OK:
        return legacy_classify(code, message, status)
    if status >= 400:
        return classify(venue, status, code, message, retry_after_of(headers))
    return None


# --- legacy public ----------------------------------------------------------------------------

def parse_legacy_ticker(data: dict) -> dict[str, Decimal]:
    """``/public/ticker/ALL_KRW`` data: ``{"BTC": {"closing_price": "140000000", ...}, "date": ...}``."""
    return {f"KRW-{base}": dec(item["closing_price"]) for base, item in data.items()
            if isinstance(item, dict)}


def parse_legacy_orderbook(market: str, data: dict, recv_ns: int) -> BookView:
    """``/public/orderbook/BTC_KRW`` data::

        {"timestamp": "1704067200123", "payment_currency": "KRW", "order_currency": "BTC",
         "bids": [{"price": "140000000", "quantity": "0.75"}, ...], "asks": [...]}
    """
    bids = sorted(((float(b["price"]), float(b["quantity"])) for b in data["bids"]
                   if float(b["quantity"]) > 0), reverse=True)
    asks = sorted((float(a["price"]), float(a["quantity"])) for a in data["asks"]
                  if float(a["quantity"]) > 0)
    crossed = bool(bids and asks and bids[0][0] >= asks[0][0])
    ts = int(data.get("timestamp") or 0)
    return BookView(Venue.BITHUMB, market, tuple(bids), tuple(asks), 0, ts, recv_ns, not crossed)


# --- legacy account and orders ----------------------------------------------------------------

def parse_legacy_balances(data: dict) -> dict[str, Balance]:
    """``/info/balance`` data: ``available_krw``, ``in_use_krw``, ``total_btc`` ... per currency."""
    balances = {}
    for key, value in data.items():
        if key.startswith("available_"):
            currency = key.removeprefix("available_")
            balances[currency.upper()] = Balance(currency.upper(), dec(value) or ZERO,
                                                 dec(data.get(f"in_use_{currency}")) or ZERO)
    return balances


def parse_legacy_order_detail(order_id: str, data: Any, client_id: str | None,
                              order_type: OrderType) -> OrderResult:
    """``/info/order_detail`` data (an object, or a one-item list in older answers)::

        {"order_date": "1704067200123456", "type": "bid", "order_status": "Completed",
         "order_currency": "BTC", "payment_currency": "KRW", "order_price": "140000000",
         "order_qty": "0.01", "cancel_date": "", "cancel_type": "",
         "contract": [{"transaction_date": "...", "price": "140000000", "units": "0.01",
                       "fee_currency": "KRW", "fee": "350", "total": "1400000"}]}

    Each fill carries its fee and ``fee_currency`` (a buy may be charged in the coin, which the
    ledger then takes off the coin received); ``paid_fee`` is their KRW value (a coin fee at its
    fill's price).
    """
    if isinstance(data, list):
        data = data[0]
    status = LEGACY_STATES.get(str(data["order_status"]).lower())
    if status is None:
        raise UnknownVenueError(Venue.BITHUMB, f"unknown order_status {data['order_status']!r}",
                                "bad_state")
    fills, fee = [], ZERO
    for c in data.get("contract") or ():
        price, units = dec(c["price"]), dec(c["units"])
        fill_fee, fee_currency = dec(c.get("fee")) or ZERO, str(c.get("fee_currency") or "KRW").upper()
        fills.append(Fill(price, units, dec(c.get("total")) or price * units,
                          fee=fill_fee, fee_currency=fee_currency))
        fee += fill_fee * (1 if fee_currency == "KRW" else price)
    volume = dec(data.get("order_qty"))
    executed = sum((f.volume for f in fills), ZERO)
    return OrderResult(
        venue=Venue.BITHUMB, market=f"{data['payment_currency']}-{data['order_currency']}",
        order_id=order_id, client_id=client_id, side=Side(data["type"]), order_type=order_type,
        status=status, price=dec(data.get("order_price")), volume=volume,
        executed_volume=executed, executed_funds=sum((f.funds for f in fills), ZERO),
        paid_fee=fee, remaining_volume=max(ZERO, (volume or ZERO) - executed), fills=tuple(fills),
        created_at=str(data.get("order_date") or data.get("transaction_date") or ""),
    )


def parse_legacy_open_order(item: dict, client_id: str | None = None) -> OrderResult:
    """One ``/info/orders`` item::

        {"order_currency": "BTC", "payment_currency": "KRW", "order_id": "C0101...",
         "order_date": "1704067200123456", "type": "bid", "units": "0.01",
         "units_remaining": "0.004", "price": "140000000"}

    ``executed_funds`` is estimated at the order's price; ``get_order`` is authoritative.
    """
    units, remaining, price = dec(item["units"]), dec(item["units_remaining"]), dec(item["price"])
    executed = units - remaining
    return OrderResult(
        venue=Venue.BITHUMB, market=to_upbit_symbol(f"{item['order_currency']}_{item['payment_currency']}"),
        order_id=str(item["order_id"]), client_id=client_id, side=Side(item["type"]),
        order_type=OrderType.LIMIT, status=OrderStatus.OPEN, price=price, volume=units,
        executed_volume=executed, executed_funds=executed * price, remaining_volume=remaining,
        created_at=str(item.get("order_date") or ""),
    )
