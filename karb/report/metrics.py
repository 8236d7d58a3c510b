"""Figures of one report, computed from ``ReportData``; money stays ``Decimal``.

Definitions (the report repeats them):

* a *trade* is a signal whose result was booked (status filled, shortfall, flat or residual);
  it *succeeded* when both legs filled in full (status ``filled``); a *shortfall* filled less
  than signalled but every order ended normally and it was unwound flat at no loss (not a
  failure for the circuit breaker);
* *leg success rate* = primary legs (the buy and the sell of a trade, not unwind orders) filled
  in full / all primary legs: the seed's "order success". A leg not final (unresolved: it may
  or may not have filled) is not a success;
* a trade *not booked* is a signal with legs but no result (stranded on an unresolved leg, or in
  flight when the journal was read): it is in no trade, PnL or residual figure; the coin its
  known fills left (bought minus sold) is counted apart as possible residual exposure;
* *PnL* is realised arbitrage PnL in KRW as the engine booked it (``signals.realised_krw``, net
  of fees and of any unwind cost); residual positions are not marked to market here, they are
  counted separately (trades with status ``residual``);
* the *equity curve* is cumulative PnL in trade order, starting at 0; *maximum drawdown* is
  the largest fall from a running peak of that curve (the peak starts at 0);
* *day n* is the n-th 24-hour window from the start of the run (``start_wall_ns`` of a backtest,
  else the first journalled event).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from karb.report.data import ReportData

DAY_NS = 86_400 * 10**9
ZERO = Decimal(0)


@dataclass(frozen=True)
class MarketRow:
    market: str
    trades: int
    succeeded: int
    pnl_krw: Decimal
    fees_krw: Decimal
    oracle_krw: Decimal | None

    @property
    def capture(self) -> Decimal | None:
        return capture(self.pnl_krw, self.oracle_krw)


@dataclass(frozen=True)
class Metrics:
    trades: int
    succeeded: int
    shortfall_trades: int
    residual_trades: int
    residual_coin: dict[str, Decimal]  # market -> net coin left unhedged by trades (+ = long)
    legs_final: int
    legs_complete: int
    legs_open: int
    pnl_krw: Decimal
    fees_krw: Decimal
    max_drawdown_krw: Decimal
    equity: list[tuple[int, Decimal]]  # (wall_ns, cumulative PnL after that trade)
    pnl_per_day: list[tuple[int, Decimal, int]]  # (day number from 1, PnL, trades)
    markets: list[MarketRow]
    capture: Decimal | None
    unbooked: int = 0  # trades with legs but no booked result
    unbooked_coin: dict[str, Decimal] = field(default_factory=dict)  # market -> coin (+ = long)
    # market -> day -> (trades selling on Upbit, trades selling on Bithumb): both ways alive?
    directions: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)

    @property
    def leg_success_rate(self) -> Decimal | None:
        return ratio(Decimal(self.legs_complete), Decimal(self.legs_final + self.legs_open))


def ratio(num: Decimal, den: Decimal | None) -> Decimal | None:
    return None if den is None or den == 0 else num / den


def capture(realised: Decimal, oracle: Decimal | None) -> Decimal | None:
    """realised / oracle; None when the oracle made nothing (no edge to capture)."""
    return None if oracle is None or oracle <= 0 else realised / oracle


def max_drawdown(curve: list[Decimal]) -> Decimal:
    """Largest fall from a running peak of ``curve`` (peak starts at 0)."""
    peak, worst = ZERO, ZERO
    for value in curve:
        peak = max(peak, value)
        worst = max(worst, peak - value)
    return worst


def compute(data: ReportData) -> Metrics:
    trades = data.trades
    equity, total = [], ZERO
    for t in trades:
        total += t.realised_krw
        equity.append((t.wall_ns, total))
    primary = [o for o in data.orders if o.primary]
    final = [o for o in primary if o.final]
    start = data.first_ns if data.first_ns is not None else (trades[0].wall_ns if trades else 0)
    days: dict[int, list] = {}
    for t in trades:
        day = days.setdefault(max(0, (t.wall_ns - start) // DAY_NS) + 1, [ZERO, 0])
        day[0] += t.realised_krw
        day[1] += 1
    if data.first_ns is not None and data.last_ns is not None:  # days without trades show as 0
        for n in range(1, (data.last_ns - 1 - start) // DAY_NS + 2):
            days.setdefault(n, [ZERO, 0])
    directions: dict[str, dict[int, list[int]]] = {}
    for t in trades:
        day = max(0, (t.wall_ns - start) // DAY_NS) + 1
        counts = directions.setdefault(t.market, {}).setdefault(day, [0, 0])
        counts[0 if t.direction.endswith("sell upbit") else 1] += 1
    oracle = data.oracle
    rows = []
    for market in sorted({t.market for t in trades} | set(oracle.per_market if oracle else ())):
        mine = [t for t in trades if t.market == market]
        rows.append(MarketRow(
            market, len(mine), sum(t.succeeded for t in mine),
            sum((t.realised_krw for t in mine), ZERO), sum((t.fees_krw for t in mine), ZERO),
            oracle.per_market.get(market, (ZERO, 0))[0] if oracle else None))
    return Metrics(
        trades=len(trades), succeeded=sum(t.succeeded for t in trades),
        shortfall_trades=sum(t.status == "shortfall" for t in trades),
        residual_trades=sum(t.status == "residual" for t in trades),
        residual_coin=_residuals(trades),
        legs_final=len(final), legs_complete=sum(o.complete for o in final),
        legs_open=len(primary) - len(final),
        pnl_krw=total, fees_krw=sum((t.fees_krw for t in trades), ZERO),
        max_drawdown_krw=max_drawdown([e for _, e in equity]), equity=equity,
        pnl_per_day=[(n, v[0], v[1]) for n, v in sorted(days.items())],
        markets=rows, capture=capture(total, oracle.pnl_krw) if oracle else None,
        unbooked=len(data.unbooked), unbooked_coin=_unbooked_coin(data),
        directions={m: {d: (c[0], c[1]) for d, c in sorted(per_day.items())}
                    for m, per_day in sorted(directions.items())})


def _unbooked_coin(data: ReportData) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for u in data.unbooked:
        out[u.market] = out.get(u.market, ZERO) + u.net_coin
    return {m: v for m, v in sorted(out.items()) if v}


def _residuals(trades) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for t in trades:
        if t.residual:
            out[t.market] = out.get(t.market, ZERO) + t.residual
    return {m: v for m, v in sorted(out.items()) if v}


def leg_latencies_ms(data: ReportData) -> dict[str, list[float]]:
    """Per stage, in ms, from the signals' monotonic stage stamps (None stages skipped)."""
    spans = {"signal to wire": ("signal", "sent"), "wire to ack": ("sent", "acked"),
             "wire to done": ("sent", "done")}
    out: dict[str, list[float]] = {}
    for name, (a, b) in spans.items():
        out[name] = [(t.stages_ns[b] - t.stages_ns[a]) / 1e6 for t in data.trades
                     if t.stages_ns.get(a) is not None and t.stages_ns.get(b) is not None]
    return out


def slippage_bps(data: ReportData) -> list[tuple[str, float]]:
    """(market, bps) per filled primary leg: its average price against the VWAP the signal
    expected for that side; positive = worse than expected (paid more, or sold for less)."""
    out = []
    for o in data.orders:
        avg = o.avg_price
        expected = data.signal_prices.get(o.signal_id, (None, None))[0 if o.side == "buy" else 1]
        if not o.primary or avg is None or not expected:
            continue
        diff = (float(avg) - expected) / expected * 1e4
        # rounded: the expected VWAP is a journalled float, so exact fills differ by ~1e-12 bps
        out.append((o.market, round(diff if o.side == "buy" else -diff, 4) + 0.0))
    return out
