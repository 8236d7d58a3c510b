"""The chaos campaign's invariants: the engine's journal against the sim's own truth.

``Truth`` is what the sim's control endpoint says (``GET /accounts``, ``GET /orders/<venue>``):
balances at start and now, every order the venue holds, and placement attempts per client
identifier. ``JournalView`` is what the engine's SQLite journal says (``orders``, ``fills``,
``signals``). ``check`` compares them and returns ``Violation``s, never raises on bad data:

``duplicate_placement``  a client identifier reached the venue's order handler more than once
``unjournalled_order``   a venue order whose identifier is not in the journal, or was journalled
                         after the venue created it (the intent must be on disk first)
``residual_mismatch``    per asset, the sum of the journal's ``signals.residual`` differs from the
                         coin both venues' accounts gained or lost since start
``journal_balance``      per venue and currency, start + every journalled order's executed volume,
                         funds and fee differs from the sim account's total (free + locked)
``halt_lost``            a halt or an open breaker seen before a kill was gone after the restart
                         (decided by the campaign, which watches the engine: ``halt_lost``)
``traded_while_killed``  a trade decided (its signal journalled) while the kill file was in place
                         had a leg (role buy/sell) reach a venue, e.g. on the first strategy pass
                         after a restart

``fills_disagreements`` is reported beside them, not as a violation: an order whose ``fills`` rows
do not add up to its executed volume and funds (an Upbit order final in its placement answer
carries no trades, so its fills are never journalled: known, not one of the invariants).

Amounts compare within ``dust_krw`` (valued at the market's last price for coin). Only the
first two hold at every instant; the others hold when nothing is in flight (``quiet``).
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

ZERO = Decimal(0)
OPEN_STATES = ("new", "sent", "acknowledged", "partially_filled", "unknown")


def dec(value: object) -> Decimal:
    """A journal or sim amount as Decimal; NULL, empty or garbage count as 0."""
    if value is None or value == "":
        return ZERO
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return ZERO
    return number if number.is_finite() else ZERO


def asset_of(market: str) -> str:
    return market.split("-", 1)[1]


@dataclass(frozen=True)
class Violation:
    invariant: str
    subject: str  # what it is about (a client id, an asset, a venue/currency, a restart)
    detail: str

    @property
    def key(self) -> tuple[str, str]:
        return self.invariant, self.subject


@dataclass
class Truth:
    """The sim's view: ``accounts[venue][ccy] = {"free","locked","start"}``; ``orders[venue]`` the
    venue's order records; ``attempts[venue][identifier]`` placement requests seen."""

    accounts: dict[str, dict[str, dict[str, str]]]
    orders: dict[str, list[dict]]
    attempts: dict[str, dict[str, int]]

    def total(self, venue: str, ccy: str) -> Decimal:
        entry = self.accounts.get(venue, {}).get(ccy, {})
        return dec(entry.get("free")) + dec(entry.get("locked"))

    def start(self, venue: str, ccy: str) -> Decimal:
        return dec(self.accounts.get(venue, {}).get(ccy, {}).get("start"))

    def resting(self) -> int:
        return sum(1 for orders in self.orders.values() for o in orders if o.get("state") == "wait")


@dataclass
class JournalView:
    orders: list[dict] = field(default_factory=list)
    fills: list[dict] = field(default_factory=list)
    signals: list[dict] = field(default_factory=list)

    def in_flight(self, now_ns: int, stuck_after_s: float) -> list[str]:
        """Orders still open and ``sending`` signals younger than ``stuck_after_s``: work a
        running engine may still finish. Older ``sending`` signals are stuck, not in flight."""
        busy = [f"order {o['client_id']} {o['state']}" for o in self.orders if o.get("state") in OPEN_STATES]
        horizon = now_ns - int(stuck_after_s * 1e9)
        busy += [f"signal {s['id']} sending" for s in self.signals
                 if s.get("status") == "sending" and (s.get("wall_ns") or 0) > horizon]
        return busy


def read_journal(path: str | Path) -> JournalView:
    """The journal's rows (empty when the file does not exist yet). Columns other helpers may
    add are ignored; a missing table reads as empty."""
    path = Path(path)
    if not path.exists():
        return JournalView()
    conn = sqlite3.connect(path, timeout=10.0)
    try:
        conn.row_factory = sqlite3.Row

        def rows(sql: str) -> list[dict]:
            try:
                return [dict(r) for r in conn.execute(sql).fetchall()]
            except sqlite3.OperationalError:
                return []

        return JournalView(rows("SELECT * FROM orders"), rows("SELECT * FROM fills"), rows("SELECT * FROM signals"))
    finally:
        conn.close()


