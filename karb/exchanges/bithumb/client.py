"""Bithumb API 2.0 REST client (the default): an Upbit clone with a few differences.

Differences from ``UpbitClient`` handled here: JWT with a ``timestamp`` claim; placement on
``POST /v2/orders`` with ``order_type`` / ``client_order_id`` and an ids-only answer; cancel on
``DELETE /v2/order`` followed by a read of the order; ``GET /v1/order`` takes ``uuid`` or
``client_order_id``; open orders from ``GET /v2/orders/pending``, in either shape the venue
has used (a bare list, or since 2026-07-09 ``next_key`` cursor pages, followed to the end;
see ``parse.parse_pending_page``); no tick-size endpoint (fees and minimum from
``/v1/orders/chance`` only). Threading and error rules are the Upbit client's.

Reading an order right after placing it may answer ``422 order_not_ready`` (the venue is still
registering it): order reads retry that for up to ``NOT_READY_WAIT_S``, so a cancel whose
read-back comes too soon is not reported as failed.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

from loguru import logger

from karb.exchanges.bithumb import constants as C
from karb.exchanges.bithumb.auth import BithumbAuth, now_ms
from karb.exchanges.bithumb.parse import parse_pending_page, parse_place_ack
from karb.exchanges.errors import OrderNotReady, OrderStateUnknown, UnknownVenueError
from karb.exchanges.market_state import parse_bithumb_states
from karb.exchanges.ratelimit import Group
from karb.exchanges.upbit import parse
from karb.exchanges.upbit.client import UpbitClient
from karb.model import OrderRequest, OrderResult, Venue, quote_currency
from karb.rules import MarketInfo
from karb.secrets import Credentials


class BithumbClient(UpbitClient):
    """Bithumb over REST (API 2.0). ``credentials=None`` gives a public-only client."""

    venue = Venue.BITHUMB

    NOT_READY_WAIT_S = 2.0  # how long an order read keeps retrying 422 order_not_ready
    NOT_READY_FIRST_PAUSE_S = 0.02  # then doubling, at most 0.2 s between reads

    def __init__(self, config, credentials: Credentials | None = None, *,
                 clock_ms: Callable[[], int] = now_ms, **kwargs):
        self._clock_ms = clock_ms
        self._pause = kwargs.get("sleep") or time.sleep
        super().__init__(config, credentials, **kwargs)

    def _make_auth(self, credentials: Credentials, nonce_factory: Callable[[], str]):
        return BithumbAuth(credentials.access_key, credentials.secret_key, nonce_factory,
                           self._clock_ms)

    def get_market_states(self) -> dict[str, str | None]:
        """Every listed KRW market with why Bithumb flags it (``market_warning`` and the alert
        list), or None (``karb.exchanges.market_state``)."""
        body = self._public(C.PATH_MARKETS, [("isDetails", "true")])
        warnings = self._public(C.PATH_WARNINGS)
        return self._parsed(parse_bithumb_states, body, warnings)

    def get_market_info(self, markets: list[str]) -> list[MarketInfo]:
        """Fees and minimum order from ``/v1/orders/chance`` of one market per quote currency,
        applied to all its markets (needs keys); no tick size. Bithumb's fee is the account's
        rate (list price or coupon), the same in every KRW market [U: a per-coin event];
        ``get_market_fees`` reads one market's own answer."""
        fees = self._fees_by_quote(markets)
        return [replace(fees[quote_currency(m)], market=m) if quote_currency(m) in fees else MarketInfo(m)
                for m in markets]

    def _order_body(self, request: OrderRequest) -> tuple[str, dict]:
        return C.PATH_PLACE, parse.order_body(self.venue, request, type_key="order_type",
                                              id_key="client_order_id")

    def _placement_result(self, request: OrderRequest, answer) -> OrderResult:
        # Ids only; a 2xx we cannot read means the order probably exists.
        try:
            return parse_place_ack(request, answer)
        except (KeyError, TypeError, AttributeError) as exc:
            raise OrderStateUnknown(self.venue, f"placement answer unreadable: {exc}",
                                    request.client_id) from exc

    def get_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        """``GET /v1/order``; ``422 order_not_ready`` is retried for up to ``NOT_READY_WAIT_S``,
        then raised (``OrderNotReady``: the order exists, read it again later)."""
        query = self._one_id(order_id, client_id, "uuid", "client_order_id")
        deadline = time.monotonic() + self.NOT_READY_WAIT_S
        pause = self.NOT_READY_FIRST_PAUSE_S
        while True:
            try:
                body = self._private("GET", C.PATH_ORDER, query)
                return self._parsed(parse.parse_order, self.venue, body)
            except OrderNotReady:
                if time.monotonic() + pause > deadline:
                    raise
            self._pause(pause)
            pause = min(pause * 2, 0.2)

    def cancel_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        """DELETE ``/v2/order`` (answers ids only), then read the order back (retrying
        ``order_not_ready``: an accepted cancel is never reported failed for a read too soon)."""
        query = self._one_id(order_id, client_id, "order_id", "client_order_id")
        answer = self._private("DELETE", C.PATH_CANCEL, query, group=Group.ORDER, priority=True,
                               idempotent=False, client_id=client_id)
        venue_id = self._parsed(lambda a: str(a["order_id"]), answer)
        try:
            return self.get_order(order_id=venue_id)
        except OrderNotReady as exc:
            raise OrderNotReady(self.venue, f"cancel of {venue_id} accepted; the order is still "
                                f"not readable after {self.NOT_READY_WAIT_S:g} s: {exc.venue_message}",
                                exc.code, exc.status) from exc

    def get_open_orders(self, market: str | None = None) -> list:
        """``wait`` / ``watch`` orders: every page of ``/v2/orders/pending``, following
        ``next_key`` to the end. A shape not understood, a cursor that repeats or more than
        ``PENDING_MAX_PAGES`` pages raise ``UnknownVenueError`` (never a silent short list)."""
        orders: list[OrderResult] = []
        seen: set[str] = set()
        next_key: str | None = None
        for _ in range(C.PENDING_MAX_PAGES):
            query = [("market", market)] if market else []
            query.append(("limit", str(C.PENDING_LIMIT)))
            if next_key is not None:
                query.append(("next_key", next_key))
            body = self._private("GET", C.PATH_PENDING, query)
            items, next_key = self._parsed(parse_pending_page, body)
            orders += self._parsed(lambda b: [parse.parse_order(self.venue, o) for o in b], items)
            if next_key is None:
                return orders
            if next_key in seen:
                raise UnknownVenueError(self.venue, f"pending orders cursor {next_key!r} repeated",
                                        "bad_cursor")
            seen.add(next_key)
            logger.debug("bithumb pending orders: {} so far, next page {}", len(orders), next_key)
        raise UnknownVenueError(self.venue, f"pending orders still paging after "
                                f"{C.PENDING_MAX_PAGES} pages of {C.PENDING_LIMIT}", "bad_cursor")

    def _withdraw_body(self, currency, net_type, amount, address, secondary_address, transaction_type):
        # Bithumb's withdrawal has no transaction_type; withdrawals to another exchange need the
        # travel-rule fields (exchange_name, receiver_type, receiver_ko_name...) passed as ``extra``.
        body = super()._withdraw_body(currency, net_type, amount, address, secondary_address, transaction_type)
        del body["transaction_type"]
        return body
