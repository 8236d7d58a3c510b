"""Leg state machine: legal paths, refused transitions, results mapped to states."""
from decimal import Decimal as D

import pytest

from karb.legs import FINAL, TRANSITIONS, IllegalTransition, Leg, LegState
from karb.model import OrderRequest, OrderResult, OrderStatus, OrderType, Side, TimeInForce, Venue

S = LegState


def _leg(order_type=OrderType.LIMIT, volume="0.01"):
    req = OrderRequest(Venue.UPBIT, "KRW-BTC", Side.SELL, order_type, "c1",
                       price=D(140_000_000) if order_type is OrderType.LIMIT else None,
                       volume=D(volume) if order_type is not OrderType.MARKET_BUY else None,
                       funds=D(1_400_000) if order_type is OrderType.MARKET_BUY else None,
                       tif=TimeInForce.IOC)
    return Leg("sell", req)


def _result(status, executed="0", funds="0", fee="0"):
    return OrderResult(Venue.UPBIT, "KRW-BTC", "u-1", "c1", Side.SELL, OrderType.LIMIT, status,
                       executed_volume=D(executed), executed_funds=D(funds), paid_fee=D(fee))


def test_leg_with_full_fill_goes_new_sent_filled_and_records_amounts():
    leg = _leg()
    leg.mark_sent(10)
    leg.apply(_result(OrderStatus.DONE, "0.01", "1400000", "700"), 20)
    assert leg.state is S.FILLED and leg.final
    assert (leg.executed_volume, leg.executed_funds, leg.paid_fee) == (D("0.01"), D(1_400_000), D(700))
    assert (leg.sent_ns, leg.acked_ns, leg.order_id) == (10, 20, "u-1")
    assert [s for s, _ in leg.history] == [S.NEW, S.SENT, S.FILLED]


def test_leg_with_ack_then_partial_fills_then_ioc_cancel_ends_cancelled_with_the_fill():
    leg = _leg()
    leg.mark_sent(1)
    leg.apply(_result(OrderStatus.OPEN))
    leg.apply(_result(OrderStatus.OPEN))  # the same answer again: no-op
    leg.apply(_result(OrderStatus.OPEN, "0.002", "280000", "140"))
    leg.apply(_result(OrderStatus.OPEN, "0.004", "560000", "280"))
    leg.apply(_result(OrderStatus.DONE, "0.004", "560000", "280"))  # Bithumb: IOC rest -> done
    assert leg.state is S.CANCELLED and leg.executed_volume == D("0.004")
    assert [s for s, _ in leg.history] == [S.NEW, S.SENT, S.ACKNOWLEDGED, S.PARTIALLY_FILLED,
                                           S.PARTIALLY_FILLED, S.CANCELLED]


def test_leg_with_timeout_goes_unknown_then_to_the_looked_up_state():
    leg = _leg()
    leg.mark_sent(1)
    leg.transition(S.UNKNOWN)
    leg.apply(_result(OrderStatus.CANCELLED, "0.01", "1400000", "700"))
    assert leg.state is S.FILLED


def test_leg_with_market_buy_done_is_filled():
    leg = _leg(OrderType.MARKET_BUY)
    leg.mark_sent(1)
    leg.apply(_result(OrderStatus.DONE, "0.00999", "1399999", "700"))
    assert leg.state is S.FILLED


@pytest.mark.parametrize("start,to", [
    (S.NEW, S.FILLED), (S.NEW, S.ACKNOWLEDGED), (S.NEW, S.UNKNOWN),
    (S.FILLED, S.ACKNOWLEDGED), (S.FILLED, S.CANCELLED), (S.CANCELLED, S.FILLED),
    (S.REJECTED, S.SENT), (S.ACKNOWLEDGED, S.UNKNOWN), (S.ACKNOWLEDGED, S.REJECTED),
    (S.UNKNOWN, S.UNKNOWN), (S.SENT, S.SENT),
])
def test_transition_with_illegal_move_raises_and_keeps_state(start, to):
    leg = _leg()
    leg.state = start
    with pytest.raises(IllegalTransition):
        leg.transition(to)
    assert leg.state is start


def test_apply_with_stale_open_answer_after_fill_raises():
    leg = _leg()
    leg.mark_sent(1)
    leg.apply(_result(OrderStatus.DONE, "0.01", "1400000", "700"))
    with pytest.raises(IllegalTransition):
        leg.apply(_result(OrderStatus.OPEN, "0.01", "1400000", "700"))


def test_apply_with_shrinking_executed_volume_raises():
    leg = _leg()
    leg.mark_sent(1)
    leg.apply(_result(OrderStatus.OPEN, "0.004", "560000"))
    with pytest.raises(IllegalTransition):
        leg.apply(_result(OrderStatus.OPEN, "0.003", "420000"))


def test_transition_table_has_no_exit_from_final_states():
    assert all(not TRANSITIONS[s] for s in FINAL)
    assert set(TRANSITIONS) == set(LegState)


def test_reject_before_send_records_the_error():
    leg = _leg()
    leg.reject("kill switch")
    assert leg.state is S.REJECTED and leg.error == "kill switch"
