"""Bithumb REST paths: API 2.0 (JWT, Upbit-shaped) and legacy (HMAC, ``status`` envelopes).

Sources: apidocs.bithumb.com v2.1.5, ccxt 4.5.90 bithumb.py; spec/exchanges.md §2.2-2.3.
"""
from __future__ import annotations

from typing import Final

BITHUMB_REST_URL: Final = "https://api.bithumb.com"

# --- API 2.0 ---------------------------------------------------------------------------------
PATH_MARKETS: Final = "/v1/market/all"
PATH_WARNINGS: Final = "/v1/market/virtual_asset_warning"  # the 경보제 list (market_state)
PATH_TICKER: Final = "/v1/ticker"
PATH_ORDERBOOK: Final = "/v1/orderbook"
PATH_ACCOUNTS: Final = "/v1/accounts"
PATH_CHANCE: Final = "/v1/orders/chance"
PATH_ORDER: Final = "/v1/order"  # GET one order (uuid | client_order_id) with trades
PATH_PLACE: Final = "/v2/orders"  # POST, body uses order_type / client_order_id
PATH_CANCEL: Final = "/v2/order"  # DELETE (order_id | client_order_id)
PATH_PENDING: Final = "/v2/orders/pending"  # wait/watch orders; next_key cursor pages (2026-07-09)
PENDING_LIMIT: Final = 100  # the documented page maximum
PENDING_MAX_PAGES: Final = 100  # 10,000 resting orders: beyond that something is wrong

# --- legacy ------------------------------------------------------------------------------------
LEGACY_OK: Final = "0000"
LEGACY_TICKER_ALL: Final = "/public/ticker/ALL_KRW"
LEGACY_ORDERBOOK: Final = "/public/orderbook/{symbol}"  # BTC_KRW
LEGACY_BALANCE: Final = "/info/balance"
LEGACY_ACCOUNT: Final = "/info/account"  # trade_fee per market
LEGACY_PLACE: Final = "/trade/place"
LEGACY_MARKET_BUY: Final = "/trade/market_buy"
LEGACY_MARKET_SELL: Final = "/trade/market_sell"
LEGACY_CANCEL: Final = "/trade/cancel"
LEGACY_ORDER_DETAIL: Final = "/info/order_detail"
LEGACY_ORDERS: Final = "/info/orders"
LEGACY_ORDERBOOK_COUNT: Final = "30"
