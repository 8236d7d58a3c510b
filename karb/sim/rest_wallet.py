"""Deposit and withdrawal endpoints of both sim venues, over ``karb.sim.wallet`` (JWT, private).

Upbit (docs.upbit.com "디지털 자산 출금하기", "개별 출금 조회", "출금 리스트 조회", "입금 리스트
조회", "출금 가능 정보", "입출금 현황"):

* ``POST /v1/withdraws/coin`` JSON ``currency, net_type, amount, address, secondary_address?,
  transaction_type? (default|internal)`` -> ``{type: "withdraw", uuid, currency, net_type, txid,
  state, created_at, done_at, amount, fee, krw_amount, transaction_type, is_cancelable}``;
  states ``WAITING | PROCESSING | DONE | FAILED | CANCELLED | REJECTED`` (the current docs; older
  docs and clients show lower-case ``submitting, processing, done, canceled...``).
* ``GET /v1/withdraw`` (``uuid`` | ``txid`` | ``currency``: the latest), ``GET /v1/withdraws``
  (``currency, state, uuids[], txids[], limit <= 100, page, order_by``), the same two for deposits
  (``GET /v1/deposit``, ``GET /v1/deposits``; states ``PROCESSING | ACCEPTED | CANCELLED |
  REJECTED | TRAVEL_RULE_SUSPECTED | REFUNDING | REFUNDED``).
* ``GET /v1/withdraws/chance`` (``currency, net_type``) -> ``member_level``, ``currency``
  (``withdraw_fee, is_coin, wallet_state, wallet_support``), ``account``, ``withdraw_limit``
  (``minimum, onetime, daily, remaining_daily, fixed, can_withdraw``). Every API withdrawal
  needs the address registered beforehand on the venue's web site; nothing in the answer says so.
* ``GET /v1/status/wallet`` -> per currency and network ``wallet_state`` (``working |
  withdraw_only | deposit_only | paused``), ``block_state`` (``normal | delayed | inactive``),
  ``block_height, block_updated_at, block_elapsed_minutes, net_type, network_name``.
* ``GET /v1/withdraws/coin_addresses``, ``GET /v1/deposits/coin_addresses``, ``GET
  /v1/deposits/coin_address`` (``currency, net_type``).

Bithumb 2.0 (apidocs.bithumb.com v2.1.5 "가상 자산 출금 요청", "코인 출금 리스트 조회", "출금
가능 정보", "입출금 현황"): the same paths and shapes; the withdrawal body also carries the
travel-rule fields ``exchange_name, receiver_type, receiver_ko_name, receiver_en_name...``
(accepted and ignored here) and has no ``transaction_type``; deposit states are
``DEPOSIT_PROCESSING | DEPOSIT_ACCEPTED | ...``; withdrawal states are taken to be Upbit's [U: the
stored pages list PROCESSING, DONE, CANCELLED only].

Error names: Upbit documents ``withdraw_address_not_registerd`` (sic; 400) and Bithumb 404
``withdraw_not_found`` / ``deposit_not_found`` and ``withdraw_insufficient_balance``; the names
for a suspended network (``withdraw_suspended``), an amount under the minimum
(``under_min_amount``) and Upbit's insufficient balance (``insufficient_funds_withdraw``) are
not documented in the sources found [U].
"""
from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from karb.model import Venue
from karb.sim.orders import Account, Reject, dec_str, parse_decimal
from karb.sim.rest import Request, Response
from karb.sim.wallet import SimDeposit, SimWithdrawal, WalletRefusal, kst_text

if TYPE_CHECKING:
    from karb.sim.rest_upbit import UpbitApi

WITHDRAW_PATH = "/v1/withdraws/coin"
_BLOCK_HEIGHT = 4_200_000
# (status, Upbit name, Bithumb name) per WalletRefusal kind
_ERRORS = {
    "params": (400, "validation_error", "invalid_parameter"),
    "network": (400, "validation_error", "invalid_parameter"),
    "suspended": (400, "withdraw_suspended", "withdraw_suspended"),
    "address": (400, "withdraw_address_not_registerd", "withdraw_address_not_registered"),
    "minimum": (400, "under_min_amount", "under_min_amount"),
    "insufficient": (400, "insufficient_funds_withdraw", "withdraw_insufficient_balance"),
    "not_found": (404, "withdraw_not_found", "withdraw_not_found"),
    "deposit_not_found": (404, "deposit_not_found", "deposit_not_found"),
}