def check(truth: Truth, journal: JournalView, prices: dict[str, Decimal], quiet: bool,
          dust_krw: Decimal = Decimal(1)) -> list[Violation]:
    """Every violated invariant (see the module docstring). ``prices``: asset -> KRW per coin,
    to turn ``dust_krw`` into a coin tolerance. ``quiet``: nothing in flight, so the
    balance and residual invariants apply too."""
    out = _placements(truth) + _journalled_first(truth, journal)
    if quiet:
        out += _residuals(truth, journal, prices, dust_krw) + _balances(truth, journal, prices, dust_krw)
    return out


def _placements(truth: Truth) -> list[Violation]:
    return [Violation("duplicate_placement", f"{venue}/{ident}", f"client id {ident} reached {venue} {n} times")
            for venue, attempts in sorted(truth.attempts.items()) for ident, n in sorted(attempts.items()) if n > 1]


def _journalled_first(truth: Truth, journal: JournalView) -> list[Violation]:
    journalled = {o["client_id"]: o for o in journal.orders}
    out = []
    for venue, orders in sorted(truth.orders.items()):
        for order in orders:
            ident = order.get("identifier")
            if not ident:
                continue  # Bithumb legacy carries no client id: nothing to match on
            row = journalled.get(ident)
            subject = f"{venue}/{ident}"
            if row is None:
                out.append(Violation("unjournalled_order", subject,
                                     f"{venue} order {order.get('uuid')} ({ident}) has no journal row"))
            elif row.get("venue") != venue:
                out.append(Violation("unjournalled_order", subject,
                                     f"{ident} is journalled for {row.get('venue')}, placed on {venue}"))
            elif (row.get("created_wall_ns") or 0) > int(order.get("created_ns") or 0):
                lag_ms = ((row.get("created_wall_ns") or 0) - int(order.get("created_ns") or 0)) / 1e6
                out.append(Violation("unjournalled_order", subject,
                                     f"{ident} journalled {lag_ms:.1f} ms after {venue} created it"))
    return out


def _coin_dust(asset: str, prices: dict[str, Decimal], dust_krw: Decimal) -> Decimal:
    price = prices.get(asset) or ZERO
    return max(dust_krw / price if price > 0 else ZERO, Decimal("0.00000001"))


def _residuals(truth: Truth, journal: JournalView, prices: dict[str, Decimal], dust_krw: Decimal) -> list[Violation]:
    engine: dict[str, Decimal] = {}
    for s in journal.signals:
        if s.get("market"):
            engine[asset_of(s["market"])] = engine.get(asset_of(s["market"]), ZERO) + dec(s.get("residual"))
    assets = set(engine) | set(prices)
    out = []
    for asset in sorted(assets):
        venue_net = sum((truth.total(v, asset) - truth.start(v, asset) for v in truth.accounts), ZERO)
        said = engine.get(asset, ZERO)
        if abs(venue_net - said) > _coin_dust(asset, prices, dust_krw):
            out.append(Violation("residual_mismatch", asset,
                                 f"engine residual {said} {asset}, venues net {venue_net} {asset}"))
    return out


def journal_totals(truth: Truth, journal: JournalView) -> dict[tuple[str, str], Decimal]:
    """(venue, currency) -> start + what the journal's orders executed."""
    totals = {(v, c): truth.start(v, c) for v, ccys in truth.accounts.items() for c in ccys}
    for o in journal.orders:
        venue, market = o.get("venue"), o.get("market") or ""
        if not venue or "-" not in market:
            continue
        sign = 1 if o.get("side") == "buy" else -1
        coin = (venue, asset_of(market))
        krw = (venue, "KRW")
        totals[coin] = totals.get(coin, ZERO) + sign * dec(o.get("executed_volume"))
        totals[krw] = totals.get(krw, ZERO) - sign * dec(o.get("executed_funds")) - dec(o.get("paid_fee"))
    return totals


