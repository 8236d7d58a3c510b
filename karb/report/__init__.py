"""One report from a backtest or a journal: ``build_report`` writes markdown plus PNG plots.

``data`` loads the journal (read-only) and an optional ``backtest.json``; ``metrics`` computes
the figures (exact ``Decimal`` money); ``plots`` draws them with matplotlib's Agg backend;
``markdown`` writes the text. Same input, same output.
"""
from __future__ import annotations

from pathlib import Path

from karb.report import markdown, metrics, plots
from karb.report.data import ReportError, load

__all__ = ["ReportError", "build_report"]


def build_report(journal_path: str | Path, backtest_json_path: str | Path | None = None,
                 out_dir: str | Path = "docs", threshold_bps: float | None = None,
                 name: str = "simulation_report.md") -> Path:
    """Write ``out_dir/name`` and ``out_dir/img/*.png``; return the markdown's path.

    ``backtest_json_path`` defaults to ``backtest.json`` beside the journal (used if present).
    ``threshold_bps`` is drawn on the spread plot when ``backtest.json`` does not give one.
    Raises ``ReportError`` for a missing or unreadable journal or ``backtest.json``.
    """
    journal_path = Path(journal_path)
    if backtest_json_path is None:
        backtest_json_path = journal_path.parent / "backtest.json"
    data = load(journal_path, backtest_json_path, threshold_bps)
    figures = metrics.compute(data)
    out = Path(out_dir)
    img = out / "img"
    img.mkdir(parents=True, exist_ok=True)
    images = {"equity": plots.equity(data, figures, img),
              "pnl_per_day": plots.pnl_per_day(figures, img),
              "net_spread": plots.net_spread(data, img),
              "inventory": plots.inventory(data, img),
              "latency_slippage": plots.latency_slippage(data, img),
              "missed": plots.missed(data, img)}
    path = out / name
    path.write_text(markdown.render(data, figures, images), encoding="utf-8")
    return path
