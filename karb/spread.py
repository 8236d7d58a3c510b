"""Executable spread at size: walk both books, VWAP each side, net of both taker fees.

Pure functions, no threads, no I/O: the strategy thread calls them on every book change, the
unit tests call them with hand-computed books.

Sizing rule (``walk_spread``). Walking the cheap venue's asks upwards and the dear venue's bids
downwards pairs each unit of coin with one ask level ``a`` and one bid level ``b``; its marginal
net edge is ``b*(1-sell_fee) - a*(1+buy_fee)`` KRW per coin, which only shrinks as the walk goes
deeper. The size is the largest volume such that

* every unit taken still has a non-negative marginal net edge (a unit that loses money is never
  added just because the average can afford it, so even an all-at-the-limit fill does not lose);
* the whole trade's net edge, in bps of the buy VWAP, stays at or above the threshold (solved
  exactly inside a level, not rounded to whole levels);
* caps hold: ``max_volume`` (coin: config, sell-venue coin, inventory, position room) and
  ``max_buy_krw``, a budget for ``buy_limit * volume * (1 + buy_fee)`` (buy-venue KRW, max trade
  value), where the buy limit is the worst ask level the walk reached.

Rounding and exact sizing (``finalize``), once, from float to ``Decimal``. Both legs are IOC
limits at the worst level the walk touched. The buy limit is rounded DOWN to the buy venue's tick and the sell
limit UP to the sell venue's tick: an IOC limit never fills at a worse price than its limit, so
this direction can only make a leg fill *less* (the unwind policy handles that), never pay more
or sell for less than the edge was computed on. Book levels are already on the grid, so in
practice the rounding is a no-op; it bites only if a venue changed its tick under us. The volume
is floored to the coarser of the two venues' precisions, then shrunk to the largest volume the
exact ``Decimal`` limits allow at those limit prices (``karb.sizing``: the float caps of the walk
can land an ulp over them), and both legs' order values (limit x volume) must reach each
venue's minimum order.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

from karb.model import Level, Signal, Venue
from karb.rules import MarketRules, round_down

BPS = 10_000.0
KRW_CENT = Decimal("0.01")
FIT_ROUNDS = 4  # shrink-and-re-derive rounds in finalize; one shrink is the rule
Cap = Callable[[Decimal, Decimal, Decimal], Decimal]


@dataclass(frozen=True, slots=True)
class Walk:
    """Result of walking two books for one direction (floats, hot path)."""

    volume: float
    buy_cost: float  # sum of ask price x size taken, KRW, before fees
    sell_proceeds: float  # sum of bid price x size taken, KRW, before fees
    worst_ask: float  # highest ask level reached: the buy leg's limit
    worst_bid: float  # lowest bid level reached: the sell leg's limit


def top_net_bps(asks: tuple[Level, ...], bids: tuple[Level, ...], buy_fee: float,
                sell_fee: float) -> float | None:
    """Net edge of the best ask against the best bid, in bps of the ask (for status)."""
    if not asks or not bids:
        return None
    ask, bid = asks[0][0], bids[0][0]
    return (bid * (1.0 - sell_fee) - ask * (1.0 + buy_fee)) / ask * BPS


def walk_spread(asks: tuple[Level, ...], bids: tuple[Level, ...], buy_fee: float,
                sell_fee: float, threshold_bps: float, max_volume: float,
                max_buy_krw: float) -> Walk | None:
    """Return the largest executable size buying ``asks`` and selling into ``bids``, or None.

    ``asks`` ascending and ``bids`` descending, as in ``BookView``. See the module docstring for
    the sizing rule. O(levels).
    """
    t = threshold_bps / BPS
    buy_mult, sell_mult = 1.0 + buy_fee, 1.0 - sell_fee
    i = j = 0
    ask_left = asks[0][1] if asks else 0.0
    bid_left = bids[0][1] if bids else 0.0
    volume = cost = proceeds = net = 0.0
    worst_ask = worst_bid = 0.0
    while i < len(asks) and j < len(bids) and volume < max_volume:
        a, b = asks[i][0], bids[j][0]
        marginal = b * sell_mult - a * buy_mult
        if marginal < 0.0:
            break
        budget_room = max_buy_krw / (a * buy_mult) - volume
        if budget_room <= 0.0:
            break
        step = min(ask_left, bid_left, max_volume - volume, budget_room)
        stop = step != ask_left and step != bid_left
        slope = marginal - t * a  # d(net - t*cost)/d(volume) inside this segment
        if slope < 0.0:
            room = (net - t * cost) / -slope
            if room <= 0.0:
                break
            if room < step:
                step, stop = room, True
        volume += step
        cost += a * step
        proceeds += b * step
        net += marginal * step
        worst_ask, worst_bid = a, b
        if stop:
            break
        if step == ask_left:
            i += 1
            ask_left = asks[i][1] if i < len(asks) else 0.0
        else:
            ask_left -= step
        if step == bid_left:
            j += 1
            bid_left = bids[j][1] if j < len(bids) else 0.0
        else:
            bid_left -= step
    if volume <= 0.0:
        return None
    return Walk(volume, cost, proceeds, worst_ask, worst_bid)


def sweep_cost(levels: tuple[Level, ...], volume: float) -> tuple[float, float]:
    """Return (sum of price x size, worst price) for taking ``volume`` from ``levels``."""
    left, total, worst = volume, 0.0, 0.0
    for price, size in levels:
        take = size if size < left else left
        total += price * take
        worst = price
        left -= take
        if left <= volume * 1e-12:  # float dust from subtraction is not another level
            break
    return total, worst


def _dec(x: float) -> Decimal:
    # shortest repr: 0.1 -> Decimal("0.1"), not the binary expansion
    return Decimal(repr(x))


def finalize(walk: Walk, market: str, buy_venue: Venue, sell_venue: Venue,
             asks: tuple[Level, ...], bids: tuple[Level, ...], buy_rules: MarketRules,
             sell_rules: MarketRules, buy_fee: float, sell_fee: float, threshold_bps: float,
             created_ns: int, book_versions: tuple[int, int], book_recv_ns: tuple[int, int],
             signal_id: str = "", cap: Cap | None = None) -> Signal | str:
    """Turn a float walk into a ``Signal`` on the venues' grids, or return why it cannot be.

    ``cap(buy_limit, sell_limit, step)`` is the largest volume on the ``step`` grid that the
    exact limits allow at those limit prices (``karb.sizing``); the volume is shrunk to it,
    and the limits re-derived for the smaller volume, until it fits. Called on the strategy
    thread, once per candidate signal (not per book change).
    """
    step = max(buy_rules.volume_step, sell_rules.volume_step)
    # round(.., 10) first: 0.01 + 0.01 + 0.02 sums to 0.03999999999999999 in floats, which
    # must not floor to 0.03999999
    volume = round_down(_dec(round(walk.volume, 10)), step)
    capped = False
    for _ in range(FIT_ROUNDS):
        if volume <= 0:
            return ("no volume on the venues' grid fits the limits" if capped else
                    f"volume {walk.volume:.10g} is below the venues' precision")
        vol_f = float(volume)
        cost, worst_ask = sweep_cost(asks, vol_f)
        proceeds, worst_bid = sweep_cost(bids, vol_f)
        # flooring only shrinks the size: never reach past the levels the walk approved
        buy_price = buy_rules.round_buy_price(_dec(min(worst_ask, walk.worst_ask)))
        sell_price = sell_rules.round_sell_price(_dec(max(worst_bid, walk.worst_bid)))
        fitted = volume if cap is None else cap(buy_price, sell_price, step)
        if fitted >= volume:
            break
        # a smaller volume may reach fewer levels: better limits, so re-derive and re-check
        volume, capped = fitted, True
    else:
        return f"volume did not settle within the limits in {FIT_ROUNDS} rounds"
    if buy_price * volume < buy_rules.min_total:
        return (f"buy order value {buy_price * volume:.0f} KRW is below {buy_venue.value}'s "
                f"minimum {buy_rules.min_total}")
    if sell_price * volume < sell_rules.min_total:
        return (f"sell order value {sell_price * volume:.0f} KRW is below {sell_venue.value}'s "
                f"minimum {sell_rules.min_total}")
    net_krw = proceeds * (1.0 - sell_fee) - cost * (1.0 + buy_fee)
    net_bps = net_krw / cost * BPS
    if net_bps < threshold_bps:
        return f"net {net_bps:.1f} bps is below the threshold {threshold_bps:.1f} bps"
    buy_vwap, sell_vwap = cost / vol_f, proceeds / vol_f
    return Signal(
        market=market,
        buy_venue=buy_venue,
        sell_venue=sell_venue,
        volume=volume,
        buy_price=buy_price,
        sell_price=sell_price,
        buy_vwap=buy_vwap,
        sell_vwap=sell_vwap,
        gross_bps=(sell_vwap - buy_vwap) / buy_vwap * BPS,
        net_bps=net_bps,
        est_profit_krw=_dec(net_krw).quantize(KRW_CENT),
        created_ns=created_ns,
        book_versions=book_versions,
        book_recv_ns=book_recv_ns,
        id=signal_id,
    )


def describe(signal: Signal) -> str:
    """``Signal upbit_sell KRW-BTC net 0.31% (gross 0.40%) 0.05 BTC, est. profit 21,500 KRW``."""
    coin = signal.market.split("-", 1)[1]
    return (f"Signal {signal.direction} {signal.market} net {signal.net_bps / 100:.2f}% "
            f"(gross {signal.gross_bps / 100:.2f}%) {signal.volume.normalize():f} {coin}, "
            f"est. profit {signal.est_profit_krw:,.0f} KRW")
