"""Dry-run venue: depth-aware fills from the live books, exact fees, and the full dry-run path."""
from decimal import Decimal as D

import pytest

from karb.book import BookBoard
from karb.clock import ManualClock, SystemClock
from karb.dryrun import DRY_RUN_REFILL_S, DryRunVenue
from karb.exchanges.errors import InsufficientFunds, InvalidOrder, OrderNotFound
from karb.execution import Executor
from karb.inventory import Inventory
from karb.journal import Journal
from karb.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce, Venue
from karb.risk import Risk
from karb.strategy import Strategy
from tests.trading_fixtures import MARKET, balances, make_config, make_rules

UP, BT = Venue.UPBIT, Venue.BITHUMB
ASKS = [(140_000_000.0, 0.004), (140_100_000.0, 0.01), (140_500_000.0, 1.0)]
BIDS = [(139_900_000.0, 0.02), (139_800_000.0, 1.0)]


@pytest.fixture
def venue():
    config = make_config()
    board = BookBoard([MARKET])
    board.get(BT, MARKET).apply_snapshot(BIDS, ASKS, 1, 1)
    v = DryRunVenue(BT, board, make_rules(config), SystemClock())
    v.load(balances(KRW=10_000_000, BTC="0.5"))
    return v


def _ioc(side, price, volume, cid="c1"):
    return OrderRequest(BT, MARKET, side, OrderType.LIMIT, cid, price=D(price), volume=D(volume),
                        tif=TimeInForce.IOC)


def test_ioc_buy_walks_levels_up_to_its_limit_with_exact_fee_and_balances(venue):
    # 0.004 @ 140,000,000 + 0.006 @ 140,100,000 = 560,000 + 840,600 = 1,400,600 KRW
    result = venue.place_order(_ioc(Side.BUY, "140100000", "0.01"))
    assert result.status is OrderStatus.DONE
    assert (result.executed_volume, result.executed_funds) == (D("0.01"), D("1400600"))
    assert result.paid_fee == D("560.24")  # 0.04% of 1,400,600
    assert len(result.fills) == 2
    b = venue.get_balances()
    assert b["KRW"].free == D(10_000_000) - D("1400600") - D("560.24")
    assert b["BTC"].free == D("0.51")
    assert venue.get_order(client_id="c1") == result


def test_ioc_sell_with_limit_inside_the_book_fills_part_and_cancels_the_rest(venue):
    result = venue.place_order(_ioc(Side.SELL, "139900000", "0.05"))
    assert result.status is OrderStatus.CANCELLED
    assert result.executed_volume == D("0.02") and result.remaining_volume == D("0.03")
    assert venue.get_balances()["KRW"].free == D(10_000_000) + D(2_798_000) - D("1119.2")


def test_second_order_on_the_same_book_version_cannot_take_the_same_liquidity(venue):
    venue.place_order(_ioc(Side.BUY, "140000000", "0.003", "a"))
    second = venue.place_order(_ioc(Side.BUY, "140000000", "0.003", "b"))
    assert second.executed_volume == D("0.001")


def test_dry_run_with_book_version_change_does_not_fill_the_same_liquidity_again():
    # Arrange: the venue never saw our dry-run fill, so its next frames still show the level
    clock = ManualClock()
    board = BookBoard([MARKET])
    book = board.get(BT, MARKET)
    book.apply_snapshot(BIDS, ASKS, 1, 1)
    venue = DryRunVenue(BT, board, make_rules(make_config()), clock)
    venue.load(balances(KRW=10_000_000, BTC="0.5"))
    assert venue.place_order(_ioc(Side.BUY, "140000000", "0.004", "a")).executed_volume == D("0.004")
    # Act: three new book versions with the same levels, an order after each
    again = []
    for i in range(3):
        book.apply_snapshot(BIDS, ASKS, 2 + i, 2 + i)
        clock.advance(0.2)
        again.append(venue.place_order(_ioc(Side.BUY, "140000000", "0.004", f"b{i}")).executed_volume)
    # Assert: taken once, not three more times; after the refill time the level is there again
    assert again == [D(0), D(0), D(0)]
    clock.advance(DRY_RUN_REFILL_S)
    book.apply_snapshot(BIDS, ASKS, 9, 9)
    assert venue.place_order(_ioc(Side.BUY, "140000000", "0.004", "c")).executed_volume == D("0.004")


def test_dry_run_orders_kept_stay_bounded(venue, monkeypatch):
    import karb.dryrun
    monkeypatch.setattr(karb.dryrun, "ORDERS_KEPT", 50)
    venue.load(balances(KRW=10_000_000_000, BTC="500"))
    for i in range(120):
        venue.place_order(_ioc(Side.SELL, "139800000", "0.001", f"o{i}"))
    assert len(venue._orders) == 50
    assert venue.get_order(client_id="o119").client_id == "o119"
    with pytest.raises(OrderNotFound):
        venue.get_order(client_id="o0")


