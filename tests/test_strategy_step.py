"""The strategy thread's ``step`` looks at changed markets only, yet submits exactly what a pass
over every market (``evaluate``) would: same signals, same net spreads, same stale-data verdict."""
from __future__ import annotations

import random
from decimal import Decimal as D

import pytest
from loguru import logger

from karb.book import BookBoard
from karb.book_changes import BookChanges
from karb.clock import NS_PER_MS, ManualClock
from karb.inventory import Inventory
from karb.model import Venue
from karb.risk import Risk
from karb.rules import MarketInfo
from karb.strategy import Strategy
from tests.trading_fixtures import balances, make_config, make_rules

PRICES = {"KRW-BTC": 140_000_000.0, "KRW-ETH": 5_200_000.0, "KRW-XRP": 3_200.0,
          "KRW-SHIB": 0.021, **{f"KRW-C{i:02d}": 10.0 ** (i % 7) * 1.7 for i in range(8)}}
MARKETS = list(PRICES)
WAIT_MS = 50


class Side:
    """One strategy on its own board, clock, ledger and rules."""

    def __init__(self, tmp_path, noted: bool):
        self.clock = ManualClock()
        self.config = make_config(tmp_path, markets=MARKETS,
                                  strategy={"threshold_bps": 10, "cooldown_ms": 300,
                                            "wait_timeout_ms": WAIT_MS},
                                  risk={"max_trade_krw": "50000000", "max_stale_s": 1})
        self.rules = make_rules(self.config)
        self.board = BookBoard(MARKETS)
        self.changes = BookChanges(MARKETS) if noted else None
        self.sinks = {v: self.changes.sink(self.board.sink(v)) if noted else self.board.sink(v)
                      for v in Venue}
        self.risk = Risk(self.config, self.rules, self.clock)
        self.inventory = Inventory(self.config.inventory, self.risk.ledger)
        self.strategy = Strategy(self.board, self.rules, self.risk, self.inventory, self.config,
                                 self.clock, self.on_signal, new_id=lambda: "id",
                                 changes=self.changes)
        self.fund(1.0)

    @staticmethod
    def on_signal(signal):
        # a refusal that depends on the signal alone, so both sides refuse the same ones
        return "refused: odd" if int(signal.buy_price * 1000) % 3 == 0 else None

    def fund(self, scale: float):
        for venue in Venue:
            coins = {m.split("-")[1]: round(2_000_000 / p * scale, 8) for m, p in PRICES.items()}
            self.risk.ledger.load(venue, balances(KRW=int(30_000_000 * scale), **coins))


def _snapshot(rng: random.Random, price: float, shift: float):
    mid = price * (1.0 + shift)
    tick = mid * 0.0002
    bids = [(mid - tick * (k + 1), round(rng.uniform(0.2, 3.0) * 1_000_000 / price, 8))
            for k in range(5)]
    asks = [(mid + tick * (k + 1), round(rng.uniform(0.2, 3.0) * 1_000_000 / price, 8))
            for k in range(5)]
    return bids, asks


def _seen(signals):
    return [(s.market, s.buy_venue, s.volume, s.buy_price, s.sell_price, s.on_update,
             s.created_ns) for s in signals]


@pytest.mark.parametrize("seed", range(6))
def test_step_submits_what_a_pass_over_every_market_would(tmp_path, seed):
    logger.disable("karb")
    try:
        _run_equivalence(tmp_path, seed)
    finally:
        logger.enable("karb")


def _run_equivalence(tmp_path, seed):
    rng = random.Random(seed)
    stepped = Side(tmp_path / "a", noted=seed % 2 == 0)  # half the seeds without BookChanges
    reference = Side(tmp_path / "b", noted=False)
    sides = (stepped, reference)
    last_full = -10**18
    ts = 1
    signals = 0
    for _ in range(1500):
        roll = rng.random()
        if roll < 0.75:  # a book update (an edge now and then), the same on both sides
            market, venue = rng.choice(MARKETS), rng.choice(list(Venue))
            shift = rng.choice((0.0, 0.0, 0.0, 0.004, -0.004, 0.0001))
            bids, asks = _snapshot(rng, PRICES[market], shift)
            ts += 1
            for side in sides:
                side.sinks[venue].on_snapshot(market, bids, asks, ts, side.clock.monotonic_ns())
        elif roll < 0.78:
            market = rng.choice(MARKETS) if rng.random() < 0.8 else None  # None: every book
            venue = rng.choice(list(Venue))
            for side in sides:
                side.sinks[venue].on_reset(market, "test reset")
        elif roll < 0.80:  # balances move with no book change (a trade elsewhere, a sync)
            scale = rng.choice((0.3, 1.0, 2.0))
            for side in sides:
                side.fund(scale)
        elif roll < 0.82:  # a venue state holds a market, or clears
            market, venue = rng.choice(MARKETS), rng.choice(list(Venue))
            state = rng.choice(("deposit suspended", None))
            for side in sides:
                side.strategy.set_venue_state(venue, market, state)
        elif roll < 0.83:  # a rules refresh with new fees and no book change
            venue = rng.choice(list(Venue))
            fee = rng.choice((D("0.0004"), D("0.0005"), D("0.0025")))
            for side in sides:
                side.rules.update(venue, [MarketInfo(m, taker_fee=fee) for m in MARKETS])
        # mostly milliseconds; now and then long enough for books to go stale (2 s) and for
        # the stale-data watch to halt (1 s with no fresh market)
        advance = (rng.choice((0, 1, 2, 5, 10, 20, 60)) if rng.random() < 0.997 else 2500) * NS_PER_MS
        for side in sides:
            side.clock.advance(ns=advance)
        now = stepped.clock.monotonic_ns()
        full = now - last_full >= WAIT_MS * NS_PER_MS
        if full:
            last_full = now
        got = stepped.strategy.step(now, full)
        want = reference.strategy.evaluate(now, changed_only=not full)
        assert _seen(got) == _seen(want)
        assert stepped.strategy.last_net_bps == reference.strategy.last_net_bps
        assert stepped.risk.blocked() == reference.risk.blocked()
        signals += len(want)
        if reference.risk.blocked():
            for side in sides:
                side.risk.resume()
    assert signals > 10  # the run traded: the comparison covered signals, not only silence
    # and the stepped side did less work: quiet markets are not looked at again
    assert stepped.strategy.evaluations < reference.strategy.evaluations


