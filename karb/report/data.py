"""Load a journal (read-only) and an optional ``backtest.json`` into a small typed model.

The journal is the source of every figure it can give (trades, legs, PnL, fees, balances,
incidents); ``backtest.json``, written beside a backtest's journal, adds what only a backtest
knows (oracle, missed opportunities, the spread histogram, run parameters). Any of its keys may
be missing: the matching field is then ``None`` and the report says the section is not
available. A file that is not a journal, or a ``backtest.json`` that is not a JSON object,
raises ``ReportError`` naming the file and why.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

FINISHED = ("filled", "shortfall", "flat", "residual")  # signal statuses of a booked trade
PRIMARY_ROLES = ("buy", "sell")  # the two legs of a trade; unwind orders are "retry-N"
FINAL_ORDER_STATES = ("filled", "cancelled", "rejected")
_TABLES = {"signals", "orders", "balances", "incidents"}


class ReportError(ValueError):
    """The journal or ``backtest.json`` cannot be read. The message names the file."""


@dataclass(frozen=True)
class Trade:
    """One booked trade (a ``signals`` row whose result was journalled)."""

    id: str
    market: str
    direction: str  # "buy <venue> / sell <venue>"
    wall_ns: int
    status: str  # filled | flat | residual
    realised_krw: Decimal
    fees_krw: Decimal
    net_bps: float | None
    residual: Decimal  # coin left unhedged: positive = long
    stages_ns: dict[str, int | None]  # recv, signal, submit, sent, acked, done (monotonic)

    @property
    def succeeded(self) -> bool:
        return self.status == "filled"


@dataclass(frozen=True)
class Order:
    """One order row: a trade's primary leg (``role`` buy/sell) or an unwind step."""

    signal_id: str
    role: str
    venue: str
    market: str
    side: str
    state: str
    price: Decimal | None
    volume: Decimal | None
    executed_volume: Decimal
    executed_funds: Decimal

    @property
    def primary(self) -> bool:
        return self.role in PRIMARY_ROLES

    @property
    def final(self) -> bool:
        return self.state in FINAL_ORDER_STATES

    @property
    def complete(self) -> bool:
        """Filled in full (a cancelled remainder of zero counts: market-buy dust)."""
        return self.state == "filled" or (
            self.volume is not None and self.final and self.executed_volume >= self.volume)

    @property
    def avg_price(self) -> Decimal | None:
        return self.executed_funds / self.executed_volume if self.executed_volume else None


@dataclass(frozen=True)
class Unbooked:
    """A signal with legs but no booked result: stranded (a leg unresolved, the engine halted or
    was stopped) or still in flight when the journal was read. Its PnL is unknown."""

    id: str
    market: str
    direction: str
    wall_ns: int
    status: str  # the signal's status as journalled (``sending`` until a result is booked)
    orders: tuple[Order, ...]  # its primary legs and any unwind orders

    @property
    def net_coin(self) -> Decimal:
        """Coin the known fills left it holding: bought minus sold (+ = long)."""
        return sum((o.executed_volume if o.side == "buy" else -o.executed_volume
                    for o in self.orders), Decimal(0))

    @property
    def open_legs(self) -> list[Order]:
        """Orders not final: they may still fill (exposure of unknown size)."""
        return [o for o in self.orders if not o.final]


@dataclass(frozen=True)
class Outcome:
    """Oracle or unconstrained result from ``backtest.json``."""

    pnl_krw: Decimal
    trades: int
    per_market: dict[str, tuple[Decimal, int]]  # market -> (pnl, trades)


@dataclass
class ReportData:
    journal_path: Path
    trades: list[Trade]
    orders: list[Order]
    signal_prices: dict[str, tuple[float | None, float | None]]  # id -> expected buy/sell VWAP
    inventory: list[tuple[int, str, str, Decimal]]  # (wall_ns, venue, asset, amount)
    inventory_source: str | None  # "backtest.json" | "journal balances" | None
    incidents: dict[str, int]  # kind -> count
    first_ns: int | None
    last_ns: int | None
    backtest: dict[str, Any] = field(default_factory=dict)  # raw backtest.json (may be empty)
    oracle: Outcome | None = None
    unconstrained: Outcome | None = None
    missed: dict[str, int] | None = None
    spread_hist: tuple[float, dict[float, int]] | None = None  # (bucket width, lower edge -> n)
    latency_ms: list[float] | None = None
    threshold_bps: float | None = None
    unbooked: list[Unbooked] = field(default_factory=list)  # signals with legs, no booked result
    halts: list[tuple[int, str, str]] = field(default_factory=list)  # (wall_ns, halt|resume, reason)
    breaker_trips: int = 0  # circuit breaker openings


