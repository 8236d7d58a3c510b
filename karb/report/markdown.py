"""The report as markdown: deterministic text from ``ReportData``, ``Metrics`` and the plots.

Nothing here reads the clock: two runs on the same input write the same file.
"""
from __future__ import annotations

import statistics
from datetime import datetime, timezone
from decimal import Decimal

from karb.report.data import ReportData
from karb.report.metrics import Metrics, leg_latencies_ms, slippage_bps

NA_JOURNAL = "not available from a journal"
SUCCESS_TARGET = Decimal("0.95")


def krw(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value:,.2f} KRW"


def pct(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _exact(amount) -> str:
    """An amount exactly, without an exponent or trailing zeros ("0E-8" -> "0")."""
    try:
        value = Decimal(str(amount))
    except ArithmeticError:
        return str(amount)
    return format(value.normalize(), "f") if value else "0"


def _seconds(value) -> str:
    return f"{value:,.1f}" if isinstance(value, (int, float)) else "n/a"


def _utc(ns: int | None) -> str:
    if ns is None:
        return "n/a"
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _start_ns(data) -> int:
    """The run's start (wall ns): the backtest's, else the first trade's or sample's."""
    return data.first_ns if data.first_ns is not None else 0


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _image(name: str | None, alt: str, img_prefix: str) -> list[str]:
    return [f"![{alt}]({img_prefix}{name})", ""] if name else []


def targets(m: Metrics) -> list[tuple[str, bool, str]]:
    """The seed's Phase 3 targets: (target, met, how / why not)."""
    rate = m.leg_success_rate
    if rate is None:
        success = (False, "no legs")
    else:
        how = f"{m.legs_complete} of {m.legs_final + m.legs_open} legs filled in full ({pct(rate)})"
        if m.legs_open:  # an order whose fate is unknown is never evidence of success
            success = (False, f"{_orders(m.legs_open)} unresolved (may or may not have filled; "
                       f"counted as not filled); {how}")
        else:
            success = (rate > SUCCESS_TARGET, how if rate > SUCCESS_TARGET else
                       f"{how}; {m.legs_final - m.legs_complete} cancelled, rejected or partly "
                       "filled (see the incidents below)")
    unknown = (f"; {m.unbooked} trade{'s' if m.unbooked != 1 else ''} not booked, result unknown "
               "(see \"Trades not booked\")") if m.unbooked else ""
    if m.trades == 0:
        pnl = (False, "no trades" + unknown)
    else:
        pnl = (m.pnl_krw > 0, f"realised PnL {krw(m.pnl_krw)} over {m.trades} trades"
               + ("" if m.pnl_krw > 0 else "; fees and unwind losses exceeded the captured spread")
               + unknown)
    return [("Order (leg) success rate > 95%", *success), ("PnL > 0", *pnl),
            ("Maximum drawdown reported", True, krw(m.max_drawdown_krw))]


def _orders(n: int) -> str:
    return f"{n} order{'s' if n != 1 else ''}"


def _unbooked_section(data: ReportData) -> list[str]:
    lines = ["## Trades not booked", ""]
    if not data.unbooked:
        return lines + ["None: every trade with legs has a booked result.", ""]
    lines += ["Signals with legs but no booked result: stranded on an unresolved order (the "
              "engine halts on one) or in flight when the journal was read. They are in no trade, "
              "PnL or residual figure above. The coin their known fills left is possible residual "
              "exposure; an order not final may still have filled. Check them on the venues.", ""]
    rows = []
    for u in data.unbooked:
        legs = ", ".join(f"{o.role} {o.venue} {o.state} {o.executed_volume:f}/"
                         f"{'?' if o.volume is None else f'{o.volume:f}'}" for o in u.orders)
        unresolved = ", ".join(f"{o.side} {'?' if o.volume is None else f'{o.volume:f}'} on "
                               f"{o.venue} ({o.role})" for o in u.open_legs) or "none"
        rows.append([u.id, u.market, u.direction, _utc(u.wall_ns), u.status, legs,
                     f"{u.net_coin:+f}", unresolved])
    return lines + _table(["signal", "market", "direction", "time", "status",
                           "orders (role venue state filled/volume)",
                           "coin from known fills (+ = long)", "unresolved orders"], rows)


def render(data: ReportData, m: Metrics, images: dict[str, object], img_prefix: str = "img/") -> str:
    bt = data.backtest
    lines = ["# K-Arb simulation report", ""]
    source = f"Journal `{data.journal_path.name}`" + (
        " with `backtest.json`." if bt else " (no `backtest.json`: backtest-only sections say "
        f"\"{NA_JOURNAL}\").")
    lines += [source, "", "## Run", ""]
    if bt:
        speed = (f"{bt['sim_seconds'] / bt['wall_seconds']:,.0f} simulated s per wall s"
                 if bt.get("sim_seconds") and bt.get("wall_seconds") else "n/a")
        markets = bt.get("markets")
        lines += _table(["parameter", "value"], [
            ["seed", str(bt.get("seed", "n/a"))], ["profile", str(bt.get("profile", "n/a"))],
            ["simulated days", str(bt.get("days", "n/a"))],
            ["markets", ", ".join(markets) if markets else "n/a"],
            ["threshold", f"{data.threshold_bps:g} bps" if data.threshold_bps is not None else "n/a"],
            ["simulated seconds", _seconds(bt.get("sim_seconds"))],
            ["wall seconds", _seconds(bt.get("wall_seconds"))], ["speed", speed]])
        for key, title in (("start_balances", "Start balances"), ("end_balances", "End balances")):
            if bt.get(key):
                rows = [[venue, asset, _exact(amount)] for venue, assets in sorted(bt[key].items())
                        for asset, amount in sorted(assets.items())]
                lines += [f"{title}:", ""] + _table(["venue", "asset", "amount"], rows)
    else:
        lines += [f"Seed, profile and speed: {NA_JOURNAL}.", ""]
    lines += [f"Period: {_utc(data.first_ns)} to {_utc(data.last_ns)} (clock of the journal).", ""]

    lines += ["## Phase 3 targets", ""]
    lines += _table(["target", "result", "detail"],
                    [[t, "met" if ok else "**not met**", why] for t, ok, why in targets(m)])
    lines += ["## Halts", ""]
    if data.halts:
        start = _start_ns(data)
        lines += [f"Trading stopped by a halt until an operator's `karb resume` (the circuit "
                  f"breaker opened {data.breaker_trips} times besides):", ""]
        lines += _table(["when (from the start)", "event", "reason"], [
            [f"{(t - start) / 3.6e12:,.2f} h", kind, reason] for t, kind, reason in data.halts])
    else:
        lines += [f"None (the circuit breaker opened {data.breaker_trips} times).", ""]

    lines += ["## Summary", ""]
    rows = [["trades (booked)", str(m.trades)], ["trades succeeded (both legs full)", str(m.succeeded)],
            ["trades short-filled, unwound flat at no loss (not failures)", str(m.shortfall_trades)],
            ["trades left with a residual position", str(m.residual_trades)],
            ["residual coin (not marked to market; + = long)",
             ", ".join(f"{k} {v}" for k, v in m.residual_coin.items()) or "none"],
            ["leg success rate", pct(m.leg_success_rate)],
            ["legs not final (unresolved)", str(m.legs_open)],
            ["trades not booked (legs, no result; PnL unknown)", str(m.unbooked)],
            ["possible residual coin of trades not booked (+ = long)",
             ", ".join(f"{k} {v}" for k, v in m.unbooked_coin.items()) or "none"],
            ["realised PnL", krw(m.pnl_krw)], ["fees", krw(m.fees_krw)],
            ["maximum drawdown", krw(m.max_drawdown_krw)]]
    if data.oracle:
        rows += [["oracle PnL (same strategy, threshold and limits; zero latency, no competition)",
                  krw(data.oracle.pnl_krw)],
                 ["capture (realised / oracle: what execution kept)",
                  pct(m.capture) if m.capture is not None else "n/a (the oracle made nothing)"]]
    else:
        rows += [["oracle PnL and capture", NA_JOURNAL]]
    if data.unconstrained:
        rows += [["unconstrained opportunity (the oracle with no inventory limits)",
                  krw(data.unconstrained.pnl_krw)]]
        if data.oracle:
            rows += [["cost of inventory (unconstrained - oracle)",
                      krw(data.unconstrained.pnl_krw - data.oracle.pnl_krw)]]
    else:
        rows += [["unconstrained opportunity", NA_JOURNAL]]
    summary = bt.get("summary") or {}
    if "rebalance_cost_krw" in summary:  # karb.backtest.wallet: transfers' network fees in KRW
        cost = Decimal(str(summary["rebalance_cost_krw"]))
        rows += [[f"rebalancing transfers sent (rebalance.mode {summary.get('rebalance_mode', '?')})",
                  str(summary.get("transfers", 0))],
                 ["rebalancing cost (network fees at the sending venue's bid)", krw(cost)],
                 ["PnL after rebalancing", krw(m.pnl_krw - cost)]]
    lines += _table(["figure", "value"], rows)
    if "pnl_krw" in summary and Decimal(str(summary["pnl_krw"])) != m.pnl_krw:
        lines += [f"Note: `backtest.json` says PnL {krw(Decimal(str(summary['pnl_krw'])))}, the "
                  f"journal {krw(m.pnl_krw)}; this report uses the journal.", ""]

    lines += ["Definitions: PnL is realised arbitrage PnL in KRW as booked by the engine (exact "
              "decimals, net of fees and unwind costs). Residual positions are not marked to "
              "market; they are counted above. The equity curve is cumulative PnL in trade order "
              "from 0; maximum drawdown is its largest fall from a running peak. Leg success "
              "counts the two primary legs of each trade (not unwind orders); a leg not final "
              "(unresolved) counts as not filled. Day n is the n-th 24 h from the start of the "
              "run.", ""]
    lines += _unbooked_section(data)

    lines += ["## Equity and PnL per day", ""]
    lines += _image(images.get("equity"), "equity curve", img_prefix)
    lines += _table(["day", "trades", "PnL"], [[str(d), str(n), krw(v)] for d, v, n in m.pnl_per_day])
    lines += _image(images.get("pnl_per_day"), "PnL per day", img_prefix)

    lines += ["## Trades per day and direction", ""]
    days = [d for d, _, _ in m.pnl_per_day]
    lines += ["Each cell: trades selling on Upbit / selling on Bithumb. A market that trades one "
              "way only has drained a side (coin on one venue, KRW on the other).", ""]
    lines += _table(["market"] + [f"day {d}" for d in days], [
        [market] + ["%d / %d" % per_day.get(d, (0, 0)) for d in days]
        for market, per_day in m.directions.items()]) if m.directions else ["No trades.", ""]

    lines += ["## Per market", ""]
    lines += _table(["market", "trades", "success", "PnL", "fees", "oracle PnL", "capture"], [
        [r.market, str(r.trades), f"{r.succeeded}/{r.trades}", krw(r.pnl_krw), krw(r.fees_krw),
         krw(r.oracle_krw) if r.oracle_krw is not None else NA_JOURNAL,
         NA_JOURNAL if r.oracle_krw is None else pct(r.capture)] for r in m.markets])

    lines += ["## Net spread against the threshold", ""]
    spread = images.get("net_spread")
    if spread:
        lines += [f"Shows {spread[1]}.", ""] + _image(spread[0], "net spread", img_prefix)
    else:
        lines += ["No spread data.", ""]

    lines += ["## Inventory", ""]
    if images.get("inventory"):
        lines += [f"From {data.inventory_source}.", ""] + _image(images["inventory"], "inventory",
                                                                  img_prefix)
    else:
        lines += ["No balances were journalled.", ""]

    lines += ["## Leg latency and slippage", ""]
    rows = []
    stages = leg_latencies_ms(data)
    if data.latency_ms:
        stages = {"leg latency (backtest model)": data.latency_ms, **stages}
    for name, values in stages.items():
        if values:
            rows.append([name, str(len(values)), f"{statistics.median(values):.2f}",
                         f"{_p95(values):.2f}"])
    slips = [s for _, s in slippage_bps(data)]
    if slips:
        rows.append(["slippage, bps vs expected VWAP (+ = worse)", str(len(slips)),
                     f"{statistics.median(slips) + 0.0:.2f}", f"{_p95(slips):.2f}"])
    lines += _table(["measure", "n", "median", "p95"], rows) if rows else ["No latency data.", ""]
    lines += _image(images.get("latency_slippage"), "latency and slippage", img_prefix)

    lines += ["## Missed opportunities", ""]
    if data.missed is not None:
        lines += _table(["reason", "count"], [[k, str(v)] for k, v in
                                               sorted(data.missed.items(), key=lambda kv: (-kv[1], kv[0]))])
        lines += _image(images.get("missed"), "missed opportunities", img_prefix)
    else:
        lines += [f"Reasons for missed opportunities: {NA_JOURNAL} (refusals are counted in the "
                  "engine's status, not journalled).", ""]
    lines += ["Journalled incidents by kind:", ""]
    lines += (_table(["incident", "count"], [[k, str(v)] for k, v in data.incidents.items()])
              if data.incidents else ["none", ""])
    return "\n".join(lines).rstrip() + "\n"


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] + 0.0  # no "-0.00"
