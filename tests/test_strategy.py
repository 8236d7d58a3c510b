"""Strategy thread and pass: fresh books only, caps from balances and risk, cooldown, skew."""
from decimal import Decimal as D

import pytest

from karb.book import BookBoard
from karb.clock import ManualClock, SystemClock
from karb.inventory import Inventory
from karb.model import Venue
from karb.risk import Risk
from karb.strategy import Strategy
from tests.conftest import wait_until
from tests.trading_fixtures import MARKET, balances, make_config, make_rules

UP_BOOK = ([(140_800_000.0, 0.02), (140_700_000.0, 0.05)],  # bids
           [(140_900_000.0, 0.05), (141_000_000.0, 0.05)])  # asks
BT_BOOK = ([(139_900_000.0, 0.05), (139_800_000.0, 0.05)],
           [(140_000_000.0, 0.01), (140_100_000.0, 0.03)])


class Harness:
    def __init__(self, tmp_path, clock=None, strategy=None, inventory=None, risk=None,
                 refuse=None, markets=(MARKET,)):
        self.clock = clock or ManualClock()
        self.config = make_config(tmp_path, markets=markets, strategy=strategy or {},
                                  inventory=inventory or {},
                                  risk={"max_trade_krw": "100000000", **(risk or {})})
        self.rules = make_rules(self.config)
        self.board = BookBoard(list(markets))
        self.risk = Risk(self.config, self.rules, self.clock)
        self.inventory = Inventory(self.config.inventory, self.risk.ledger)
        self.received = []
        self.refuse = refuse
        self.strategy = Strategy(self.board, self.rules, self.risk, self.inventory, self.config,
                                 self.clock, self.on_signal)
        self.fund(up=dict(KRW=10_000_000, BTC=1), bt=dict(KRW=10_000_000, BTC=1))

    def on_signal(self, signal):
        self.received.append(signal)
        return self.refuse

    def fund(self, up, bt):
        self.risk.ledger.load(Venue.UPBIT, balances(**up))
        self.risk.ledger.load(Venue.BITHUMB, balances(**bt))

    def books(self, up=UP_BOOK, bt=BT_BOOK, up_recv=None, bt_recv=None, market=MARKET):
        now = self.clock.monotonic_ns()
        self.board.get(Venue.UPBIT, market).apply_snapshot(*up, 1, now if up_recv is None else up_recv)
        self.board.get(Venue.BITHUMB, market).apply_snapshot(*bt, 1, now if bt_recv is None else bt_recv)

    def evaluate(self):
        return self.strategy.evaluate(self.clock.monotonic_ns())


def test_evaluate_with_dislocated_books_signals_buy_bithumb_sell_upbit(tmp_path):
    # Arrange: Bithumb asks 140.0M x0.01 then 140.1M x0.03; Upbit bids 140.8M x0.02, 140.7M.
    # Every pairing clears 10 bps after 0.04% + 0.05% fees, so depth runs to 0.04 BTC on
    # Bithumb's two ask levels.
    h = Harness(tmp_path, strategy={"threshold_bps": 10})
    h.books()
    # Act
    signals = h.evaluate()
    # Assert
    (signal,) = signals
    assert (signal.buy_venue, signal.sell_venue) == (Venue.BITHUMB, Venue.UPBIT)
    assert signal.volume == D("0.04")
    assert (signal.buy_price, signal.sell_price) == (D("140100000"), D("140700000"))
    cost = 0.01 * 140_000_000 + 0.03 * 140_100_000
    proceeds = 0.02 * 140_800_000 + 0.02 * 140_700_000
    assert signal.buy_vwap == pytest.approx(cost / 0.04)
    assert signal.sell_vwap == pytest.approx(proceeds / 0.04)
    assert float(signal.est_profit_krw) == pytest.approx(proceeds * 0.9995 - cost * 1.0004, abs=0.01)
    assert h.received == [signal] and h.strategy.submitted == 1


def test_evaluate_with_little_coin_on_sell_venue_caps_volume_by_available_balance(tmp_path):
    h = Harness(tmp_path, strategy={"threshold_bps": 10})
    h.fund(up=dict(KRW=10_000_000, BTC="0.0123"), bt=dict(KRW=10_000_000, BTC=1))
    h.books()
    (signal,) = h.evaluate()
    assert signal.volume == D("0.0123")


def test_evaluate_with_reserved_krw_caps_volume_by_what_is_left(tmp_path):
    # Arrange: 2,000,000 KRW on Bithumb, 600,000 held by another trade: 1,400,000 left for
    # limit x volume x 1.0004 -> at most 0.00999... BTC at 140,000,000 (first level only)
    h = Harness(tmp_path, strategy={"threshold_bps": 10})
    h.fund(up=dict(KRW=0, BTC=1), bt=dict(KRW=2_000_000, BTC=0))
    h.risk.ledger.reserve("other", {(Venue.BITHUMB, "KRW"): D(600_000)})
    h.books()
    (signal,) = h.evaluate()
    assert signal.volume == D("0.00999600")  # floor(1,400,000 / (140,000,000 x 1.0004), 8 dp)
    assert signal.buy_price * signal.volume * D("1.0004") <= D(1_400_000)


def test_evaluate_with_max_trade_krw_caps_trade_value(tmp_path):
    h = Harness(tmp_path, strategy={"threshold_bps": 10}, risk={"max_trade_krw": "1000000"})
    h.books()
    (signal,) = h.evaluate()
    assert signal.volume * signal.buy_price <= D(1_000_000)
    assert signal.volume == D("0.00714285")  # floor(1,000,000 / 140,000,000, 8 dp)