def load(journal_path: str | Path, backtest_json: str | Path | None = None,
         threshold_bps: float | None = None) -> ReportData:
    """Read the journal and, when given and present, ``backtest.json``."""
    path = Path(journal_path)
    rows = _read_journal(path)
    extra = _read_backtest_json(Path(backtest_json)) if backtest_json else {}
    try:
        trades = [_trade(r) for r in rows["signals"] if r["status"] in FINISHED]
        orders = [_order(r) for r in rows["orders"]]
    except ReportError as exc:
        raise ReportError(f"{path}: {exc}") from None
    trades.sort(key=lambda t: (t.wall_ns, t.id))
    unbooked = _unbooked(rows["signals"], orders)
    prices = {r["id"]: (r["buy_vwap"], r["sell_vwap"]) for r in rows["signals"]}
    incidents: dict[str, int] = {}
    for r in rows["incidents"]:
        incidents[r["kind"]] = incidents.get(r["kind"], 0) + 1
    try:
        bt = _backtest_fields(extra, threshold_bps)
        inventory, source = _inventory(extra, rows["balances"])
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # ReportError is a ValueError
        raise ReportError(f"{backtest_json}: unexpected content ({type(exc).__name__}: {exc})") from None
    times = [t.wall_ns for t in trades] + [i[0] for i in inventory]
    return ReportData(
        journal_path=path, trades=trades, orders=orders, signal_prices=prices,
        inventory=inventory, inventory_source=source, incidents=dict(sorted(incidents.items())),
        first_ns=bt.pop("start_wall_ns", None) or min(times, default=None),
        last_ns=bt.pop("end_wall_ns", None) or max(times, default=None), backtest=extra,
        unbooked=unbooked,
        halts=[(r["wall_ns"], r["kind"], r["reason"] or "") for r in rows["risk_events"]
               if r["kind"] in ("halt", "resume")],
        breaker_trips=sum(r["kind"] == "breaker_open" for r in rows["risk_events"]), **bt)


def _unbooked(signals: list[dict[str, Any]], orders: list[Order]) -> list[Unbooked]:
    by_signal: dict[str, list[Order]] = {}
    for o in orders:
        by_signal.setdefault(o.signal_id, []).append(o)
    out = [Unbooked(r["id"], r["market"], f"buy {r['buy_venue']} / sell {r['sell_venue']}",
                    int(r["wall_ns"]), r["status"] or "", tuple(by_signal[r["id"]]))
           for r in signals if r["status"] not in FINISHED and r["id"] in by_signal]
    return sorted(out, key=lambda u: (u.wall_ns, u.id))


def _backtest_fields(extra: dict[str, Any], threshold_bps: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"oracle": _outcome(extra.get("oracle")),
                           "unconstrained": _outcome(extra.get("unconstrained"))}
    for key in ("start_wall_ns", "end_wall_ns"):
        if extra.get(key) is not None:
            out[key] = int(extra[key])
    if "missed" in extra:
        out["missed"] = {str(k): int(v) for k, v in extra["missed"].items()}
    if extra.get("net_spread_hist"):
        hist = extra["net_spread_hist"]
        out["spread_hist"] = (float(hist["bucket_bps"]),
                              {float(k): int(v) for k, v in hist["counts"].items()})
    if "latency_ms" in extra:
        out["latency_ms"] = [float(x) for x in extra["latency_ms"]]
    threshold = extra.get("threshold_bps")
    threshold = threshold_bps if threshold is None else threshold
    out["threshold_bps"] = None if threshold is None else float(threshold)
    return out


def _read_journal(path: Path) -> dict[str, list[dict[str, Any]]]:
    if not path.is_file():
        raise ReportError(f"{path}: no such journal file")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # opening reads nothing yet
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = _TABLES - tables
        if missing:
            raise ReportError(f"{path}: not a K-Arb journal (no {', '.join(sorted(missing))} table)")
        out = {}
        for table, order in (("signals", "wall_ns"), ("orders", "created_wall_ns"),
                             ("balances", "id"), ("incidents", "id"), ("risk_events", "id")):
            if table not in tables:  # risk_events: journals older than the halts
                out[table] = []
                continue
            cursor = conn.execute(f"SELECT * FROM {table} ORDER BY {order}")
            names = [d[0] for d in cursor.description]
            out[table] = [dict(zip(names, row)) for row in cursor.fetchall()]
        return out
    except sqlite3.OperationalError as exc:  # e.g. no access to the file or its -wal / -shm
        raise ReportError(f"{path}: cannot read the journal ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise ReportError(f"{path}: not a K-Arb journal ({exc})") from None
    finally:
        conn.close()


def _read_backtest_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object, was {type(data).__name__}")
    return data


def _dec(value: Any) -> Decimal:
    if value is None or value == "":
        return Decimal(0)
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ReportError(f"not a decimal amount: {value!r}") from None


def _opt_dec(value: Any) -> Decimal | None:
    return None if value is None or value == "" else _dec(value)


def _trade(r: dict[str, Any]) -> Trade:
    stages = {k: r.get(f"{k}_ns") for k in ("recv", "signal", "submit", "sent", "acked", "done")}
    return Trade(r["id"], r["market"], f"buy {r['buy_venue']} / sell {r['sell_venue']}",
                 int(r["wall_ns"]), r["status"], _dec(r["realised_krw"]), _dec(r["fees_krw"]),
                 r["net_bps"], _dec(r["residual"]), stages)


def _order(r: dict[str, Any]) -> Order:
    return Order(r["signal_id"], r["role"], r["venue"], r["market"], r["side"], r["state"],
                 _opt_dec(r["price"]), _opt_dec(r["volume"]), _dec(r["executed_volume"]),
                 _dec(r["executed_funds"]))


def _inventory(extra: dict[str, Any], balances: list[dict[str, Any]]):
    if extra.get("inventory"):
        rows = [(int(t), str(v), str(a), _dec(x)) for t, v, a, x in extra["inventory"]]
        return sorted(rows), "backtest.json"
    if balances:
        rows = [(int(b["wall_ns"]), b["venue"], b["currency"], _dec(b["free"]) + _dec(b["locked"]))
                for b in balances]
        return rows, "journal balances"
    return [], None


def _outcome(raw: Any) -> Outcome | None:
    if not isinstance(raw, dict) or "pnl_krw" not in raw:
        return None
    per = {m: (_dec(v.get("pnl_krw")), int(v.get("trades", 0)))
           for m, v in (raw.get("per_market") or {}).items()}
    return Outcome(_dec(raw["pnl_krw"]), int(raw.get("trades", 0)), per)
