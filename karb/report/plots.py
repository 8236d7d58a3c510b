"""The report's PNG plots (matplotlib, Agg backend, fixed style: same input, same bytes).

Each function draws one figure into ``img_dir`` and returns its file name, or ``None`` when
there is nothing to draw (the markdown then says the section is not available).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from karb.report.data import ReportData  # noqa: E402
from karb.report.metrics import Metrics, leg_latencies_ms, slippage_bps  # noqa: E402

STYLE = {"figure.dpi": 100, "savefig.dpi": 100, "font.size": 9, "axes.grid": True,
         "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
         "svg.hashsalt": "karb", "path.simplify": True}
HOUR_NS = 3600 * 10**9


def _save(fig, img_dir: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(img_dir / name, format="png", metadata={"Software": None})
    plt.close(fig)
    return name


def _time_axis(start: int, end: int) -> tuple[float, str]:
    """(ns per unit, axis label): hours for up to two days, days beyond."""
    return (24 * HOUR_NS, "days from start") if end - start > 48 * HOUR_NS else (HOUR_NS, "hours from start")


def equity(data: ReportData, m: Metrics, img_dir: Path) -> str | None:
    if not m.equity:
        return None
    start = data.first_ns if data.first_ns is not None else m.equity[0][0]
    end = max(m.equity[-1][0], data.last_ns or 0)
    unit, label = _time_axis(start, end)
    xs = [0.0] + [(t - start) / unit for t, _ in m.equity] + [(end - start) / unit]
    ys = [0.0] + [float(e) for _, e in m.equity] + [float(m.equity[-1][1])]  # flat to the end
    peak, dd = 0.0, []
    for y in ys:
        peak = max(peak, y)
        dd.append(y - peak)
    with plt.rc_context(STYLE):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1]})
        top.step(xs, ys, where="post", color="#1f77b4", lw=1.2)
        top.set_ylabel("cumulative realised PnL (KRW)")
        top.set_title("Equity curve (realised arbitrage PnL) and drawdown")
        bottom.fill_between(xs, dd, 0, step="post", color="#d62728", alpha=0.5)
        bottom.set_ylabel("drawdown (KRW)")
        bottom.set_xlabel(label)
        return _save(fig, img_dir, "equity.png")


def pnl_per_day(m: Metrics, img_dir: Path) -> str | None:
    if not m.pnl_per_day:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 3.5))
        days = [d for d, _, _ in m.pnl_per_day]
        values = [float(v) for _, v, _ in m.pnl_per_day]
        ax.bar(days, values, color=["#2ca02c" if v >= 0 else "#d62728" for v in values])
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(days)
        ax.set_xlabel("day")
        ax.set_ylabel("realised PnL (KRW)")
        ax.set_title("PnL per day")
        return _save(fig, img_dir, "pnl_per_day.png")


def net_spread(data: ReportData, img_dir: Path) -> tuple[str, str] | None:
    """Returns (file, what it shows): the backtest's histogram of every net spread seen, or the
    journal's signals (only those taken, so only above the threshold)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 3.5))
        if data.spread_hist:
            width, counts = data.spread_hist
            edges = sorted(counts)
            ax.bar(edges, [counts[e] for e in edges], width=width, align="edge", color="#1f77b4")
            ax.set_yscale("log")
            what = "the net spread distribution the backtest recorded (`net_spread_hist`)"
        else:
            values = sorted(t.net_bps for t in data.trades if t.net_bps is not None)
            if not values:
                plt.close(fig)
                return None
            ax.hist(values, bins=30, color="#1f77b4")
            what = "net spread of the signals traded (journal: only signals taken are recorded)"
        if data.threshold_bps is not None:
            ax.axvline(data.threshold_bps, color="#d62728", ls="--",
                       label=f"threshold {data.threshold_bps:g} bps")
            ax.legend(loc="upper right")
        ax.set_xlabel("net spread at size, after fees (bps)")
        ax.set_ylabel("count")
        ax.set_title("Net spread distribution")
        return _save(fig, img_dir, "net_spread.png"), what


def inventory(data: ReportData, img_dir: Path) -> str | None:
    if not data.inventory:
        return None
    start = data.first_ns if data.first_ns is not None else data.inventory[0][0]
    unit, label = _time_axis(start, max(data.last_ns or 0, data.inventory[-1][0]))
    series: dict[str, dict[str, tuple[list, list]]] = {}
    for ns, venue, asset, amount in data.inventory:
        xs, ys = series.setdefault(asset, {}).setdefault(venue, ([], []))
        xs.append((ns - start) / unit)
        ys.append(float(amount))
    assets = sorted(series, key=lambda a: (a != "KRW", a))
    cols = 3
    rows = -(-len(assets) // cols)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(10, 2.2 * rows), squeeze=False)
        for ax, asset in zip(axes.flat, assets):
            for venue in sorted(series[asset]):
                xs, ys = series[asset][venue]
                ax.step(xs, ys, where="post", label=venue, lw=1)
            ax.set_title(asset)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 6))
            ax.legend(fontsize=7, loc="best")
        for ax in list(axes.flat)[len(assets):]:
            ax.set_visible(False)
        fig.supxlabel(label)
        fig.suptitle("Inventory per asset and venue (free + locked)")
        return _save(fig, img_dir, "inventory.png")


def latency_slippage(data: ReportData, img_dir: Path) -> str | None:
    stages = leg_latencies_ms(data)
    if data.latency_ms:
        stages = {"leg latency (backtest model)": data.latency_ms, **stages}
    stages = {k: v for k, v in stages.items() if v}
    slips = [s for _, s in slippage_bps(data)]
    if not stages and not slips:
        return None
    with plt.rc_context(STYLE):
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
        top = max((max(v) for v in stages.values()), default=1.0)
        bins = [top * i / 40 for i in range(41)]  # one set of bins: the stages compare
        for name, values in stages.items():
            left.hist(values, bins=bins, alpha=0.6, label=name)
        left.set_xlabel("ms")
        left.set_ylabel("count")
        left.set_title("Leg latency")
        if stages:
            left.legend(fontsize=7)
        if slips:
            right.hist(slips, bins=30, color="#9467bd")
        right.axvline(0, color="black", lw=0.8)
        right.set_xlabel("bps vs the signal's expected VWAP (+ = worse)")
        right.set_title("Slippage per filled leg")
        return _save(fig, img_dir, "latency_slippage.png")


def missed(data: ReportData, img_dir: Path) -> str | None:
    if not data.missed:
        return None
    items = sorted(data.missed.items(), key=lambda kv: (-kv[1], kv[0]))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(items) + 1.2))
        ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color="#ff7f0e")
        ax.set_xlabel("opportunities")
        ax.set_title("Why opportunities were missed")
        return _save(fig, img_dir, "missed.png")
