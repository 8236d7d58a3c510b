"""The backtest: fill model at arrival, competitors, the inline leg path, oracles, determinism,
``backtest.json`` and the command's errors."""
import dataclasses
import gzip
import json
import multiprocessing
import pickle
import re
from decimal import Decimal as D

import orjson
import pytest

from karb.backtest.run import BacktestOptions, oracle_config, run_backtest
from karb.backtest.shared import FedSource, FeederGone
from karb.backtest.venue import ModelVenue, Wire
from karb.book import BookBoard
from karb.cli import main
from karb.clock import NS_PER_MS, ManualClock
from karb.config import parse_config
from karb.exchanges.errors import VenueError
from karb.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce, Venue
from tests.trading_fixtures import MARKET, balances, make_config, make_rules

UP, BT = Venue.UPBIT, Venue.BITHUMB
ASKS_BEFORE = ((140_000_000.0, 0.004), (140_100_000.0, 0.01))
ASKS_AFTER = ((140_200_000.0, 0.004), (140_300_000.0, 0.01))
BIDS = ((139_900_000.0, 0.02),)


class _Stream:
    """Two book versions: the second one lands 3 ms after the first."""

    def __init__(self, board, clock):
        self.board, self.clock, self.applied = board, clock, []

    def advance_to(self, t_ns):
        if t_ns >= 4 * NS_PER_MS and not self.applied:
            self.board.get(UP, MARKET).apply_snapshot(BIDS, ASKS_AFTER, 2, 4 * NS_PER_MS)
            self.applied.append(t_ns)
        self.clock.advance(ns=t_ns - self.clock.monotonic_ns())


def _venue(latency_ms, share=0.0):
    config = make_config()
    clock = ManualClock(monotonic_ns=NS_PER_MS)
    board = BookBoard([MARKET])
    board.get(UP, MARKET).apply_snapshot(BIDS, ASKS_BEFORE, 1, NS_PER_MS)
    stream = _Stream(board, clock)
    wire = Wire({UP: latency_ms, BT: latency_ms}, 1, stream.advance_to, clock, 100)
    venue = ModelVenue(UP, board, make_rules(config), clock, wire, share, 1)
    venue.load(balances(KRW=10_000_000, BTC="0.5"))
    return venue, clock


def _buy(price, volume, cid="c1"):
    return OrderRequest(UP, MARKET, Side.BUY, OrderType.LIMIT, cid, price=D(price),
                        volume=D(volume), tif=TimeInForce.IOC)


def test_an_order_fills_against_the_book_at_its_arrival_not_at_its_signal():
    fast, _ = _venue((1.0, 1.0))
    fast.place_order(_buy("140100000", "0.01"))
    assert fast.get_order(client_id="c1").executed_volume == D("0.01")

    slow, clock = _venue((5.0, 5.0))  # the asks moved up at 4 ms: the limit misses them
    ack = slow.place_order(_buy("140100000", "0.01"))
    assert clock.monotonic_ns() == 6 * NS_PER_MS
    assert slow.get_order(client_id="c1").executed_volume == 0
    assert slow.get_order(client_id="c1").status is OrderStatus.CANCELLED
    assert ack.status is OrderStatus.OPEN


def test_placement_is_an_acknowledgement_and_the_fill_shows_on_get_order():
    venue, _ = _venue((1.0, 1.0))
    ack = venue.place_order(_buy("140000000", "0.004"))
    assert (ack.status, ack.executed_volume, ack.fills) == (OrderStatus.OPEN, 0, ())
    done = venue.get_order(client_id="c1")
    assert (done.status, done.executed_volume) == (OrderStatus.DONE, D("0.004"))
    assert venue.get_order(order_id=ack.order_id) == done  # the placer polls by order id
    with pytest.raises(VenueError):
        venue.get_order(order_id="no such order")


def test_competitors_take_their_share_of_the_top_level_first():
    venue, _ = _venue((1.0, 1.0), share=0.5)
    venue.place_order(_buy("140000000", "0.004"))
    assert venue.get_order(client_id="c1").executed_volume == D("0.002")


