"""Strategy thread and pass: fresh books only, caps from balances and risk, cooldown, skew."""
import math
from decimal import Decimal as D

import pytest
from loguru import logger

from karb.book import BookBoard
from karb.clock import ManualClock, SystemClock
from karb.inventory import Inventory
from karb.model import Venue
from karb.risk import Risk
from karb.ledger import Reservation
from karb.risk import taker_fee
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

    def approve_signals(self):
        """Submit like the executor does: risk (limits and ledger reservation) decides."""
        self.approved = []

        def approve(signal):
            self.received.append(signal)
            outcome = self.risk.approve(signal)
            self.approved.append(outcome)
            return outcome if isinstance(outcome, str) else None
        self.strategy.on_signal = approve

    def only_signal(self):
        """Evaluate once; the one signal emitted, checked against every limit."""
        submitted = self.evaluate()
        assert len(self.received) == 1, self.strategy.last_reason
        (signal,) = self.received
        self.passes_every_limit(signal)
        assert submitted == [signal]
        return signal

    def passes_every_limit(self, signal):
        """The signal was approved by risk (ledger included) and keeps every inventory band."""
        fees = [taker_fee(self.config, self.rules, v, signal.market)
                for v in (signal.buy_venue, signal.sell_venue)]
        assert self.inventory.check(signal, *fees) is None
        assert isinstance(self.approved[self.received.index(signal)], Reservation), self.approved

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
    assert h.received == [signal] and h.strategy.signals == 1


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


def test_evaluate_after_cooldown_trades_again_only_once_both_books_changed(tmp_path):
    # never twice on the same evidence: the books still show what the last trade took
    h = Harness(tmp_path, strategy={"threshold_bps": 10, "cooldown_ms": 1000})
    h.books()
    (first,) = h.evaluate()
    h.clock.advance(1.1)
    assert h.evaluate() == []  # the cooldown ended, no frame arrived
    assert h.strategy.last_reason["KRW-BTC"].startswith("same book")
    now = h.clock.monotonic_ns()
    h.board.get(Venue.UPBIT, "KRW-BTC").apply_snapshot(*UP_BOOK, 2, now)  # Upbit only
    assert h.evaluate() == []
    h.books()
    (second,) = h.evaluate()
    assert first.on_update and second.on_update


def test_evaluate_after_cooldown_on_books_seen_during_it_marks_signal_not_a_reaction(tmp_path):
    h = Harness(tmp_path, strategy={"threshold_bps": 10, "cooldown_ms": 1000})
    h.books()
    (first,) = h.evaluate()
    h.clock.advance(0.5)
    h.books()  # both books move on while the market cools down ...
    assert h.evaluate() == []
    h.clock.advance(0.6)
    (second,) = h.evaluate()  # ... and the cooldown ends with no new frame: not a reaction
    assert first.on_update and not second.on_update


def test_evaluate_with_refused_signal_backs_the_market_off_for_the_cooldown(tmp_path):
    h = Harness(tmp_path, strategy={"threshold_bps": 10, "cooldown_ms": 1000},
                refuse="no two idle leg threads")
    h.books()
    assert h.evaluate() == []
    h.clock.advance(0.5)
    h.books()  # a new book version within the back-off: nothing submitted
    assert h.evaluate() == []
    assert len(h.received) == 1
    h.clock.advance(0.6)
    assert h.evaluate() == []
    assert len(h.received) == 2


def test_evaluate_with_the_same_refusal_on_every_book_change_logs_it_once(tmp_path):
    # the "no two idle leg threads" flood: 11 lines in 200 ms before, one line per episode now
    lines = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO", format="{message}")
    try:
        h = Harness(tmp_path, strategy={"threshold_bps": 10, "cooldown_ms": 0},
                    refuse="no two idle leg threads")
        for _ in range(11):
            h.books()
            h.evaluate()
        h.refuse = "bithumb KRW available 12.5 is less than the 13 needed"
        for _ in range(3):
            h.books()
            h.evaluate()
        h.refuse = "bithumb KRW available 7 is less than the 9.25 needed"  # same reason
        h.books()
        h.evaluate()
        h.refuse = None
        h.books()
        h.evaluate()
        h.refuse = "no two idle leg threads"  # a new episode after a taken signal
        h.books()
        h.evaluate()
    finally:
        logger.remove(sink)
    refused = [line for line in lines if " refused: " in line]
    assert len(refused) == 3, refused
    assert "no two idle leg threads" in refused[0] and "KRW available 12.5" in refused[1]
    assert "no two idle leg threads" in refused[2]
    assert [line.strip() for line in lines if "trading again" in line] == [
        "KRW-BTC trading again after 15 refused signal(s), the last: bithumb KRW available 7 is "
        "less than the 9.25 needed"]
    assert len(h.received) == 17