def test_step_without_a_feed_note_sees_a_book_change_on_the_next_full_pass(tmp_path):
    side = Side(tmp_path, noted=True)
    reference = Side(tmp_path / "ref", noted=False)
    rng = random.Random(1)
    for market in MARKETS:
        bids, asks = _snapshot(rng, PRICES[market], 0.0)
        for s in (side, reference):
            for venue in Venue:
                s.sinks[venue].on_snapshot(market, bids, asks, 1, s.clock.monotonic_ns())
    assert side.strategy.step(side.clock.monotonic_ns(), full=True) == []
    # an edge applied to the book directly, not through the feeds' noting sink
    bids, asks = _snapshot(rng, PRICES["KRW-ETH"], 0.004)
    for s in (side, reference):
        s.board.get(Venue.UPBIT, "KRW-ETH").apply_snapshot(bids, asks, 2, s.clock.monotonic_ns())
        s.clock.advance(ns=NS_PER_MS)
    now = side.clock.monotonic_ns()
    assert side.strategy.step(now, full=False) == []  # not noted: this wake does not look
    got = side.strategy.step(now, full=True)
    assert [s.market for s in got] == ["KRW-ETH"]
    assert _seen(got) == _seen(reference.strategy.evaluate(now))


def test_a_noted_update_that_lands_after_the_wake_is_looked_at_on_the_next_wake(tmp_path):
    side = Side(tmp_path, noted=True)
    rng = random.Random(2)
    for market in MARKETS:
        bids, asks = _snapshot(rng, PRICES[market], 0.0)
        for venue in Venue:
            side.sinks[venue].on_snapshot(market, bids, asks, 1, side.clock.monotonic_ns())
    side.strategy.step(side.clock.monotonic_ns(), full=True)
    # the feed thread noted KRW-XRP and the strategy woke before the book took the update
    side.changes.note("KRW-XRP")
    assert side.strategy.step(side.clock.monotonic_ns(), full=False) == []
    bids, asks = _snapshot(rng, PRICES["KRW-XRP"], 0.004)
    side.board.get(Venue.UPBIT, "KRW-XRP").apply_snapshot(bids, asks, 2, side.clock.monotonic_ns())
    got = side.strategy.step(side.clock.monotonic_ns(), full=False)
    assert [s.market for s in got] == ["KRW-XRP"] and got[0].on_update


def test_noting_sink_notes_each_market_before_the_book_sees_the_update():
    changes = BookChanges(["KRW-BTC", "KRW-ETH"])
    seen_at_call = []

    class Stub:  # records what was already noted when the book got the update
        def __getattr__(self, name):
            def call(market, *args):
                seen_at_call.append((name, market, set(changes._marks)))
                return name != "on_delta"
            return call

    sink = changes.sink(Stub())
    assert sink.on_snapshot("KRW-BTC", [], [], 1, 1) is True
    assert sink.on_snapshot_columns("KRW-ETH", [], [], [], [], 1, 1) is True
    assert changes.take() == {"KRW-BTC", "KRW-ETH"}
    assert sink.on_delta("KRW-ETH", [("bid", 1.0, 1.0)], 2, 2) is False  # the book's answer
    assert changes.take() == {"KRW-ETH"}
    sink.on_reset(None, "reconnect")  # every book of the feed
    assert seen_at_call == [
        ("on_snapshot", "KRW-BTC", {"KRW-BTC"}),
        ("on_snapshot_columns", "KRW-ETH", {"KRW-BTC", "KRW-ETH"}),
        ("on_delta", "KRW-ETH", {"KRW-ETH"}),
        ("on_reset", None, {"KRW-BTC", "KRW-ETH"}),
    ]
    assert changes.take() == {"KRW-BTC", "KRW-ETH"}
    assert changes.take() == set()
