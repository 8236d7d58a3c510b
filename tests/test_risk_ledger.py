"""Ledger: all-or-nothing reservations, fills moving holds, and no overspend under threads."""
import threading
from decimal import Decimal as D

from karb.ledger import Ledger, order_side_amounts
from karb.model import Side, Venue
from tests.trading_fixtures import balances

UP, BT = Venue.UPBIT, Venue.BITHUMB


def _ledger(**bt):
    ledger = Ledger()
    ledger.load(BT, balances(**(bt or dict(KRW=1_000_000, BTC=1))))
    return ledger


def test_reserve_with_enough_balance_holds_every_amount():
    ledger = _ledger()
    res = ledger.reserve("a", {(BT, "KRW"): D(400_000), (BT, "BTC"): D("0.25")})
    assert not isinstance(res, str)
    assert ledger.available(BT, "KRW") == D(600_000)
    assert ledger.available(BT, "BTC") == D("0.75")
    assert ledger.free(BT, "KRW") == D(1_000_000)


def test_reserve_with_one_amount_short_holds_nothing_and_says_why():
    ledger = _ledger()
    reason = ledger.reserve("a", {(BT, "KRW"): D(400_000), (BT, "BTC"): D("1.5")})
    assert isinstance(reason, str) and "BTC" in reason
    assert ledger.available(BT, "KRW") == D(1_000_000)
    assert ledger.open_reservations() == 0


def test_reserve_with_duplicate_id_or_negative_amount_is_refused():
    ledger = _ledger()
    ledger.reserve("a", {(BT, "KRW"): D(1)})
    assert isinstance(ledger.reserve("a", {(BT, "KRW"): D(1)}), str)
    assert isinstance(ledger.reserve("b", {(BT, "KRW"): D(-1)}), str)


def test_release_twice_frees_once():
    ledger = _ledger()
    res = ledger.reserve("a", {(BT, "KRW"): D(400_000)})
    ledger.release(res)
    ledger.release(res)
    assert ledger.available(BT, "KRW") == D(1_000_000)
    assert ledger.snapshot()[(BT, "KRW")] == (D(1_000_000), D(0))


def test_apply_fill_buy_spends_krw_with_fee_and_holds_the_coin_for_the_trade():
    # Arrange: reserve for 0.005 BTC at 140,000,000 limit with 0.04% fee = 700,280 KRW
    ledger = _ledger()
    res = ledger.reserve("a", order_side_amounts(Side.BUY, "KRW-BTC", BT, D("0.005"),
                                                 D(140_000_000), D("0.0004")))
    assert res.held(BT, "KRW") == D("700280.0000")
    # Act: filled 0.005 for 699,500 KRW (cheaper) plus 279.80 fee
    ledger.apply_fill(res, BT, "KRW-BTC", Side.BUY, D("0.005"), D(699_500), D("279.80"))
    # Assert
    assert ledger.free(BT, "KRW") == D("300220.20")
    assert ledger.free(BT, "BTC") == D("1.005")
    assert res.held(BT, "KRW") == D("500.20")  # the unspent part stays held until release
    assert ledger.available(BT, "BTC") == D("1")  # the bought coin is the trade's until release
    ledger.release(res)
    assert ledger.available(BT, "KRW") == D("300220.20")
    assert ledger.available(BT, "BTC") == D("1.005")


def test_apply_fill_sell_gives_coin_and_receives_krw_net_of_fee():
    ledger = Ledger()
    ledger.load(UP, balances(KRW=0, BTC="0.5"))
    res = ledger.reserve("a", {(UP, "BTC"): D("0.005")})
    ledger.apply_fill(res, UP, "KRW-BTC", Side.SELL, D("0.005"), D(703_500), D("351.75"))
    assert ledger.free(UP, "BTC") == D("0.495")
    assert ledger.free(UP, "KRW") == D("703148.25")
    assert res.held(UP, "BTC") == 0
    ledger.release(res)
    assert ledger.available(UP, "KRW") == D("703148.25")


def test_extend_with_room_holds_more_and_without_room_refuses():
    ledger = _ledger()
    res = ledger.reserve("a", {(BT, "KRW"): D(900_000)})
    assert ledger.extend(res, BT, "KRW", D(100_000))
    assert not ledger.extend(res, BT, "KRW", D(1))
    ledger.release(res)
    assert not ledger.extend(res, BT, "KRW", D(1))


def test_load_with_version_changed_by_a_trade_is_not_taken():
    ledger = _ledger()
    version = ledger.version
    res = ledger.reserve("a", {(BT, "KRW"): D(1)})
    assert not ledger.load(BT, balances(KRW=5), if_version=version)
    ledger.release(res)
    assert not ledger.load(BT, balances(KRW=5), if_version=version)
    assert ledger.load(BT, balances(KRW=5), if_version=ledger.version)
    assert ledger.free(BT, "KRW") == D(5)
    assert ledger.free(BT, "BTC") == D(0)  # a currency the venue no longer reports is zero


def test_reserve_with_many_threads_competing_never_overspends():
    # Arrange: 1,000,000 KRW; 8 threads each try 50 reservations of 7,000 KRW (2.8M in all)
    ledger = _ledger(KRW=1_000_000)
    won: list = []
    start = threading.Barrier(8)

    def worker(n):
        start.wait()
        for i in range(50):
            res = ledger.reserve(f"{n}-{i}", {(BT, "KRW"): D(7_000)})
            if not isinstance(res, str):
                won.append(res)

    threads = [threading.Thread(target=worker, args=(n,), name=f"res-{n}") for n in range(8)]
    # Act
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # Assert: exactly floor(1,000,000 / 7,000) = 142 won, never more
    assert len(won) == 142
    assert ledger.available(BT, "KRW") == D(1_000_000) - 142 * D(7_000)
    assert ledger.available(BT, "KRW") >= 0


def test_fills_and_releases_with_threads_keep_the_books_exact():
    # Arrange: 4 threads each run 100 trades: reserve, buy fill, sell fill, release
    ledger = Ledger()
    ledger.load(BT, balances(KRW=50_000_000, BTC=0))
    ledger.load(UP, balances(KRW=0, BTC=10))
    refused = []

    def worker(n):
        for i in range(100):
            res = ledger.reserve(f"{n}-{i}", {(BT, "KRW"): D("100100"), (UP, "BTC"): D("0.001")})
            if isinstance(res, str):
                refused.append(res)
                continue
            ledger.apply_fill(res, BT, "KRW-BTC", Side.BUY, D("0.001"), D(100_000), D(40))
            ledger.apply_fill(res, UP, "KRW-BTC", Side.SELL, D("0.001"), D(100_500), D("50.25"))
            ledger.release(res)

    threads = [threading.Thread(target=worker, args=(n,), name=f"trade-{n}") for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # Assert: 400 trades, each -100,040 KRW on Bithumb and +100,449.75 on Upbit
    assert refused == []
    assert ledger.free(BT, "KRW") == D(50_000_000) - 400 * D(100_040)
    assert ledger.free(UP, "KRW") == 400 * D("100449.75")
    assert ledger.free(BT, "BTC") == D("0.4") and ledger.free(UP, "BTC") == D("9.6")
    assert all(held == 0 for _, held in ledger.snapshot().values())