def test_stats_count_refused_signals_apart_from_signals_by_reason(tmp_path):
    h = Harness(tmp_path, strategy={"threshold_bps": 10, "cooldown_ms": 0},
                refuse="no two idle leg threads")
    h.books()
    h.evaluate()
    h.books()
    h.evaluate()
    h.refuse = "journal: disk I/O error"
    h.books()
    h.evaluate()
    h.refuse = None
    h.books()
    h.evaluate()
    stats = h.strategy.stats()
    assert stats["signals"] == 1
    assert stats["refused"] == {"no two idle leg threads": 2, "journal: disk I/O error": 1}


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
    # 52 bps threshold; targets where it started (1 BTC and 10M KRW on each venue)
    h = Harness(tmp_path, strategy={"threshold_bps": 52}, inventory={"skew_bps": 10})
    h.inventory.set_targets({v: {"BTC": D(1), "KRW": D(10_000_000)} for v in Venue})
    h.books()
    assert h.evaluate() == []
    # Act: 0.9 BTC on Upbit, 0.1 on Bithumb -> selling on Upbit restores balance
    h.fund(up=dict(KRW=10_000_000, BTC="0.9"), bt=dict(KRW=10_000_000, BTC="0.1"))
    h.clock.advance(2)
    h.books()
    # Assert: Upbit's BTC is far above target (p = -1: 10 bps off); Bithumb's KRW at target
    (signal,) = h.evaluate()
    assert signal.sell_venue is Venue.UPBIT
    assert h.inventory.threshold_bps(MARKET, Venue.UPBIT, 52) == pytest.approx(42.0)
    # selling on Bithumb would drain 0.1 BTC, already below its default floor (0.2 of 1 BTC)
    assert h.inventory.threshold_bps(MARKET, Venue.BITHUMB, 52) == math.inf


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


# --- self-refusal: what the strategy emits passes the limits risk, ledger and inventory apply --

SHIB = "KRW-SHIB"
SHIB_UP = ([(0.0212, 1e12)], [(0.0213, 1e12)])  # Upbit bids 0.0212: sell there
SHIB_BT = ([(0.0209, 1e12)], [(0.021, 1e12)])  # Bithumb asks 0.021: buy there


def _shib(tmp_path, up, bt, **risk):
    h = Harness(tmp_path, markets=(SHIB,), strategy={"threshold_bps": 10},
                risk={"max_trade_krw": "100000000000", "max_position_krw": "1000000000000", **risk})
    h.fund(up=up, bt=bt)
    h.approve_signals()
    h.books(up=SHIB_UP, bt=SHIB_BT, market=SHIB)
    return h


def test_evaluate_shib_at_0_021_sized_to_max_trade_krw_is_not_refused_by_risk(tmp_path):
    # floats: 2,000,000 / 0.021 = 95,238,095.23809524 SHIB, worth 2,000,000.00000000004 KRW
    h = _shib(tmp_path, up=dict(KRW=0, SHIB=10**10), bt=dict(KRW=10**8, SHIB=0),
              max_trade_krw="2000000")
    signal = h.only_signal()
    assert signal.volume == D("95238095.23809523")
    assert signal.volume * signal.buy_price <= D(2_000_000)


def test_evaluate_with_random_buy_venue_krw_sizes_within_the_ledger_reservation(tmp_path):
    # the ledger holds volume x limit x (1 + fee): float sizing asked 1,452,725.0900000000909
    h = _shib(tmp_path, up=dict(KRW=0, SHIB=10**10), bt=dict(KRW="1452725.09", SHIB=0))
    signal = h.only_signal()
    assert signal.volume * signal.buy_price * D("1.0004") <= D("1452725.09")


def test_evaluate_with_random_8_decimal_sell_coin_balance_sizes_within_it(tmp_path):
    # float(670259108.93374618) is 670259108.9337462: more coin than the sell venue holds
    h = _shib(tmp_path, up=dict(KRW=0, SHIB="670259108.93374618"), bt=dict(KRW=10**11, SHIB=0))
    signal = h.only_signal()
    assert signal.volume == D("670259108.93374618")


def test_evaluate_with_position_room_binding_sizes_at_the_buy_limit_not_the_best_ask(tmp_path):
    # 4,000,000 KRW of room is 0.02857 BTC at the best ask 140.0M but 0.02855 at the 140.1M
    # limit the walk reaches: risk checks at the limit
    h = Harness(tmp_path, strategy={"threshold_bps": 10}, risk={"max_position_krw": "4000000"})
    h.approve_signals()
    h.books()
    signal = h.only_signal()
    assert signal.buy_price == D("140100000")
    assert signal.volume == D("0.02855103")  # floor(4,000,000 / 140,100,000, 8 dp)


def test_evaluate_with_krw_band_binding_sizes_with_fee_at_the_buy_limit(tmp_path):
    # Bithumb KRW may not fall below 8,000,000: 2,000,000 to spend, at the 140.1M limit plus
    # the 0.04% fee, not at the 140.0M top of book without it
    h = Harness(tmp_path, strategy={"threshold_bps": 10},
                inventory={"bands": {"bithumb": {"KRW": {"min": "8000000"}}}})
    h.approve_signals()
    h.books()
    signal = h.only_signal()
    assert signal.volume * signal.buy_price * D("1.0004") <= D(2_000_000)
    assert signal.volume == D("0.01426980")  # floor(2,000,000 / (140,100,000 x 1.0004), 8 dp)


def test_evaluate_with_no_edge_does_no_decimal_sizing(tmp_path, monkeypatch):
    # the hot path: a market whose top of book has no edge never reaches the exact step
    h = Harness(tmp_path, strategy={"threshold_bps": 100})

    def exact_work(*args, **kwargs):
        raise AssertionError("Decimal sizing for a market without an edge")
    for name in ("position_room", "exact_cap", "check", "available"):
        monkeypatch.setattr(h.risk, name, exact_work)
    monkeypatch.setattr(h.inventory, "exact_cap", exact_work)
    h.books()
    assert h.evaluate() == []
    assert h.strategy.evaluations == 1
