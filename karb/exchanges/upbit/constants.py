"""Upbit REST paths and wire vocabulary (docs.upbit.com; spec/exchanges.md §2.1)."""
from __future__ import annotations

from typing import Final

UPBIT_REST_URL: Final = "https://api.upbit.com"

PATH_MARKETS: Final = "/v1/market/all"
PATH_TICKER: Final = "/v1/ticker"
PATH_ORDERBOOK: Final = "/v1/orderbook"
PATH_INSTRUMENTS: Final = "/v1/orderbook/instruments"  # tick_size per market (2025-07-31)
PATH_ACCOUNTS: Final = "/v1/accounts"
PATH_CHANCE: Final = "/v1/orders/chance"
PATH_ORDERS: Final = "/v1/orders"  # POST: place
PATH_ORDER: Final = "/v1/order"  # GET: one order with trades; DELETE: cancel
PATH_OPEN_ORDERS: Final = "/v1/orders/open"  # [U] newer split endpoint (spec §2.1)

OPEN_STATES: Final = ("wait", "watch")
OPEN_ORDERS_LIMIT: Final = 100  # the venue's page size cap
OPEN_ORDERS_MAX_PAGES: Final = 20