class WalletRoutes:
    """The wallet endpoints of one venue's API object (``routes`` is merged into its table)."""

    def __init__(self, api: "UpbitApi"):
        self.api = api
        self.venue: Venue = api.venue
        get = [("/v1/status/wallet", self.status), ("/v1/withdraws/chance", self.chance),
               ("/v1/withdraw", self.get_withdraw), ("/v1/withdraws", self.list_withdraws),
               ("/v1/withdraws/coin_addresses", self.withdraw_addresses),
               ("/v1/deposit", self.get_deposit), ("/v1/deposits", self.list_deposits),
               ("/v1/deposits/coin_addresses", self.deposit_addresses),
               ("/v1/deposits/coin_address", self.deposit_address)]
        self.routes = {("GET", path): (self._guard(handler), True, "default") for path, handler in get}
        self.routes[("POST", WITHDRAW_PATH)] = (self._guard(self.withdraw), True, "default")

    @property
    def wallet(self):
        return self.api.exchange.wallet

    def _guard(self, handler):
        def run(request: Request, account: Account) -> Response:
            wallet = self.wallet
            if wallet is None:
                return self.api.error(404, "not_found", f"{request.path}: no wallet on this sim")
            wallet.note_request(self.venue, request.method, request.path.rstrip("/"))
            try:
                return handler(request, account)
            except WalletRefusal as refusal:
                status, upbit, bithumb = _ERRORS[refusal.kind]
                return self.api.error(status, upbit if self.venue is Venue.UPBIT else bithumb, refusal.message)
        return run

    # --- withdrawals ------------------------------------------------------------------------
    def withdraw(self, request: Request, account: Account) -> Response:
        if not isinstance(request.json, dict):
            raise WalletRefusal("params", "withdrawal parameters must be a JSON body")
        try:
            amount = parse_decimal(request.get("amount"), "amount")
        except Reject as reject:
            raise WalletRefusal("params", reject.message) from None
        if amount is None:
            raise WalletRefusal("params", "amount is required")
        kind = request.get("transaction_type") or "default"
        if kind not in ("default", "internal"):
            raise WalletRefusal("params", f"transaction_type must be default or internal, was {kind!r}")
        w = self.wallet.withdraw(self.venue, account.access_key, request.get("currency") or "",
                                 request.get("net_type"), amount, request.get("address") or "",
                                 request.get("secondary_address"), kind)
        out = self._render_withdrawal(w)
        out["krw_amount"] = dec_str(self._krw(w.currency, w.amount))
        return Response(201, out)

    def get_withdraw(self, request: Request, account: Account) -> Response:
        found = self._pick(self.wallet.withdrawals(self.venue, account.access_key), request)
        if found is None:
            raise WalletRefusal("not_found", "출금 정보를 찾지 못했습니다.")
        return Response(200, self._render_withdrawal(found))

    def list_withdraws(self, request: Request, account: Account) -> Response:
        chosen = self._filter(self.wallet.withdrawals(self.venue, account.access_key), request)
        return Response(200, [self._render_withdrawal(w) for w in chosen])

    def withdraw_addresses(self, _request: Request, account: Account) -> Response:
        out = []
        for asset in self.wallet.assets():
            net = self.wallet.network(asset).net_type
            for address in sorted(self.wallet.registered(self.venue, account.access_key, asset, net)):
                out.append({"currency": asset, "net_type": net, "network_name": net,
                            "withdraw_address": address, "secondary_address": None})
        return Response(200, out)

    # --- deposits -----------------------------------------------------------------------------
    def get_deposit(self, request: Request, account: Account) -> Response:
        found = self._pick(self.wallet.deposits(self.venue, account.access_key), request)
        if found is None:
            raise WalletRefusal("deposit_not_found", "입금 정보를 찾지 못했습니다.")
        return Response(200, self._render_deposit(found))

    def list_deposits(self, request: Request, account: Account) -> Response:
        chosen = self._filter(self.wallet.deposits(self.venue, account.access_key), request)
        return Response(200, [self._render_deposit(d) for d in chosen])

    def deposit_addresses(self, _request: Request, account: Account) -> Response:
        return Response(200, [self._address_entry(account, a) for a in self.wallet.assets()])

    def deposit_address(self, request: Request, account: Account) -> Response:
        asset = request.get("currency") or ""
        self.wallet.network(asset, request.get("net_type"))
        return Response(200, self._address_entry(account, asset))

    def _address_entry(self, account: Account, asset: str) -> dict:
        net = self.wallet.network(asset).net_type
        return {"currency": asset, "net_type": net,
                "deposit_address": self.wallet.deposit_address(self.venue, account.access_key, asset, net),
                "secondary_address": None}

    # --- service information ----------------------------------------------------------------
    def status(self, _request: Request, _account: Account) -> Response:
        now = self.wallet.clock.wall_ns()
        out = []
        for asset in self.wallet.assets():
            net = self.wallet.network(asset).net_type
            state = self.wallet.wallet_state(self.venue, asset)
            out.append({"currency": asset, "wallet_state": state,
                        "block_state": "inactive" if state == "paused" else "normal",
                        "block_height": _BLOCK_HEIGHT, "block_updated_at": kst_text(now),
                        "block_elapsed_minutes": 0, "net_type": net, "network_name": net})
        return Response(200, out)

    def chance(self, request: Request, account: Account) -> Response:
        asset = request.get("currency") or ""
        network = self.wallet.network(asset, request.get("net_type"))
        state = self.wallet.wallet_state(self.venue, asset)
        free = account.free(asset)
        return Response(200, {
            "member_level": {"security_level": 4, "fee_level": 0, "email_verified": True,
                             "identity_auth_verified": True, "bank_account_verified": True,
                             "two_factor_auth_verified": True, "locked": False, "wallet_locked": False},
            "currency": {"code": asset, "withdraw_fee": dec_str(network.fee), "is_coin": True,
                         "wallet_state": state, "wallet_support": ["deposit", "withdraw"]},
            "account": {"currency": asset, "balance": dec_str(free), "locked": dec_str(account.locked(asset)),
                        "avg_buy_price": "0", "avg_buy_price_modified": False, "unit_currency": "KRW"},
            "withdraw_limit": {"currency": asset, "minimum": dec_str(network.minimum), "onetime": None,
                               "daily": None, "remaining_daily": None, "remaining_daily_krw": None,
                               "fixed": 8, "can_withdraw": state in ("working", "withdraw_only")},
        })

    # --- helpers ------------------------------------------------------------------------------
    def _pick(self, items: list, request: Request):
        uuid, txid, currency = request.get("uuid"), request.get("txid"), request.get("currency")
        if not (uuid or txid or currency):
            raise WalletRefusal("params", "uuid, txid or currency is required")
        matches = [i for i in items if (not uuid or i.uuid == uuid) and (not txid or i.txid == txid)
                   and (not currency or i.currency == currency)]
        return max(matches, key=lambda i: i.created_ns) if matches else None

    def _filter(self, items: list, request: Request) -> list:
        currency, state = request.get("currency"), request.get("state")
        uuids, txids = set(request.getlist("uuids")), set(request.getlist("txids"))
        chosen = [i for i in items if (not currency or i.currency == currency)
                  and (not uuids or i.uuid in uuids) and (not txids or i.txid in txids)
                  and (not state or self._state(i).lower() == state.lower())]
        chosen.sort(key=lambda i: i.created_ns, reverse=(request.get("order_by") or "desc") == "desc")
        try:
            limit = max(1, min(int(request.get("limit") or 100), 100))
            page = max(1, int(request.get("page") or 1))
        except ValueError:
            raise WalletRefusal("params", "limit and page must be whole numbers") from None
        return chosen[(page - 1) * limit: page * limit]

    def _state(self, item) -> str:
        if isinstance(item, SimWithdrawal):
            return item.state_at(self.wallet.clock.wall_ns())
        state = "ACCEPTED" if item.credited else "PROCESSING"
        return state if self.venue is Venue.UPBIT else f"DEPOSIT_{state}"

    def _render_withdrawal(self, w: SimWithdrawal) -> dict:
        state = self._state(w)
        return {"type": "withdraw", "uuid": w.uuid, "currency": w.currency, "net_type": w.net_type,
                "txid": None if state == "WAITING" else w.txid, "state": state,
                "created_at": kst_text(w.created_ns), "done_at": kst_text(w.done_ns) if state == "DONE" else None,
                "amount": dec_str(w.amount), "fee": dec_str(w.fee), "transaction_type": w.transaction_type,
                "is_cancelable": state == "WAITING"}

    def _render_deposit(self, d: SimDeposit) -> dict:
        return {"type": "deposit", "uuid": d.uuid, "currency": d.currency, "net_type": d.net_type,
                "txid": d.txid, "state": self._state(d), "created_at": kst_text(d.created_ns),
                "done_at": kst_text(d.credit_ns) if d.credited else None, "amount": dec_str(d.amount),
                "fee": "0", "transaction_type": "default"}

    def _krw(self, currency: str, amount: Decimal) -> Decimal:
        market = f"KRW-{currency}"
        if market not in self.api.exchange.rules:
            return Decimal(0)
        bids, _asks = self.api.exchange.book(market)
        return (amount * bids[0][0]).quantize(Decimal(1)) if bids else Decimal(0)

