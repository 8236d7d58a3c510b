"""Sweeps: --set parsing and checking through the config schema, grid expansion, the process
pool running every point in worker processes, and the ranking by PnL."""
from __future__ import annotations

import os
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from karb.backtest.sweep import (ProcessPoolRunner, SerialRunner, apply_overrides, config_for,
                                 grid, parse_sets, run_sweep, sweep, table)
from karb.schema import ConfigError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from sweep_speedup import burn  # noqa: E402  (a picklable CPU-bound job)


@pytest.fixture()
def base(tmp_path):
    data = yaml.safe_load((ROOT / "config" / "sim.yaml").read_text(encoding="utf-8"))
    data["journal"] = {"path": str(tmp_path / "j.sqlite")}
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def test_parse_sets_types_values_as_yaml():
    axes = parse_sets(["strategy.threshold_bps=5,12.5", "execution.leg_type=market,ioc_limit"])
    assert axes == {"strategy.threshold_bps": [5, 12.5], "execution.leg_type": ["market", "ioc_limit"]}


@pytest.mark.parametrize("sets, message", [
    (["strategy.threshold_bps"], "--set strategy.threshold_bps: expected key=value"),
    (["strategy.threshold_bps="], "expected key=value"),
    (["strategy.threshold_bps=5,,6"], "strategy.threshold_bps: empty value"),
    (["risk.max_trade_krw=1", "risk.max_trade_krw=2"], "risk.max_trade_krw: given twice"),
])
def test_bad_set_syntax_names_the_key(sets, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_sets(sets)


@pytest.mark.parametrize("item, message", [
    ("strategy.threshold_bps=5,-1", "strategy.threshold_bps: must not be negative"),
    ("strategy.thresold_bps=5", "strategy.thresold_bps: unknown key"),
    ("risk.max_trade_krw=lots", "risk.max_trade_krw: expected a number"),
    ("execution.leg_type=fok", "execution.leg_type: must be one of"),
    ("markets.btc=1", "markets: is not a section"),
])
def test_every_point_is_checked_by_the_schema_before_anything_runs(base, item, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        grid(base, parse_sets([item]))


def test_grid_is_the_cartesian_product_in_command_line_order(base):
    points = grid(base, parse_sets(["strategy.threshold_bps=5,10,20", "risk.max_trade_krw=1000000,2e6"]))
    assert points == [{"strategy.threshold_bps": t, "risk.max_trade_krw": m}
                      for t in (5, 10, 20) for m in (1000000, "2e6")]
    assert config_for(base, points[-1]).risk.max_trade_krw == Decimal("2000000")
    assert config_for(base, points[-1]).strategy.threshold_bps == 20


def test_overrides_do_not_touch_the_base_data():
    data = {"strategy": {"threshold_bps": 10}}
    out = apply_overrides(data, {"strategy.threshold_bps": 20, "risk.max_trade_krw": 5})
    assert data == {"strategy": {"threshold_bps": 10}}
    assert out == {"strategy": {"threshold_bps": 20}, "risk": {"max_trade_krw": 5}}


def _expected_pnl(point):
    return Decimal(str(point["risk.max_trade_krw"])) / 1000 - (Decimal(str(point["strategy.threshold_bps"])) - 10) ** 2


def test_process_pool_runs_every_point_in_worker_processes_and_ranks_by_pnl(base):
    points = grid(base, parse_sets(["strategy.threshold_bps=4,10,30", "risk.max_trade_krw=100000,300000"]))
    results = run_sweep(burn, base, points, ProcessPoolRunner(workers=2))
    assert sorted(map(str, (r.overrides for r in results))) == sorted(map(str, points))
    assert [r.pnl for r in results] == sorted((_expected_pnl(p) for p in points), reverse=True)
    assert results[0].overrides == {"strategy.threshold_bps": 10, "risk.max_trade_krw": 300000}
    pids = {r.summary["pid"] for r in results}
    assert os.getpid() not in pids  # ran in workers, not here
    if (os.cpu_count() or 1) >= 2:
        assert len(pids) == 2  # both workers took points
    serial = run_sweep(burn, base, points, SerialRunner())
    assert [(r.overrides, r.pnl) for r in serial] == [(r.overrides, r.pnl) for r in results]


def test_table_lists_points_best_first_with_capture_success_and_drawdown(base):
    text = sweep(burn, base, ["strategy.threshold_bps=30,10"], SerialRunner())
    lines = text.splitlines()
    assert lines[0].split() == ["#", "strategy.threshold_bps", "PnL", "KRW", "capture", "success",
                                "drawdown", "KRW", "trades"]
    assert lines[1].split() == ["1", "10", "2,000", "50.0%", "100.0%", "0", "10"]
    assert lines[2].split() == ["2", "30", "1,600", "50.0%", "100.0%", "0", "30"]


def test_table_says_n_a_for_figures_a_job_does_not_give():
    from karb.backtest.sweep import PointResult
    text = table([PointResult({"strategy.threshold_bps": 5}, {"pnl_krw": "-12.5"})])
    assert text.splitlines()[1].split() == ["1", "5", "-12", "n/a", "n/a", "n/a", "n/a"]


def test_set_option_collects_every_axis_for_the_grid(base):
    import argparse

    from karb.backtest.sweep import add_set_argument
    parser = argparse.ArgumentParser()
    add_set_argument(parser)
    args = parser.parse_args(["--set", "strategy.threshold_bps=5,10,20", "--set", "risk.max_trade_krw=1e6,2e6"])
    assert len(grid(base, parse_sets(args.set))) == 6
    assert parser.parse_args([]).set == []