@pytest.mark.parametrize("which", ["stale", "invalid", "skewed"])
def test_evaluate_with_untrustworthy_books_makes_no_signal(tmp_path, which):
    h = Harness(tmp_path, strategy={"threshold_bps": 10, "max_book_age_ms": 2000, "max_skew_ms": 500})
    now = h.clock.monotonic_ns()
    if which == "stale":
        h.books()
        h.clock.advance(2.5)
    elif which == "skewed":
        h.books(bt_recv=now - 600_000_000)
    else:
        h.books()
        h.board.get(Venue.UPBIT, MARKET).invalidate("reconnect")
    assert h.evaluate() == []
    assert h.received == []


def test_evaluate_within_cooldown_waits_then_signals_again(tmp_path):
    h = Harness(tmp_path, strategy={"threshold_bps": 10, "cooldown_ms": 1000})
    h.books()
    assert len(h.evaluate()) == 1
    h.clock.advance(0.5)
    h.books()
    assert h.evaluate() == []
    h.clock.advance(0.6)
    h.books()
    assert len(h.evaluate()) == 1


def test_evaluate_after_cooldown_without_new_book_marks_signal_not_a_reaction(tmp_path):
    h = Harness(tmp_path, strategy={"threshold_bps": 10, "cooldown_ms": 1000})
    h.books()
    (first,) = h.evaluate()
    h.clock.advance(1.1)
    (second,) = h.evaluate()  # same book versions: the cooldown ended, no frame arrived
    assert first.on_update and not second.on_update


def test_evaluate_with_refused_signal_does_not_start_cooldown(tmp_path):
    h = Harness(tmp_path, strategy={"threshold_bps": 10}, refuse="ledger says no")
    h.books()
    assert h.evaluate() == []
    assert h.evaluate() == []
    assert len(h.received) == 2 and h.strategy.submitted == 0


def test_evaluate_with_kill_switch_engaged_makes_no_signal(tmp_path):
    h = Harness(tmp_path, strategy={"threshold_bps": 10})
    h.risk.kill.engage("test")
    h.books()
    assert h.evaluate() == []
    assert h.strategy.skipped["blocked"] == 1


def test_evaluate_with_edge_below_threshold_records_net_spread_only(tmp_path):
    h = Harness(tmp_path, strategy={"threshold_bps": 100})
    h.books()
    assert h.evaluate() == []
    net = h.strategy.stats()["net_bps"][(MARKET, "upbit_sell")]
    assert net == pytest.approx((140_800_000 * 0.9995 - 140_000_000 * 1.0004) / 140_000_000 * 1e4)


def test_evaluate_with_band_blocking_the_direction_makes_no_signal(tmp_path):
    # Upbit may not hold less than 0.995 BTC: selling there would take it out of its band
    h = Harness(tmp_path, strategy={"threshold_bps": 10},
                inventory={"bands": {"upbit": {"BTC": {"min": "0.995"}}}})
    h.books()
    (signal,) = h.evaluate()
    assert signal.volume == D("0.005")  # capped to the band
    h.fund(up=dict(KRW=10_000_000, BTC="0.995"), bt=dict(KRW=10_000_000, BTC=1))
    h.clock.advance(2)
    h.books()
    assert h.evaluate() == []


def test_evaluate_with_coin_piled_on_sell_venue_lowers_its_threshold(tmp_path):
    # Arrange: top net edge (140.8M x 0.9995 - 140.0M x 1.0004) / 140.0M = 48.1 bps under a
    # 52 bps threshold; skew 10 bps x imbalance 0.8 takes 8 bps off for selling on Upbit
    h = Harness(tmp_path, strategy={"threshold_bps": 52}, inventory={"skew_bps": 10})
    h.books()
    assert h.evaluate() == []
    # Act: 0.9 BTC on Upbit, 0.1 on Bithumb -> selling on Upbit restores balance
    h.fund(up=dict(KRW=10_000_000, BTC="0.9"), bt=dict(KRW=10_000_000, BTC="0.1"))
    h.clock.advance(2)
    h.books()
    # Assert
    (signal,) = h.evaluate()
    assert signal.sell_venue is Venue.UPBIT
    assert h.inventory.threshold_bps(MARKET, Venue.UPBIT, 52) == pytest.approx(44.0)
    assert h.inventory.threshold_bps(MARKET, Venue.BITHUMB, 52) == pytest.approx(60.0)


def test_evaluate_with_stale_data_for_too_long_halts_trading(tmp_path):
    h = Harness(tmp_path, risk={"max_stale_s": 10})
    h.books()
    h.clock.advance(3)
    h.evaluate()  # stale from here
    h.clock.advance(11)
    h.evaluate()
    assert h.risk.state.value == "halted"
    assert "stale" in h.risk.blocked()


def test_strategy_thread_with_new_book_version_signals_and_stops(tmp_path):
    # Arrange: real clock, so book receive times and the strategy agree
    h = Harness(tmp_path, clock=SystemClock(), strategy={"threshold_bps": 10, "wait_timeout_ms": 20})
    h.strategy.start()
    try:
        # Act
        h.books()
        # Assert
        wait_until(lambda: h.received, 2.0, message="a signal")
        assert h.strategy.stats()["evaluations"] >= 1
    finally:
        h.strategy.stop()
    assert not h.strategy._thread.is_alive()
