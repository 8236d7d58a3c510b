"""A point-in-time picture of the running engine, and its two renderings.

``EngineSnapshot`` is assembled once a second by the engine from its parts' ``stats()``; the
status panel (tmux), the plain status line (journalctl), the metrics endpoint and the alert
rules all read the same snapshot, so they never disagree and never touch live state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from karb.exchanges.ratelimit import BanStats, WindowStats


@dataclass(frozen=True)
class FeedStatus:
    state: str = "idle"
    messages: int = 0
    msgs_per_s: float = 0.0
    reconnects: int = 0
    decode_errors: int = 0
    last_message_age_s: float | None = None
    down_for_s: float = 0.0  # since the feed last delivered a frame (or started)


@dataclass(frozen=True)
class MarketStatus:
    market: str
    book_age_ms: dict[str, float | None] = field(default_factory=dict)  # venue -> age
    book_valid: dict[str, bool] = field(default_factory=dict)
    net_bps: dict[str, float | None] = field(default_factory=dict)  # direction -> best net edge
    venue_state: str | None = None  # a venue state that keeps the market from trading
    sanity: str | None = None  # why the sanity guard holds the market (an unconfirmed gap)


@dataclass(frozen=True)
class EngineSnapshot:
    mode: str
    uptime_s: float
    feeds: dict[str, FeedStatus]
    markets: list[MarketStatus]
    signals: int = 0
    refused: int = 0  # signals the executor or risk refused (counted apart from signals)
    trades: int = 0
    successes: int = 0
    shortfalls: int = 0  # filled less than signalled, unwound flat at no loss: not failures
    failures: int = 0
    consecutive_failures: int = 0
    realised_pnl_krw: Decimal = Decimal(0)
    fees_krw: Decimal = Decimal(0)
    balances: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # venue -> ccy -> total
    residual: dict[str, Decimal] = field(default_factory=dict)  # asset -> coin left unhedged
    residual_krw: dict[str, Decimal] = field(default_factory=dict)  # asset -> KRW value
    unresolved: list[str] = field(default_factory=list)  # orders that may still fill, being resolved
    latencies_us: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage -> (p50, p99)
    rate_limits: dict[str, dict[str, WindowStats]] = field(default_factory=dict)  # venue -> group -> use
    rate_limit_bans: dict[str, BanStats] = field(default_factory=dict)  # venue -> its 418 blocks
    circuit: str = "closed"
    trading_state: str = "active"
    halt_reason: str | None = None
    transfers: list[str] = field(default_factory=list)  # rebalance plans, open transfers, blocks
    # asset -> venue -> (share of the asset held there now, its target share)
    inventory: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    journal_errors: int = 0  # failed journal writes since start
    journal_failing: bool = False  # a journal write failed within the last JOURNAL_CLEAR_S
    recorder_error: str | None = None  # why frame recording stopped, if it did
    halts: dict[str, str] = field(default_factory=dict)  # active halts: kind -> reason
    alerts_fired: dict[str, int] = field(default_factory=dict)  # alert kind -> fired since start
    alert_failures: dict[str, int] = field(default_factory=dict)  # notifier -> undelivered alerts

    @property
    def success_rate(self) -> float | None:
        done = self.successes + self.shortfalls + self.failures
        return self.successes / done if done else None


def _fmt_bps(value: float | None) -> str:
    return "    -   " if value is None else f"{value:+8.1f}"


def _fmt_age(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.0f}"


def _money(value: Decimal) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.8f}".rstrip("0").rstrip(".")


def _wrap(prefix: str, items: list[str], width: int) -> list[str]:
    lines, line = [], prefix
    for item in items:
        if len(line) + len(item) + 2 > width and line.strip():
            lines.append(line)
            line = " " * len(prefix)
        line += item + "  "
    lines.append(line.rstrip())
    return lines


def render_panel(s: EngineSnapshot, width: int = 100) -> str:
    """Multi-line panel for a terminal (tmux) of ``width`` columns. Plain text; the caller
    adds cursor control."""
    rate = "-" if s.success_rate is None else f"{100 * s.success_rate:.1f}%"
    lines = [
        f"K-Arb  mode={s.mode}  up {s.uptime_s:,.0f}s  state={s.trading_state}"
        f"  circuit={s.circuit}" + (f"  HALT: {s.halt_reason}" if s.halt_reason else ""),
        "",
        "feed      state         msg/s   messages  reconn  errors  last msg",
    ]
    for venue, f in sorted(s.feeds.items()):
        age = "-" if f.last_message_age_s is None else f"{f.last_message_age_s:.2f}s"
        lines.append(f"{venue:<9} {f.state:<12} {f.msgs_per_s:6.1f} {f.messages:10d} {f.reconnects:7d}"
                     f" {f.decode_errors:7d}  {age}")
    lines += ["", "market        age ms up/bt   upbit_sell bithumb_sell (net bps)"]
    for m in s.markets:
        ages = " ".join(_fmt_age(m.book_age_ms.get(v)) + ("" if m.book_valid.get(v, False) else "!")
                        for v in ("upbit", "bithumb"))
        lines.append(f"{m.market:<12} {ages:<16} {_fmt_bps(m.net_bps.get('upbit_sell'))}"
                     f"   {_fmt_bps(m.net_bps.get('bithumb_sell'))}")
        for hold in (m.venue_state, m.sanity):
            if hold:
                lines.append(f"  {m.market} held: {hold}")
    lines += [
        "",
        f"signals {s.signals}  refused {s.refused}  trades {s.trades}  success {rate}"
        f"  shortfalls {s.shortfalls}  failures {s.failures} (consecutive {s.consecutive_failures})",
        f"realised PnL {_money(s.realised_pnl_krw)} KRW  fees {_money(s.fees_krw)} KRW",
    ]
    for venue, balances in sorted(s.balances.items()):
        items = [f"{ccy} {_money(v)}" for ccy, v in sorted(balances.items()) if v]
        lines.extend(_wrap(f"{venue:<8} ", items, width))
    if any(s.residual.values()):
        lines.append("RESIDUAL " + "  ".join(f"{a} {v}" for a, v in s.residual.items() if v))
    if s.unresolved:
        lines.extend(_wrap("UNRESOLVED (may still fill) ", s.unresolved, width))
    if s.inventory:
        items = [f"{asset} " + "/".join(f"{100 * now:.0f}%" for now, _ in shares.values())
                 + " (target " + "/".join(f"{100 * t:.0f}%" for _, t in shares.values()) + ")"
                 for asset, shares in sorted(s.inventory.items())]
        lines.extend(_wrap("inventory upbit/bithumb ", items, width))
    lines.extend(f"rebalance: {t}" for t in s.transfers)
    for venue, ban in sorted(s.rate_limit_bans.items()):
        if ban.blocked_for_s > 0:
            lines.append(f"{venue.upper()} BLOCKED US (HTTP 418) for {ban.blocked_for_s:.0f}s more: "
                         "its cancels, look-ups and orders fail")
    if s.journal_failing:
        lines.append(f"JOURNAL REFUSING WRITES ({s.journal_errors} failed): new trades refused")
    if s.recorder_error:
        lines.append(f"frame recording stopped: {s.recorder_error}")
    if s.latencies_us:
        lines.append("")
        lines.extend(_wrap("latency us p50/p99  ", [
            f"{stage} {p50:.0f}/{p99:.0f}" for stage, (p50, p99) in s.latencies_us.items()], width))
    return "\n".join(line[:width] for line in lines)


def render_line(s: EngineSnapshot) -> str:
    """One line for logs and journalctl."""
    feeds = " ".join(f"{v}={f.state}/{f.msgs_per_s:.0f}mps" for v, f in sorted(s.feeds.items()))
    rate = "-" if s.success_rate is None else f"{100 * s.success_rate:.0f}%"
    best = max((b for m in s.markets for b in m.net_bps.values() if b is not None), default=None)
    best_text = "-" if best is None else f"{best:+.1f}bps"
    unresolved = f"unresolved={len(s.unresolved)} " if s.unresolved else ""
    return (f"status {s.trading_state} circuit={s.circuit} {feeds} best_net={best_text} "
            f"signals={s.signals} refused={s.refused} trades={s.trades} success={rate} {unresolved}"
            f"pnl={_money(s.realised_pnl_krw)}KRW fees={_money(s.fees_krw)}KRW")
