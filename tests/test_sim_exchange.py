"""SimExchange in-process: matching, venue IOC semantics, rejections, faults, exact conservation."""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from karb.model import Side, Venue
from karb.rules import MarketRules
from karb.sim.config import SimVenueConfig
from karb.sim.exchange import OrderParams, SimExchange
from karb.sim.faults import VenueFaults
from karb.sim.grid import from_decimal
from karb.sim.orders import Reject, RejectKind

D = Decimal
KEY = "key-1"
FEE = D("0.0005")
# KRW-BTC book on the 1000 KRW tick: bids 100,000,000 down, asks 100,001,000 up, 0.01 BTC each.
BIDS = tuple((from_decimal(D(100_000_000 - 1000 * i)), from_decimal(D("0.01"))) for i in range(30))
ASKS = tuple((from_decimal(D(100_001_000 + 1000 * i)), from_decimal(D("0.01"))) for i in range(30))
START = {"KRW": D("50000000"), "BTC": D("1")}


class TakeLog:
    def __init__(self):
        self.taken = []

    def __call__(self, venue, market, side, price, size):
        self.taken.append((venue, market, side, price, size))


def make_exchange(venue=Venue.UPBIT, competition=0.0, take=None):
    rules = {"KRW-BTC": MarketRules(venue, "KRW-BTC", taker_fee=FEE, maker_fee=FEE)}
    ex = SimExchange(venue, rules, SimVenueConfig(competition=competition), VenueFaults(), take, seed=1)
    ex.add_account(KEY, "secret", dict(START))
    ex.on_book("KRW-BTC", BIDS, ASKS, 1)
    return ex


def limit(side, price, volume, tif=None, identifier=None):
    return OrderParams("KRW-BTC", side, "limit", D(price), D(volume), tif, identifier)


def test_ioc_buy_with_volume_beyond_two_levels_walks_levels_at_book_prices():
    take = TakeLog()
    ex = make_exchange(take=take)
    order = ex.place(KEY, limit(Side.BUY, "100002000", "0.015", "ioc"))
    assert order.state == "done"
    assert [(t.price, t.volume) for t in order.trades] == [(D(100_001_000), D("0.01")), (D(100_002_000), D("0.005"))]
    assert order.executed_funds == D(100_001_000) * D("0.01") + D(100_002_000) * D("0.005")
    assert len(take.taken) == 2


@pytest.mark.parametrize("venue, final", [(Venue.UPBIT, "cancel"), (Venue.BITHUMB, "done")])
def test_ioc_with_partial_fill_ends_in_the_venues_final_state(venue, final):
    ex = make_exchange(venue)
    order = ex.place(KEY, limit(Side.BUY, "100001000", "0.05", "ioc"), partial_is_done=venue is Venue.BITHUMB)
    assert order.executed_volume == D("0.01")
    assert order.state == final
    assert ex.balances(KEY)["KRW"].locked == 0


def test_fok_that_cannot_fill_fully_fills_nothing():
    ex = make_exchange()
    order = ex.place(KEY, limit(Side.SELL, "100000000", "0.05", "fok"))
    assert order.state == "cancel" and order.executed_volume == 0
    assert ex.balances(KEY)["BTC"].free == D("1")


def test_resting_bid_fills_as_maker_when_a_later_book_crosses_it():
    ex = make_exchange()
    order = ex.place(KEY, limit(Side.BUY, "99990000", "0.01"))
    assert order.state == "wait" and ex.balances(KEY)["KRW"].locked > 0
    crossed_asks = ((from_decimal(D(99_985_000)), from_decimal(D("0.02"))),) + ASKS
    ex.on_book("KRW-BTC", BIDS[20:], crossed_asks, 2)
    assert order.state == "done"
    assert order.trades[0].maker and order.trades[0].price == D(99_990_000)
    assert ex.balances(KEY)["KRW"].locked == 0


def test_market_buy_spends_funds_and_refunds_the_rest_upbit_cancel():
    ex = make_exchange()
    order = ex.place(KEY, OrderParams("KRW-BTC", Side.BUY, "price", D("1500000")))
    assert order.executed_funds <= D("1500000") and order.executed_volume > D("0.0149")
    assert order.state == "cancel"  # Upbit: unspent funds remain -> cancel
    bal = ex.balances(KEY)
    assert bal["KRW"].total == START["KRW"] - order.executed_funds - order.paid_fee


@pytest.mark.parametrize("params, kind", [
    (limit(Side.BUY, "100000500", "0.01"), RejectKind.INVALID_PRICE),
    (limit(Side.SELL, "100000000", "0.00001"), RejectKind.UNDER_MIN),
    (limit(Side.BUY, "100000000", "0.6"), RejectKind.INSUFFICIENT),
    (limit(Side.SELL, "100000000", "2"), RejectKind.INSUFFICIENT),
    (limit(Side.BUY, "100000000", "0.000000001"), RejectKind.INVALID_VOLUME),
    (OrderParams("KRW-BTC", Side.SELL, "market", D("100000000"), D("0.1")), RejectKind.BAD_ORDER),
    (OrderParams("KRW-BTC", Side.BUY, "best", D("100000")), RejectKind.BAD_ORDER),
    (OrderParams("KRW-XRP", Side.BUY, "price", D("100000")), RejectKind.UNKNOWN_MARKET),
])
def test_place_with_broken_rule_is_rejected_and_locks_nothing(params, kind):
    ex = make_exchange()
    with pytest.raises(Reject) as info:
        ex.place(KEY, params)
    assert info.value.kind is kind
    assert all(b.locked == 0 for b in ex.balances(KEY).values())


