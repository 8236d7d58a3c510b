"""Upbit REST client: the ``VenueClient`` protocol over ``RestTransport`` with JWT auth.

Every method may be called from any thread (each thread gets its own keep-alive session).
A placement's answer is usually only an acknowledgement: Upbit answers ``state: wait`` with
``trades_count: 0`` (the docs' example) even for an IOC that fills at once; the fill shows later
on ``GET /v1/order``, which ``karb.placement`` polls.
Reads are retried by the transport; placements and cancels never are. A ``ReadTimeout`` on a
placement raises ``OrderStateUnknown(client_id)``: look the order up with
``get_order(client_id=...)`` before sending anything again (Upbit never accepts an
``identifier`` twice, even after a failed request).
"""
from __future__ import annotations

import time
from decimal import Decimal
from collections.abc import Sequence
from typing import Any, Callable

from karb.config import VenueConfig
from karb.exchanges.errors import AuthError, OrderStateUnknown, VenueError, parse_body
from karb.exchanges.http import PreparedOrder, RestTransport, jwt_api_error
from karb.exchanges.market_state import parse_upbit_states
from karb.exchanges.ratelimit import Group, RateLimiter
from karb.exchanges.upbit import constants as C
from karb.exchanges.upbit import parse
from karb.exchanges.upbit.auth import UpbitAuth, new_nonce
from karb.exchanges import wallet
from karb.exchanges.wallet import Deposit, WalletStatus, Withdrawal, WithdrawChance
from karb.model import Balance, BookView, OrderRequest, OrderResult, Venue, quote_currency
from karb.rules import MarketInfo
from karb.secrets import Credentials


