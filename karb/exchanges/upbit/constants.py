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
# deposits and withdrawals (the same paths on Upbit and Bithumb 2.0; karb.exchanges.wallet)
PATH_WITHDRAW_COIN: Final = "/v1/withdraws/coin"  # POST
PATH_WITHDRAW: Final = "/v1/withdraw"  # GET one (uuid | txid)
PATH_WITHDRAWS: Final = "/v1/withdraws"
PATH_WITHDRAW_CHANCE: Final = "/v1/withdraws/chance"
PATH_DEPOSITS: Final = "/v1/deposits"
PATH_DEPOSIT_ADDRESS: Final = "/v1/deposits/coin_address"
PATH_WALLET_STATUS: Final = "/v1/status/wallet"
