"""Bithumb API 2.0 REST client (the default): an Upbit clone with a few differences.

Differences from ``UpbitClient`` handled here: JWT with a ``timestamp`` claim; placement on
``POST /v2/orders`` with ``order_type`` / ``client_order_id`` and an ids-only answer; cancel on
``DELETE /v2/order`` followed by a read of the order; ``GET /v1/order`` takes ``uuid`` or
``client_order_id``; open orders from ``GET /v2/orders/pending`` [U: answer assumed to be a
list of order objects, unpaginated]; no tick-size endpoint (fees and minimum from
``/v1/orders/chance`` only). Threading and error rules are the Upbit client's.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from karb.exchanges.bithumb import constants as C
from karb.exchanges.bithumb.auth import BithumbAuth, now_ms
from karb.exchanges.bithumb.parse import parse_place_ack
from karb.exchanges.errors import OrderStateUnknown
from karb.exchanges.ratelimit import Group
from karb.exchanges.upbit import parse
from karb.exchanges.upbit.client import UpbitClient
from karb.model import OrderRequest, OrderResult, Venue, quote_currency
from karb.rules import MarketInfo
from karb.secrets import Credentials


class BithumbClient(UpbitClient):
    """Bithumb over REST (API 2.0). ``credentials=None`` gives a public-only client."""

    venue = Venue.BITHUMB

    def __init__(self, config, credentials: Credentials | None = None, *,
                 clock_ms: Callable[[], int] = now_ms, **kwargs):
        self._clock_ms = clock_ms
        super().__init__(config, credentials, **kwargs)

    def _make_auth(self, credentials: Credentials, nonce_factory: Callable[[], str]):
        return BithumbAuth(credentials.access_key, credentials.secret_key, nonce_factory,
                           self._clock_ms)

    def get_market_info(self, markets: list[str]) -> list[MarketInfo]:
        """Fees and minimum order from ``/v1/orders/chance`` of one market per quote currency,
        applied to all its markets (needs keys); no tick size. Bithumb's fee is the account's
        rate (list price or coupon), the same in every KRW market [U: a per-coin event];
        ``get_market_fees`` reads one market's own answer."""
        fees = self._fees_by_quote(markets)
        return [replace(fees[quote_currency(m)], market=m) if quote_currency(m) in fees else MarketInfo(m)
                for m in markets]

    def place_order(self, request: OrderRequest, priority: bool = False) -> OrderResult:
        body = parse.order_body(self.venue, request, type_key="order_type", id_key="client_order_id")
        answer = self._private("POST", C.PATH_PLACE, group=Group.ORDER, json_body=body,
                               priority=priority, idempotent=False, client_id=request.client_id)
        return self._placement_result(request, answer)

    def _placement_result(self, request: OrderRequest, answer) -> OrderResult:
        # Ids only; a 2xx we cannot read means the order probably exists.
        try:
            return parse_place_ack(request, answer)
        except (KeyError, TypeError, AttributeError) as exc:
            raise OrderStateUnknown(self.venue, f"placement answer unreadable: {exc}",
                                    request.client_id) from exc

    def get_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        query = self._one_id(order_id, client_id, "uuid", "client_order_id")
        return self._parsed(parse.parse_order, self.venue, self._private("GET", C.PATH_ORDER, query))

    def cancel_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        """DELETE ``/v2/order`` (answers ids only), then read the order back."""
        query = self._one_id(order_id, client_id, "order_id", "client_order_id")
        answer = self._private("DELETE", C.PATH_CANCEL, query, group=Group.ORDER, priority=True,
                               idempotent=False, client_id=client_id)
        venue_id = self._parsed(lambda a: str(a["order_id"]), answer)
        return self.get_order(order_id=venue_id)

    def get_open_orders(self, market: str | None = None) -> list:
        query = [("market", market)] if market else []
        body = self._private("GET", C.PATH_PENDING, query)
        return self._parsed(lambda b: [parse.parse_order(self.venue, o) for o in b], body)