class UpbitClient:
    """Upbit over REST. ``credentials=None`` gives a public-only client whose private methods
    raise ``AuthError`` (code ``no_credentials``)."""

    venue = Venue.UPBIT

    def __init__(self, config: VenueConfig, credentials: Credentials | None = None, *,
                 limiter: RateLimiter | None = None, sleep: Callable[[float], None] | None = None,
                 nonce_factory: Callable[[], str] = new_nonce):
        self.config = config
        self.limiter = limiter or RateLimiter(config.rate_limits)
        self._http = RestTransport(self.venue, config, self.limiter, jwt_api_error, sleep)
        self._auth = self._make_auth(credentials, nonce_factory) if credentials else None

    def _make_auth(self, credentials: Credentials, nonce_factory: Callable[[], str]):
        return UpbitAuth(credentials.access_key, credentials.secret_key, nonce_factory)

    def stream_token(self) -> str:
        """A fresh JWT for the private WebSocket's upgrade request (no parameters, so no
        ``query_hash``); Bithumb's signer adds its ``timestamp``. Never log it."""
        if self._auth is None:
            raise AuthError(self.venue, "no API keys loaded: no private stream", "no_credentials")
        return self._auth.token()

    # --- plumbing -------------------------------------------------------------------------
    def _public(self, path: str, query=()) -> Any:
        return self._http.request("GET", path, group=Group.PUBLIC, query=query)

    def _private(self, method: str, path: str, query=(), *, group: Group = Group.PRIVATE,
                 json_body: dict | None = None, priority: bool = False,
                 idempotent: bool = True, client_id: str | None = None) -> Any:
        if self._auth is None:
            raise AuthError(self.venue, f"no API keys loaded: this {self.venue.value} client is "
                            "public-only", "no_credentials")
        return self._http.request(method, path, group=group, query=query, json_body=json_body,
                                  auth=self._auth, priority=priority, idempotent=idempotent,
                                  client_id=client_id)

    def _parsed(self, fn, *args) -> Any:
        return parse_body(self.venue, fn, *args)

    @staticmethod
    def _one_id(order_id: str | None, client_id: str | None, id_key: str, client_key: str):
        if (order_id is None) == (client_id is None):
            raise ValueError("give exactly one of order_id and client_id")
        return [(id_key, order_id)] if order_id is not None else [(client_key, client_id)]

    # --- public ---------------------------------------------------------------------------
    def get_markets(self) -> list[str]:
        return self._parsed(parse.parse_markets, self._public(C.PATH_MARKETS))

    def get_market_states(self) -> dict[str, str | None]:
        """Every listed KRW market with why the venue flags it, or None (``market_state``)."""
        body = self._public(C.PATH_MARKETS, [("is_details", "true")])
        return self._parsed(parse_upbit_states, body)

    def get_ticker(self, markets: list[str]) -> dict[str, Decimal]:
        body = self._public(C.PATH_TICKER, [("markets", ",".join(markets))])
        return self._parsed(parse.parse_ticker, body)

    def get_orderbook(self, market: str) -> BookView:
        body = self._public(C.PATH_ORDERBOOK, [("markets", market)])
        recv_ns = time.monotonic_ns()
        return self._parsed(parse.parse_orderbook, self.venue, market, body, recv_ns)

    def get_market_info(self, markets: list[str]) -> list[MarketInfo]:
        """Tick size (``/v1/orderbook/instruments``, one call for all) at the last price (one
        ticker call), and with keys the fees and minimum order of one market per quote
        currency (``/v1/orders/chance``), applied to every market of that quote.

        Upbit charges one fee in all its KRW markets (0.05%, spec §5) and one minimum order
        (5,000 KRW, docs "원화(KRW) 마켓 ... 최소 주문 가능 금액"), so reading
        ``/v1/orders/chance`` once per market would only spend 150 calls of the private group at
        start-up to learn the same numbers [U: a per-market promotion]. ``get_market_fees`` reads one market's own answer; the
        engine walks all markets with it slowly after start-up and corrects any that differ.
        """
        joined = ",".join(markets)
        ticks = self._parsed(parse.parse_instruments,
                             self._public(C.PATH_INSTRUMENTS, [("markets", joined)]))
        prices = self.get_ticker(markets)
        fees = self._fees_by_quote(markets)
        infos = []
        for market in markets:
            chance = fees.get(quote_currency(market)) or MarketInfo(market)
            infos.append(MarketInfo(market, tick_size=ticks.get(market),
                                    ref_price=prices.get(market), min_total=chance.min_total,
                                    taker_fee=chance.taker_fee, maker_fee=chance.maker_fee))
        return infos

    def get_market_fees(self, market: str) -> MarketInfo:
        """Fees and minimum order of one market, as the venue answers for it (needs keys)."""
        return self._chance(market)

    def _fees_by_quote(self, markets: list[str]) -> dict[str, MarketInfo]:
        """One ``/v1/orders/chance`` answer per quote currency (none without keys)."""
        if self._auth is None:
            return {}
        firsts = {}
        for market in markets:
            firsts.setdefault(quote_currency(market), market)
        return {quote: self._chance(market) for quote, market in firsts.items()}

    def _chance(self, market: str) -> MarketInfo:
        body = self._private("GET", C.PATH_CHANCE, [("market", market)])
        return self._parsed(parse.parse_chance, market, body)

    # --- private --------------------------------------------------------------------------
    def get_balances(self) -> dict[str, Balance]:
        return self._parsed(parse.parse_balances, self._private("GET", C.PATH_ACCOUNTS))

    def place_order(self, request: OrderRequest, priority: bool = False) -> OrderResult:
        path, body = self._order_body(request)
        answer = self._private("POST", path, group=Group.ORDER, json_body=body,
                               priority=priority, idempotent=False, client_id=request.client_id)
        return self._placement_result(request, answer)

    def prepare_order(self, request: OrderRequest, priority: bool = False,
                      wait: bool = True) -> PreparedOrder | None:
        """``place_order`` in two steps, for the lean path (``karb.exchanges.wire``): the order
        signed and serialised with its rate-limit slot held and a warm connection taken,
        nothing written. Raises what ``place_order`` raises before sending; None when writes
        cannot go the lean path (a proxy is configured): use ``place_order``. With
        ``wait=False``, also None (nothing taken) when that would mean waiting for a slot or
        opening a connection."""
        if not self._http.lean:
            return None
        if self._auth is None:
            raise AuthError(self.venue, f"no API keys loaded: this {self.venue.value} client is "
                            "public-only", "no_credentials")
        path, body = self._order_body(request)
        call = self._http.prepare("POST", path, group=Group.ORDER, json_body=body, auth=self._auth,
                                  priority=priority, client_id=request.client_id, wait=wait)
        if call is None:
            return None
        return PreparedOrder(call, lambda answer: self._placement_result(request, answer))

    def warm_orders(self, markets: list[str]) -> None:
        """Open (or keep open) the lean order connections with one public call on each."""
        self._http.warm(C.PATH_TICKER, [("markets", markets[0])])

    def _order_body(self, request: OrderRequest) -> tuple[str, dict]:
        return C.PATH_ORDERS, parse.order_body(self.venue, request)

    def _placement_result(self, request: OrderRequest, answer: Any) -> OrderResult:
        # A 2xx whose body we cannot read: the order probably exists. Say so, never "failed".
        try:
            return parse.parse_order(self.venue, answer, request.client_id)
        except (KeyError, ValueError, TypeError, AttributeError, VenueError) as exc:
            raise OrderStateUnknown(self.venue, f"placement answer unreadable: {exc}",
                                    request.client_id) from exc

    def get_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        query = self._one_id(order_id, client_id, "uuid", "identifier")
        return self._parsed(parse.parse_order, self.venue, self._private("GET", C.PATH_ORDER, query))

    def cancel_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        """DELETE ``/v1/order``; the answer usually still says ``wait`` (cancel pending).

        Upbit counts cancels in its ``default`` group (our PRIVATE window), not ``order``."""
        query = self._one_id(order_id, client_id, "uuid", "identifier")
        body = self._private("DELETE", C.PATH_ORDER, query, group=Group.PRIVATE, priority=True,
                             idempotent=False, client_id=client_id)
        return self._parsed(parse.parse_order, self.venue, body)

    def get_open_orders(self, market: str | None = None) -> list[OrderResult]:
        """``wait`` and ``watch`` orders, all pages (up to 20 x 100)."""
        orders: list[OrderResult] = []
        for page in range(1, C.OPEN_ORDERS_MAX_PAGES + 1):
            query = [("market", market)] if market else []
            query += [("states", list(C.OPEN_STATES)), ("page", str(page)),
                      ("limit", str(C.OPEN_ORDERS_LIMIT))]
            body = self._private("GET", C.PATH_OPEN_ORDERS, query)
            orders += self._parsed(lambda b: [parse.parse_order(self.venue, o) for o in b], body)
            if len(body) < C.OPEN_ORDERS_LIMIT:
                break
        return orders

    def close(self) -> None:
        self._http.close()

    # --- deposits and withdrawals (karb.exchanges.wallet; Bithumb 2.0 inherits them) ---------
    def withdraw_coin(self, currency: str, net_type: str, amount: Decimal, address: str, *,
                      secondary_address: str | None = None, transaction_type: str = "default",
                      extra: dict[str, str] | None = None, client_id: str | None = None) -> Withdrawal:
        """``POST /v1/withdraws/coin``: send ``amount`` (the fee comes on top) to a registered
        address. Never retried: a timeout or an unreadable answer raises ``OrderStateUnknown``
        carrying ``client_id`` (the caller's own id; the venues take none), and the withdrawal
        must then be looked up (``get_withdraws``), never sent again. ``extra``: venue fields
        such as Bithumb's travel-rule ``exchange_name`` / ``receiver_*``."""
        body = self._withdraw_body(currency, net_type, amount, address, secondary_address, transaction_type)
        body.update(extra or {})
        answer = self._private("POST", C.PATH_WITHDRAW_COIN, json_body=body, idempotent=False,
                               client_id=client_id)
        try:
            return wallet.parse_withdrawal(self.venue, answer)
        except (KeyError, ValueError, TypeError, AttributeError, ArithmeticError) as exc:
            raise OrderStateUnknown(self.venue, f"withdrawal answer unreadable: {exc}", client_id) from exc

    def _withdraw_body(self, currency: str, net_type: str, amount: Decimal, address: str,
                       secondary_address: str | None, transaction_type: str) -> dict[str, str]:
        body = {"currency": currency, "net_type": net_type, "amount": str(amount), "address": address}
        if secondary_address:
            body["secondary_address"] = secondary_address
        body["transaction_type"] = transaction_type
        return body

    def get_withdraw(self, uuid: str | None = None, txid: str | None = None) -> Withdrawal:
        """``GET /v1/withdraw`` by the venue's uuid or the chain's txid (``OrderNotFound``)."""
        query = self._one_id(uuid, txid, "uuid", "txid")
        return self._parsed(wallet.parse_withdrawal, self.venue, self._private("GET", C.PATH_WITHDRAW, query))

    def get_withdraws(self, currency: str | None = None, *, state: str | None = None,
                      uuids: Sequence[str] = (), txids: Sequence[str] = (), limit: int = 100) -> list[Withdrawal]:
        """``GET /v1/withdraws``: the latest ``limit`` (at most 100) withdrawals, newest first."""
        body = self._private("GET", C.PATH_WITHDRAWS, self._list_query(currency, state, uuids, txids, limit))
        return self._parsed(lambda b: [wallet.parse_withdrawal(self.venue, w) for w in b], body)

    def get_deposits(self, currency: str | None = None, *, state: str | None = None,
                     uuids: Sequence[str] = (), txids: Sequence[str] = (), limit: int = 100) -> list[Deposit]:
        """``GET /v1/deposits``: the latest ``limit`` (at most 100) deposits, newest first."""
        body = self._private("GET", C.PATH_DEPOSITS, self._list_query(currency, state, uuids, txids, limit))
        return self._parsed(lambda b: [wallet.parse_deposit(self.venue, d) for d in b], body)

    @staticmethod
    def _list_query(currency, state, uuids, txids, limit) -> list:
        query: list = [("currency", currency)] if currency else []
        query += [("state", state)] if state else []
        query += [("uuids", list(uuids))] if uuids else []
        query += [("txids", list(txids))] if txids else []
        return query + [("limit", str(max(1, min(int(limit), 100)))), ("order_by", "desc")]

    def get_wallet_status(self) -> list[WalletStatus]:
        """``GET /v1/status/wallet``: every currency's deposit/withdrawal state per network."""
        return self._parsed(wallet.parse_wallet_status, self._private("GET", C.PATH_WALLET_STATUS))

    def get_withdraw_chance(self, currency: str, net_type: str) -> WithdrawChance:
        """``GET /v1/withdraws/chance``: fee, minimum, limits and whether withdrawing is possible."""
        body = self._private("GET", C.PATH_WITHDRAW_CHANCE, [("currency", currency), ("net_type", net_type)])
        return self._parsed(wallet.parse_chance, body)

    def get_deposit_address(self, currency: str, net_type: str) -> tuple[str, str | None]:
        """``GET /v1/deposits/coin_address``: (address, secondary address such as a memo)."""
        body = self._private("GET", C.PATH_DEPOSIT_ADDRESS, [("currency", currency), ("net_type", net_type)])
        return self._parsed(lambda b: (str(b["deposit_address"]), b.get("secondary_address")), body)