def _balances(truth: Truth, journal: JournalView, prices: dict[str, Decimal], dust_krw: Decimal) -> list[Violation]:
    out = []
    for (venue, ccy), expected in sorted(journal_totals(truth, journal).items()):
        actual = truth.total(venue, ccy)
        tolerance = dust_krw if ccy == "KRW" else _coin_dust(ccy, prices, dust_krw)
        if abs(actual - expected) > tolerance:
            why = "; ".join(order_differences(truth, journal, venue)[:3])
            out.append(Violation("journal_balance", f"{venue}/{ccy}",
                                 f"journal says {expected} {ccy} on {venue}, the venue holds {actual}"
                                 + (f" ({why})" if why else "")))
    return out


def order_differences(truth: Truth, journal: JournalView, venue: str) -> list[str]:
    """Journal orders on ``venue`` whose executed volume differs from the venue's record of them."""
    at_venue = {o.get("identifier"): o for o in truth.orders.get(venue, []) if o.get("identifier")}
    out = []
    for o in journal.orders:
        if o.get("venue") != venue:
            continue
        mine, theirs = dec(o.get("executed_volume")), at_venue.get(o["client_id"])
        if theirs is None:
            if mine:
                out.append(f"{o['client_id']} {o.get('state')} {mine} in the journal, unknown to the venue")
        elif mine != dec(theirs.get("executed_volume")):
            out.append(f"{o['client_id']} journal {o.get('state')} {mine}, venue {theirs.get('state')} "
                       f"{dec(theirs.get('executed_volume'))}")
    return out


def fills_disagreements(journal: JournalView, prices: dict[str, Decimal], dust_krw: Decimal) -> list[Violation]:
    filled: dict[str, list[Decimal]] = {}
    for f in journal.fills:
        sums = filled.setdefault(f.get("client_id") or "", [ZERO, ZERO])
        sums[0] += dec(f.get("volume"))
        sums[1] += dec(f.get("funds"))
    out = []
    for o in journal.orders:
        volume, funds = dec(o.get("executed_volume")), dec(o.get("executed_funds"))
        got = filled.get(o["client_id"], [ZERO, ZERO])
        tolerance = _coin_dust(asset_of(o.get("market") or "-X"), prices, dust_krw)
        if abs(got[0] - volume) > tolerance or abs(got[1] - funds) > dust_krw:
            out.append(Violation("fills_journalled", o["client_id"],
                                 f"order {o['client_id']} executed {volume} for {funds} KRW, its fills rows "
                                 f"add up to {got[0]} for {got[1]} KRW"))
    return out


def halt_lost(before, after, last_closed_t: float | None, reset_s: float, subject: str) -> list[Violation]:
    """A halt, or an open breaker that cannot have timed out yet, must survive a restart.

    ``before``/``after``: the engine's state (``t`` monotonic, ``halted``, ``circuit``) just before
    the kill and once the restarted engine settled. ``last_closed_t``: the last time the breaker
    was seen closed before the kill; it opened after that, so it stays open at least until
    ``last_closed_t + reset_s``.
    """
    if before is None or after is None:
        return []
    out = []
    if before.halted and not after.halted:
        out.append(Violation("halt_lost", subject, "halted before the kill, trading after the restart"))
    if (before.circuit == "open" and after.circuit == "closed" and last_closed_t is not None
            and after.t < last_closed_t + reset_s):
        out.append(Violation("halt_lost", subject + " breaker",
                             f"breaker open before the kill, closed {after.t - last_closed_t:.1f} s after it "
                             f"was last seen closed (reset after {reset_s:.0f} s)"))
    return out


def traded_while_killed(truth: Truth, journal: JournalView, since_ns: int, subject: str) -> list[Violation]:
    """Trade legs (not unwind orders) decided after ``since_ns`` (their signal's journalled
    time), while the kill file was in place, that reached a venue. The decision time, not the
    venue's creation stamp: a leg sent just before the file appeared can be created later (a
    ``delay_orders`` fault holds it at the venue). Orders the journal does not know are
    ``unjournalled_order``'s business."""
    decided = {s["id"]: int(s.get("wall_ns") or 0) for s in journal.signals}
    legs = {o["client_id"]: o for o in journal.orders if o.get("role") in ("buy", "sell")}
    out = []
    for venue, orders in sorted(truth.orders.items()):
        for order in orders:
            ident = order.get("identifier")
            leg = legs.get(ident)
            if leg is not None and decided.get(leg.get("signal_id"), 0) > since_ns:
                out.append(Violation("traded_while_killed", f"{subject} {venue}/{ident}",
                                     f"{leg['role']} leg {ident} placed on {venue} with the kill switch engaged"))
    return out