def test_identifier_reused_after_a_failed_order_is_rejected():
    ex = make_exchange()
    with pytest.raises(Reject):
        ex.place(KEY, limit(Side.BUY, "100000500", "0.01", identifier="id-1"))
    with pytest.raises(Reject) as info:
        ex.place(KEY, limit(Side.BUY, "100000000", "0.01", identifier="id-1"))
    assert info.value.kind is RejectKind.DUPLICATE_ID


def test_partial_ioc_fault_caps_the_fill_and_reject_fault_refuses_once():
    ex = make_exchange()
    ex.faults.partial_next_ioc(0.25)
    order = ex.place(KEY, limit(Side.BUY, "100003000", "0.02", "ioc"))
    assert order.executed_volume == D("0.005") and order.state == "cancel"
    ex.faults.reject_next_order()
    with pytest.raises(Reject) as info:
        ex.place(KEY, limit(Side.BUY, "100003000", "0.01", "ioc"))
    assert info.value.kind is RejectKind.REJECTED
    assert ex.place(KEY, limit(Side.BUY, "100003000", "0.01", "ioc")).state == "done"


def test_competition_always_takes_the_top_level_first():
    ex = make_exchange(competition=1.0)
    order = ex.place(KEY, limit(Side.BUY, "100001000", "0.01", "ioc"))
    assert order.executed_volume == 0 and order.state == "cancel"


def test_cancel_returns_the_order_as_it_was_and_unlocks():
    ex = make_exchange()
    order = ex.place(KEY, limit(Side.BUY, "99000000", "0.01", identifier="c-1"))
    before = ex.cancel(KEY, identifier="c-1")
    assert before.state == "wait" and order.state == "cancel"
    assert ex.balances(KEY)["KRW"].locked == 0
    with pytest.raises(Reject) as info:
        ex.cancel(KEY, uuid=order.uuid)
    assert info.value.kind is RejectKind.NOT_CANCELLABLE


def test_other_accounts_orders_are_not_found():
    ex = make_exchange()
    ex.add_account("key-2", "s2", dict(START))
    order = ex.place(KEY, limit(Side.BUY, "99000000", "0.01"))
    with pytest.raises(Reject) as info:
        ex.get("key-2", uuid=order.uuid)
    assert info.value.kind is RejectKind.NOT_FOUND


_order = st.one_of(
    st.tuples(st.just("limit"), st.sampled_from([Side.BUY, Side.SELL]), st.integers(-40, 40),
              st.integers(1, 4000), st.sampled_from([None, "ioc", "fok", "post_only"])),
    st.tuples(st.just("price"), st.just(Side.BUY), st.integers(5_000, 3_000_000), st.just(0), st.just(None)),
    st.tuples(st.just("market"), st.just(Side.SELL), st.just(0), st.integers(5, 4000), st.just(None)),
    st.tuples(st.just("cancel"), st.just(Side.BUY), st.integers(0, 50), st.just(0), st.just(None)),
    st.tuples(st.just("book"), st.just(Side.BUY), st.integers(-30, 30), st.just(0), st.just(None)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_order, min_size=1, max_size=30), st.sampled_from([Venue.UPBIT, Venue.BITHUMB]))
def test_balances_with_any_orders_and_cancels_equal_start_plus_fills_minus_fees(actions, venue):
    ex = make_exchange(venue)
    for kind, side, a, b, tif in actions:
        try:
            if kind == "limit":
                price = D(100_000_000 + 1000 * a)
                ex.place(KEY, limit(side, price, D(b) / 100_000, tif), partial_is_done=venue is Venue.BITHUMB)
            elif kind == "price":
                ex.place(KEY, OrderParams("KRW-BTC", side, "price", D(a)))
            elif kind == "market":
                ex.place(KEY, OrderParams("KRW-BTC", side, "market", None, D(b) / 100_000))
            elif kind == "cancel":
                orders = ex.orders(KEY)
                if orders:
                    ex.cancel(KEY, uuid=orders[a % len(orders)].uuid)
            else:  # the market moves: a new book shifted by ``a`` ticks
                shift = from_decimal(D(1000 * a))
                ex.on_book("KRW-BTC", tuple((p + shift, s) for p, s in BIDS), tuple((p + shift, s) for p, s in ASKS))
        except Reject:
            pass
    krw, btc = START["KRW"], START["BTC"]
    for order in ex.orders(KEY):
        for t in order.trades:
            assert t.funds == t.price * t.volume and t.fee == t.funds * FEE
            sign = 1 if order.side is Side.BUY else -1
            btc += sign * t.volume
            krw -= sign * t.funds + t.fee
    bal = ex.balances(KEY)
    assert bal["KRW"].total == krw and bal["BTC"].total == btc
    open_orders = [o for o in ex.orders(KEY) if o.state == "wait"]
    assert bal["KRW"].locked == sum(o.locked for o in open_orders if o.side is Side.BUY)
    assert bal["BTC"].locked == sum(o.locked for o in open_orders if o.side is Side.SELL)
    assert bal["KRW"].free >= 0 and bal["BTC"].free >= 0
