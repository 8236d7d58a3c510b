"""Legacy Bithumb fees charged in coin: parsed with their currency, booked off the coin received."""
from decimal import Decimal as D

from karb.exchanges.bithumb.parse import parse_legacy_order_detail
from karb.ledger import Ledger
from karb.model import Balance, OrderType, Side, Venue

BT = Venue.BITHUMB


def _detail(fee_currency: str, fee: str, side: str = "bid") -> dict:
    return {"order_date": "1704067200123456", "type": side, "order_status": "Completed",
            "order_currency": "BTC", "payment_currency": "KRW", "order_price": "140000000",
            "order_qty": "0.01", "cancel_date": "", "cancel_type": "",
            "contract": [{"transaction_date": "1704067200200000", "price": "140000000",
                          "units": "0.004", "fee_currency": fee_currency, "fee": fee,
                          "total": "560000"},
                         {"transaction_date": "1704067200300000", "price": "140100000",
                          "units": "0.006", "fee_currency": fee_currency,
                          "fee": "0.0000024" if fee_currency == "BTC" else "336.24",
                          "total": "840600"}]}


def test_legacy_fill_with_fee_in_coin_carries_fee_and_currency_per_fill():
    result = parse_legacy_order_detail("C1", _detail("BTC", "0.0000016"), "cid", OrderType.LIMIT)
    assert [(f.fee, f.fee_currency) for f in result.fills] == [
        (D("0.0000016"), "BTC"), (D("0.0000024"), "BTC")]
    # paid_fee stays the KRW value of every fee, for PnL
    assert result.paid_fee == D("0.0000016") * D("140000000") + D("0.0000024") * D("140100000")


def test_legacy_buy_with_fee_in_coin_books_the_fee_off_the_coin_received():
    # Arrange
    ledger = Ledger()
    ledger.load(BT, {"KRW": Balance("KRW", D("2000000")), "BTC": Balance("BTC", D("0"))})
    reservation = ledger.reserve("t1", {(BT, "KRW"): D("1410000")})
    result = parse_legacy_order_detail("C1", _detail("BTC", "0.0000016"), "cid", OrderType.LIMIT)
    # Act
    ledger.apply_fill(reservation, BT, "KRW-BTC", Side.BUY, result.executed_volume,
                      result.executed_funds, result.paid_fee, fills=result.fills)
    # Assert: the venue holds 0.01 - 0.000004 BTC and charged no KRW fee
    assert ledger.free(BT, "BTC") == D("0.009996")
    assert ledger.free(BT, "KRW") == D("2000000") - D("1400600")
    assert reservation.held(BT, "BTC") == D("0.009996")  # a flatten can only sell what is there
    ledger.release(reservation)
    assert isinstance(ledger.reserve("flatten", {(BT, "BTC"): D("0.01")}), str)
    assert not isinstance(ledger.reserve("flatten2", {(BT, "BTC"): D("0.009996")}), str)


def test_legacy_fill_with_fee_in_krw_books_as_before():
    ledger = Ledger()
    ledger.load(BT, {"KRW": Balance("KRW", D("0")), "BTC": Balance("BTC", D("0.01"))})
    reservation = ledger.reserve("t1", {(BT, "BTC"): D("0.01")})
    result = parse_legacy_order_detail("C1", _detail("KRW", "224", side="ask"), "cid", OrderType.LIMIT)
    ledger.apply_fill(reservation, BT, "KRW-BTC", Side.SELL, result.executed_volume,
                      result.executed_funds, result.paid_fee, fills=result.fills)
    assert ledger.free(BT, "BTC") == D("0")
    assert ledger.free(BT, "KRW") == D("1400600") - D("224") - D("336.24")