def test_market_buy_spends_funds_through_the_levels(venue):
    req = OrderRequest(BT, MARKET, Side.BUY, OrderType.MARKET_BUY, "m1", funds=D(1_400_600))
    result = venue.place_order(req)
    assert result.executed_volume == D("0.01") and result.executed_funds == D(1_400_600)
    assert result.status is OrderStatus.DONE


@pytest.mark.parametrize("request_,error", [
    (_ioc(Side.BUY, "140000500", "0.01"), InvalidOrder),  # off the 1,000 tick
    (_ioc(Side.BUY, "140000000", "0.00001"), InvalidOrder),  # 1,400 KRW < 5,000 minimum
    (_ioc(Side.BUY, "140000000", "0.1"), InsufficientFunds),  # 14,005,600 KRW > 10,000,000
    (_ioc(Side.SELL, "139000000", "0.6"), InsufficientFunds),  # 0.6 BTC > 0.5
    (OrderRequest(BT, MARKET, Side.BUY, OrderType.LIMIT, "g", price=D(140_000_000),
                  volume=D("0.01")), InvalidOrder),  # GTC is not simulated
])
def test_place_order_with_bad_request_raises_like_the_venue_and_changes_nothing(venue, request_, error):
    with pytest.raises(error):
        venue.place_order(request_)
    assert venue.get_balances()["KRW"].free == D(10_000_000)
    with pytest.raises(OrderNotFound):
        venue.get_order(client_id=request_.client_id)


def test_place_order_with_used_client_id_is_refused(venue):
    venue.place_order(_ioc(Side.BUY, "140000000", "0.001"))
    with pytest.raises(InvalidOrder):
        venue.place_order(_ioc(Side.BUY, "140000000", "0.001"))


def test_place_order_on_an_invalid_book_fills_nothing(venue):
    venue.board.get(BT, MARKET).invalidate("reconnect")
    result = venue.place_order(_ioc(Side.BUY, "140100000", "0.01"))
    assert result.executed_volume == 0 and result.status is OrderStatus.CANCELLED


def test_public_reads_come_from_the_board(venue):
    assert venue.get_markets() == [MARKET]
    assert venue.get_ticker([MARKET]) == {MARKET: D("139950000.0")}
    assert venue.get_orderbook(MARKET).asks[0] == ASKS[0]
    assert venue.get_open_orders() == [] and venue.get_market_info([MARKET]) == []


def test_dry_run_path_with_dislocated_books_trades_and_ledger_matches_the_venues(tmp_path):
    # Arrange: the whole path as the engine wires it in dry-run mode
    config = make_config(tmp_path, strategy={"threshold_bps": 10}, risk={"max_trade_krw": "5000000"})
    rules, clock = make_rules(config), SystemClock()
    board = BookBoard([MARKET])
    risk = Risk(config, rules, clock)
    venues = {v: DryRunVenue(v, board, rules, clock) for v in Venue}
    for v in Venue:
        start = balances(KRW=10_000_000, BTC="0.1")
        risk.ledger.load(v, start)
        venues[v].load(start)
    journal = Journal(config.journal.path)
    journal.start()
    executor = Executor(venues, rules, risk, journal, config, clock)
    strategy = Strategy(board, rules, risk, Inventory(config.inventory, risk.ledger), config, clock,
                        executor.submit)
    executor.start()
    try:
        now = clock.monotonic_ns()
        board.get(UP, MARKET).apply_snapshot([(140_800_000.0, 0.02)], [(140_900_000.0, 1.0)], 1, now)
        board.get(BT, MARKET).apply_snapshot([(139_900_000.0, 1.0)], ASKS, 1, now)
        # Act
        strategy.evaluate(clock.monotonic_ns())
        assert executor.wait_idle(5.0)
        # Assert: 0.02 BTC, all of Upbit's bid: even Bithumb's third level (140.5M) still nets
        # 140.8M x 0.9995 - 140.5M x 1.0004 = +173,400 KRW per BTC
        assert risk.summary()["successes"] == 1
        assert executor.label == "[DryRun] "
        for v in Venue:
            for ccy, bal in venues[v].get_balances().items():
                assert risk.ledger.free(v, ccy) == bal.free
        cost = D("0.004") * 140_000_000 + D("0.01") * 140_100_000 + D("0.006") * 140_500_000
        proceeds = D("0.02") * 140_800_000
        fees = (cost * D("0.0004")).quantize(D("1e-8")) + (proceeds * D("0.0005")).quantize(D("1e-8"))
        assert risk.summary()["realised_pnl_krw"] == proceeds - cost - fees
    finally:
        executor.stop(2.0)
        journal.stop()