def test_generated_books_reach_the_board_as_the_validated_feed_path_would_build_them(tmp_path):
    """``SimSource`` skips the feed's validation for the generator's own books: the views are
    those ``on_snapshot_columns`` (the live decoder's path, with every check) builds."""
    from karb.backtest.run import ORIGIN_NS, WALL_ORIGIN_NS
    from karb.backtest.sources import SimSource

    config = _config(tmp_path)
    fast, checked = BookBoard(config.markets, depth=15), BookBoard(config.markets, depth=15)
    source = SimSource(config.sim, config.markets, fast, ORIGIN_NS, WALL_ORIGIN_NS)
    wall_ms = WALL_ORIGIN_NS // 1_000_000 - ORIGIN_NS // 1_000_000
    for n, (t_ns, event) in enumerate(source.events()):
        if n == 3000:
            break
        source.apply(event, t_ns)
        bids, asks = event.bids[:15], event.asks[:15]
        checked.sink(event.venue).on_snapshot_columns(
            event.market, [p / 1e8 for p, _ in bids], [s / 1e8 for _, s in bids],
            [p / 1e8 for p, _ in asks], [s / 1e8 for _, s in asks], t_ns // 1_000_000 + wall_ms, t_ns)
        a, b = fast.get(event.venue, event.market), checked.get(event.venue, event.market)
        # lag_ns: the book's venue-lag estimate reads the real clock, not the simulated one
        assert a.view._replace(lag_ns=0) == b.view._replace(lag_ns=0) and a.view.valid
        a._check()


def test_the_shared_stream_gives_each_run_what_generating_it_in_the_run_gives(tmp_path):
    """Parallel: one feeder process generates the stream for all three runs; serial: each run
    generates its own. Same numbers."""
    config = _config(tmp_path)
    shared = run_backtest(config, BacktestOptions(days=120 / 86400, parallel=True)).to_json()
    alone = run_backtest(config, BacktestOptions(days=120 / 86400, parallel=False)).to_json()
    for doc in (shared, alone):
        del doc["wall_seconds"], doc["speed"]
    assert shared == alone and shared["events"] > 1000 and shared["oracle"]["trades"] > 0


def test_a_stream_cut_short_is_an_error_not_a_short_run():
    receive, send = multiprocessing.Pipe(duplex=False)
    send.send_bytes(pickle.dumps([(5, 0, 0, ((1.0, 2.0),), ((3.0, 1.0),))]))
    send.close()  # no end mark: the feeder died
    board = BookBoard([MARKET])
    events = FedSource(receive, [MARKET], board, 0, 0).events()
    assert next(events)[0] == 5
    with pytest.raises(FeederGone):
        next(events)


def _config(tmp_path, **strategy):
    return parse_config({
        "markets": ["KRW-BTC", "KRW-XRP"],
        "venues": {v: {"rest_url": "http://127.0.0.1:0", "ws_url": "ws://127.0.0.1:0",
                       "taker_fee": fee, "maker_fee": fee}
                   for v, fee in (("upbit", "0.0005"), ("bithumb", "0.0004"))},
        "strategy": {"threshold_bps": 10, "cooldown_ms": 500, **strategy},
        "risk": {"max_trade_krw": "2000000", "kill_switch_file": str(tmp_path / "KILL")},
        "journal": {"path": str(tmp_path / "unused.sqlite")},
        "sim": {"seed": 3, "update_hz": 5, "gaps_per_min": 2,
                "markets": {"KRW-BTC": {"price": "140000000"}, "KRW-XRP": {"price": "3200"}}},
        "backtest": {"latency": {"upbit": {"min_ms": 20, "max_ms": 40},
                                 "bithumb": {"min_ms": 20, "max_ms": 40}}},
    })


def test_same_seed_same_numbers_and_capture_against_the_oracle(tmp_path):
    config = _config(tmp_path)
    a = run_backtest(config, BacktestOptions(days=300 / 86400, out=str(tmp_path / "a")))
    b = run_backtest(config, BacktestOptions(days=300 / 86400, out=str(tmp_path / "b")))
    assert a.summary == b.summary and a.run.per_market == b.run.per_market
    assert a.to_json()["oracle"] == b.to_json()["oracle"]
    assert a.summary["trades"] > 0 and a.oracle.summary["trades"] > 0
    realised, oracle = D(a.summary["pnl_krw"]), D(a.oracle.summary["pnl_krw"])
    assert oracle > realised  # latency and competitors only cost
    assert a.summary["capture"] == str((realised / oracle).quantize(D("0.0001")))
    # unconstrained: the oracle with balances so large they never bind (path-dependent, so
    # not necessarily more PnL: it takes liquidity a later signal of the oracle used)
    assert D(a.unconstrained.start_balances["upbit"]["KRW"]) == D(50_000_000) * 1_000_000
    assert a.unconstrained.summary["trades"] > 0
    assert a.run.latency_ms and all(20 <= x <= 40 for x in a.run.latency_ms)
    # the oracle decides as the backtest does: only execution differs
    oc = oracle_config(config)
    assert (oc.strategy, oc.risk, oc.inventory) == (config.strategy, config.risk, config.inventory)
    assert oc.backtest.competitor_share == 0 and oc.backtest.latency.upbit.max_ms == 0
    assert D(a.summary["capture"]) <= 1


def test_backtest_json_holds_the_report_contract(tmp_path):
    out = tmp_path / "out"
    config_path = tmp_path / "c.yaml"
    import yaml
    data = yaml.safe_load(json.dumps(dataclasses.asdict(_config(tmp_path)), default=str))
    config_path.write_text(yaml.safe_dump(data))
    code = main(["backtest", "--config", str(config_path), "--days", str(120 / 86400),
                 "--out", str(out), "--set", "strategy.threshold_bps=12"])
    assert code == 0
    doc = json.loads((out / "backtest.json").read_text())
    for key in ("seed", "profile", "days", "markets", "sim_seconds", "wall_seconds",
                "start_wall_ns", "end_wall_ns", "threshold_bps", "start_balances", "end_balances",
                "oracle", "unconstrained", "missed", "net_spread_hist", "inventory", "latency_ms",
                "summary"):
        assert key in doc, key
    assert doc["threshold_bps"] == 12
    assert doc["start_balances"]["upbit"]["BTC"] == "1" and doc["start_balances"]["upbit"]["KRW"] == "50000000"
    assert set(doc["summary"]) >= {"pnl_krw", "trades", "leg_success_rate", "fees_krw",
                                   "max_drawdown_krw", "capture"}
    assert doc["inventory"][0][1:3] == ["bithumb", "BTC"]
    assert (out / "journal.sqlite").exists()


def test_bad_config_key_and_bad_recording_exit_2_with_one_line(tmp_path, capsys):
    config_path = tmp_path / "c.yaml"
    import yaml
    data = yaml.safe_load(json.dumps(dataclasses.asdict(_config(tmp_path)), default=str))
    config_path.write_text(yaml.safe_dump(data))
    assert main(["backtest", "--config", str(config_path), "--set", "backtest.latency.upbit.max_ms=1"]) == 2
    assert "backtest.latency.upbit" in capsys.readouterr().err
    bad = tmp_path / "rec.jsonl.gz"
    with gzip.open(bad, "wb") as f:
        f.write(orjson.dumps({"t": 1, "venue": "upbit", "frame": "{}"}) + b"\n{not json\n")
    assert main(["backtest", "--config", str(config_path), "--data", str(bad), "--no-oracle"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line 2" in err and "Traceback" not in err


def test_a_sweep_from_the_command_line_runs_each_point_for_the_days_asked(tmp_path, capsys):
    import yaml
    config_path = tmp_path / "c.yaml"
    data = yaml.safe_load(json.dumps(dataclasses.asdict(_config(tmp_path)), default=str))
    data["backtest"]["days"] = 7  # the flags below must win, or each point would run a week
    config_path.write_text(yaml.safe_dump(data))
    assert main(["backtest", "--config", str(config_path), "--days", str(30 / 86400), "--no-oracle",
                 "--set", "strategy.threshold_bps=10,20"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"2 points on \d+ workers", out) and "speed-up" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert sorted(row[1] for row in rows[:2]) == ["10", "20"]
    assert all(row[3] == "n/a" for row in rows[:2])  # no oracle, so no capture
