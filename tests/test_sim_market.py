"""The market generator: determinism, venue grids, realistic gaps, dislocation, our fills, replay."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import itertools
from pathlib import Path

import orjson
import pytest

from karb.config import load_config
from karb.model import Venue
from karb.sim.frames import legacy_depth_frame, orderbook_frame
from karb.sim.grid import GRIDS, from_decimal, to_str
from karb.sim.market import MarketGenerator
from karb.sim.replay import ReplaySource

SIM_YAML = Path(__file__).resolve().parent.parent / "config" / "sim.yaml"
START_MS = 1_767_225_600_000


@pytest.fixture(scope="module")
def config():
    return load_config(SIM_YAML)


def stream_digest(config, n: int, seed: int | None = None) -> str:
    sim = config.sim if seed is None else dataclasses.replace(config.sim, seed=seed)
    digest = hashlib.sha256()
    for event in itertools.islice(MarketGenerator(sim, config.markets).events(), n):
        digest.update(orderbook_frame(event.market, event.bids, event.asks, START_MS + event.t_ns // 1_000_000))
    return digest.hexdigest()


def test_stream_with_same_seed_and_start_is_byte_identical_for_10000_messages(config):
    assert stream_digest(config, 10_000) == stream_digest(config, 10_000)


def test_stream_with_another_seed_differs(config):
    assert stream_digest(config, 200) != stream_digest(config, 200, seed=8)


def test_books_with_default_config_are_on_tick_sorted_uncrossed_and_30_deep(config):
    markets = set(config.markets)
    seen = set()
    for event in itertools.islice(MarketGenerator(config.sim, config.markets).events(), 5000):
        grid = GRIDS[event.venue]
        prices = [p for p, _ in event.bids + event.asks]
        assert all(grid.on_grid(p) for p in prices)
        assert all(a[0] > b[0] for a, b in zip(event.bids, event.bids[1:]))
        assert all(a[0] < b[0] for a, b in zip(event.asks, event.asks[1:]))
        assert event.bids[0][0] < event.asks[0][0]
        assert len(event.asks) == 30 and all(s > 0 for _, s in event.bids + event.asks)
        if event.market != "KRW-BTT":  # 0.0012 KRW on Bithumb's 0.0001 tick has only 11 bid prices
            assert len(event.bids) == 30
        seen.add(event.market)
    assert seen == markets


def test_update_rate_with_default_config_is_about_10_per_market_per_venue(config):
    events = list(itertools.takewhile(lambda e: e.t_ns < 20e9, MarketGenerator(config.sim, config.markets).events()))
    rate = len(events) / 20 / (2 * len(config.markets))
    assert 9.0 < rate < 11.0


def test_cross_venue_gaps_open_between_5_and_100_bps_and_close_within_seconds(config):
    sim = dataclasses.replace(config.sim, gaps_per_min=6.0)
    last: dict[tuple[Venue, str], tuple[int, int]] = {}
    open_since: dict[str, int] = {}
    durations, sizes = [], []
    for event in itertools.takewhile(lambda e: e.t_ns < 300e9, MarketGenerator(sim, ["KRW-BTC", "KRW-ETH"]).events()):
        last[(event.venue, event.market)] = (event.bids[0][0], event.asks[0][0])
        other = last.get((event.venue.other, event.market))
        if other is None:
            continue
        mine = last[(event.venue, event.market)]
        gap = max(mine[0] - other[1], other[0] - mine[1]) / mine[0] * 1e4
        if gap > 0 and event.market not in open_since:
            open_since[event.market] = event.t_ns
            sizes.append(gap)
        elif gap > 0:
            sizes[-1] = max(sizes[-1], gap)
        elif gap <= 0 and event.market in open_since:
            durations.append((event.t_ns - open_since.pop(event.market)) / 1e9)
    assert len(durations) >= 10
    assert max(sizes) > 10 and max(sizes) < 150
    assert min(durations) < 0.5 and max(durations) < 20


def test_dislocate_holds_cheap_asks_below_the_other_bids_by_the_bps(config):
    gen = MarketGenerator(config.sim, ["KRW-ETH"])
    events = gen.events()
    books = {}
    for event in itertools.islice(events, 20):
        books[event.venue] = event
    gen.dislocate("KRW-ETH", Venue.BITHUMB, bps=40, seconds=3)
    gaps, deadline = [], gen.now_ns + 2.5e9
    for event in itertools.takewhile(lambda e: e.t_ns < deadline, events):
        books[event.venue] = event
        cheap_ask = books[Venue.BITHUMB].asks[0][0]
        dear_bid = books[Venue.UPBIT].bids[0][0]
        gaps.append((dear_bid - cheap_ask) / dear_bid * 1e4)
    assert min(gaps[4:]) >= 39.0


def test_take_removes_our_filled_liquidity_from_the_next_book(config):
    gen = MarketGenerator(config.sim, ["KRW-BTC"])
    with_take = gen.events()
    without = MarketGenerator(config.sim, ["KRW-BTC"]).events()
    for stream in (with_take, without):  # past the opening books (t=0, before any premium moves)
        while next(stream).t_ns == 0:
            pass
    first = next(e for e in with_take if e.venue is Venue.UPBIT)
    next(e for e in without if e.venue is Venue.UPBIT)
    price, size = first.asks[10]
    gen.take(Venue.UPBIT, "KRW-BTC", "ask", price, size // 2)
    after = dict(next(e for e in with_take if e.venue is Venue.UPBIT).asks)
    reference = dict(next(e for e in without if e.venue is Venue.UPBIT).asks)
    assert after[price] == reference[price] - size // 2
    assert {p: s for p, s in after.items() if p != price} == {p: s for p, s in reference.items() if p != price}


@pytest.mark.parametrize("profile", ["demo", "realistic"])
def test_the_float_mirror_is_the_int_ladders_top_and_leaves_the_stream_unchanged(config, profile):
    """A backtest's generator (``float_depth``) yields the same books as the live sim's, plus
    their top levels as floats, also after our fills took liquidity (including whole levels)."""
    sim = dataclasses.replace(config.sim, profile=profile)
    if profile == "realistic":
        sim = dataclasses.replace(sim, update_hz=10.0, gaps_per_min=2.0, premium_vol_bps=1.0)
    plain, mirrored = MarketGenerator(sim, config.markets), MarketGenerator(sim, config.markets, 5)
    for n, (a, b) in enumerate(itertools.islice(zip(plain.events(), mirrored.events()), 6000)):
        assert a[:5] == b[:5] and a.fbids is None
        assert b.fbids == tuple((p / 1e8, s / 1e8) for p, s in b.bids[:5])
        assert b.fasks == tuple((p / 1e8, s / 1e8) for p, s in b.asks[:5])
        if n % 50 == 7:  # our fill: part of one level, all of the next (the top-5 mirror shrinks)
            for gen in (plain, mirrored):
                gen.take(b.venue, b.market, "ask", *b.asks[1])
                gen.take(b.venue, b.market, "bid", b.bids[0][0], b.bids[0][1] // 2)


def test_legacy_delta_applied_to_the_old_book_gives_the_new_book(config):
    events = [e for e in itertools.islice(MarketGenerator(config.sim, ["KRW-XRP"]).events(), 40)
              if e.venue is Venue.BITHUMB]
    book = {"bid": dict(events[0].bids), "ask": dict(events[0].asks)}
    for old, new in zip(events, events[1:]):
        frame = legacy_depth_frame("KRW-XRP", old.bids, old.asks, new.bids, new.asks, 1)
        for item in orjson.loads(frame)["content"]["list"] if frame else []:
            side = book[item["orderType"]]
            price, qty = from_decimal(_d(item["price"])), from_decimal(_d(item["quantity"]))
            side.pop(price, None) if qty == 0 else side.__setitem__(price, qty)
        assert sorted(book["bid"].items(), reverse=True) == list(new.bids)
        assert sorted(book["ask"].items()) == list(new.asks)


def test_replay_of_recorded_frames_yields_the_recorded_books(tmp_path, config):
    events = list(itertools.islice(MarketGenerator(config.sim, ["KRW-BTC"]).events(), 10))
    path = tmp_path / "rec.jsonl.gz"
    with gzip.open(path, "wb") as out:
        out.write(b'{"t": 1, "venue": "upbit", "frame": "not json"}\n')  # a garbage frame: skipped
        for i, e in enumerate(events):
            fmt = "SIMPLE" if i % 2 else "DEFAULT"
            frame = orderbook_frame(e.market, e.bids, e.asks, 1, fmt).decode()
            out.write(orjson.dumps({"t": 5_000 + e.t_ns, "venue": e.venue.value, "frame": frame}) + b"\n")
    source = ReplaySource(str(path), ["KRW-BTC"])
    replayed = list(source.events())
    assert [(r.venue, r.bids, r.asks, r.t_ns) for r in replayed] == [
        (e.venue, e.bids, e.asks, e.t_ns - events[0].t_ns) for e in events]
    assert source.skipped == 1


def test_replay_of_legacy_deltas_rebuilds_the_book(tmp_path):
    path = tmp_path / "legacy.jsonl.gz"
    frames = [
        {"type": "orderbookdepth", "content": {"list": [
            {"symbol": "XRP_KRW", "orderType": "bid", "price": "3200", "quantity": "10", "total": "1"},
            {"symbol": "XRP_KRW", "orderType": "ask", "price": "3201", "quantity": "5", "total": "1"}],
            "datetime": "1"}},
        {"type": "orderbookdepth", "content": {"list": [
            {"symbol": "XRP_KRW", "orderType": "bid", "price": "3200", "quantity": "0", "total": "0"},
            {"symbol": "XRP_KRW", "orderType": "bid", "price": "3199", "quantity": "7.5", "total": "2"}],
            "datetime": "2"}},
    ]
    with gzip.open(path, "wb") as out:
        for t, frame in enumerate(frames):
            out.write(orjson.dumps({"t": t, "venue": "bithumb", "frame": orjson.dumps(frame).decode()}) + b"\n")
    last = list(ReplaySource(str(path), ["KRW-XRP"]).events())[-1]
    assert [(to_str(p), to_str(s)) for p, s in last.bids] == [("3199", "7.5")]
    assert [(to_str(p), to_str(s)) for p, s in last.asks] == [("3201", "5")]


def _d(text):
    from decimal import Decimal
    return Decimal(text)
