"""Seeded market generator: the books both simulated venues publish.

Model, per market: one fair value (geometric Brownian motion, ``vol_annual``) shared by both
venues; per venue a premium = Ornstein-Uhlenbeck noise (``premium_vol_bps`` stationary std,
``premium_reversion_per_s``) + jumps (``gaps_per_min``, log-uniform size ``gap_bps_min..max``
and decay time ``gap_life_min_s..max_s``), so cross-venue gaps open at once and close over
50 ms to seconds. Each venue's book is a persistent price -> size ladder around its mid: levels
keep their price and size as the mid moves (so Bithumb legacy deltas are realistic), sizes are
lognormal around ``level_krw``, a few are resized each update, and every price sits on the
venue's tick for its band (``karb.sim.grid`` from ``karb.rules``).

Every (venue, market) book is first yielded once at sim time 0 (the opening books, so a
venue has a book for every market the moment it serves); updates then arrive per (venue,
market) as Poisson processes at ``update_hz``. ``events()`` yields them in sim-time order;
the stream is a pure function of ``SimConfig`` (seed included) and the market list, unless
our own fills (``take``) or ``dislocate`` change it.

Threads: ``events()`` runs on the market thread; ``take`` and ``dislocate`` may be called from
any thread (they only append to a deque / swap a dict entry).
"""
from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterator, NamedTuple

from karb.model import Venue
from karb.sim.config import SimConfig, SimMarketConfig
from karb.sim.grid import GRIDS, TickGrid

NS = 1_000_000_000
_YEAR_S = 365 * 86400
_SIZE_SIGMA = 0.8
_RESIZED_PER_UPDATE = 3

Ladder = tuple[tuple[int, int], ...]  # ((price_sats, size_sats), ...) best first


class BookEvent(NamedTuple):
    """One book update of one venue: ``t_ns`` is sim time since the stream's start."""

    t_ns: int
    venue: Venue
    market: str
    bids: Ladder
    asks: Ladder


@dataclass
class _Jump:
    amp: float  # fraction of price, signed
    t0_ns: int
    tau_ns: float


@dataclass
class _VenueBook:
    venue: Venue
    market: str
    grid: TickGrid
    rng: random.Random
    level_krw: float
    spread_ticks: int
    premium: float = 0.0
    jumps: list[_Jump] = field(default_factory=list)
    bids: list[list[int]] = field(default_factory=list)  # [[price, size], ...] best first
    asks: list[list[int]] = field(default_factory=list)
    last_ns: int = 0


@dataclass
class _Dislocation:
    cheap: Venue
    bps: float
    until_ns: int


class MarketGenerator:
    """Deterministic book stream for ``markets`` on both venues."""

    def __init__(self, config: SimConfig, markets: list[str]):
        self.config = config
        self.markets = list(markets)
        self._fair: dict[str, float] = {}
        self._fair_ns: dict[str, int] = {}
        self._fair_rng: dict[str, random.Random] = {}
        self._sigma: dict[str, float] = {}
        self._books: list[_VenueBook] = []
        self._taken: deque[tuple[Venue, str, str, int, int]] = deque()
        self._dislocations: dict[str, _Dislocation] = {}
        self.now_ns = 0
        for market in self.markets:
            mc = config.markets.get(market) or SimMarketConfig(price=Decimal(1000))
            self._fair[market] = float(mc.price)
            self._fair_ns[market] = 0
            self._fair_rng[market] = random.Random(f"{config.seed}:fair:{market}")
            self._sigma[market] = mc.vol_annual / math.sqrt(_YEAR_S)
            for venue in Venue:
                self._books.append(_VenueBook(
                    venue, market, GRIDS[venue], random.Random(f"{config.seed}:{venue.value}:{market}"),
                    mc.level_krw, max(1, mc.spread_ticks),
                ))
        self._by_key = {(b.venue, b.market): b for b in self._books}

    # --- called from any thread -------------------------------------------------------------
    def take(self, venue: Venue, market: str, side: str, price: int, size: int) -> None:
        """Our fill took ``size`` at ``price`` from the ``side`` ("bid"/"ask") of a book."""
        self._taken.append((venue, market, side, price, size))

    def dislocate(self, market: str, cheap: Venue, bps: float, seconds: float) -> None:
        """Hold ``cheap``'s asks ~``bps`` below the other venue's bids for ``seconds``."""
        if market not in self._fair:
            raise KeyError(f"unknown sim market {market}")
        self._dislocations[market] = _Dislocation(cheap, bps, self.now_ns + int(seconds * NS))

    # --- market thread ----------------------------------------------------------------------
    def events(self) -> Iterator[BookEvent]:
        """Yield every book at t=0, then updates forever, in sim-time order (ties broken by
        stream index)."""
        for book in self._books:
            yield self._update(book, 0)
        hz = self.config.update_hz
        heap = [(int(b.rng.expovariate(hz) * NS), i) for i, b in enumerate(self._books)]
        heapq.heapify(heap)
        while True:
            t_ns, i = heap[0]
            book = self._books[i]
            heapq.heapreplace(heap, (t_ns + max(1, int(book.rng.expovariate(hz) * NS)), i))
            self.now_ns = t_ns
            yield self._update(book, t_ns)

    def _update(self, book: _VenueBook, t_ns: int) -> BookEvent:
        if self._taken:
            self._apply_taken()
        fair = self._advance_fair(book.market, t_ns)
        mid = fair * (1.0 + self._advance_premium(book, t_ns))
        best_bid, best_ask = self._quote(book, mid)
        dis = self._dislocations.get(book.market)
        if dis is not None:
            if t_ns >= dis.until_ns:
                del self._dislocations[book.market]
            else:
                best_bid, best_ask = self._dislocated(book, dis, best_bid, best_ask)
        self._reladder(book, best_bid, best_ask)
        return BookEvent(t_ns, book.venue, book.market,
                         tuple((p, s) for p, s in book.bids), tuple((p, s) for p, s in book.asks))

    def _advance_fair(self, market: str, t_ns: int) -> float:
        dt = (t_ns - self._fair_ns[market]) / NS
        if dt > 0:
            sigma = self._sigma[market]
            z = self._fair_rng[market].gauss(0.0, 1.0)
            self._fair[market] *= math.exp(sigma * math.sqrt(dt) * z - 0.5 * sigma * sigma * dt)
            self._fair_ns[market] = t_ns
        return self._fair[market]

    def _advance_premium(self, book: _VenueBook, t_ns: int) -> float:
        cfg, rng = self.config, book.rng
        dt = (t_ns - book.last_ns) / NS
        book.last_ns = t_ns
        decay = math.exp(-cfg.premium_reversion_per_s * dt)
        std = cfg.premium_vol_bps * 1e-4
        book.premium = book.premium * decay + std * math.sqrt(1.0 - decay * decay) * rng.gauss(0.0, 1.0)
        if rng.random() < 1.0 - math.exp(-cfg.gaps_per_min / 60.0 * dt):
            amp = _log_uniform(rng, cfg.gap_bps_min, cfg.gap_bps_max) * 1e-4
            tau = _log_uniform(rng, cfg.gap_life_min_s, cfg.gap_life_max_s) * NS
            book.jumps.append(_Jump(amp if rng.random() < 0.5 else -amp, t_ns, tau))
        total = book.premium
        if book.jumps:
            live = []
            for jump in book.jumps:
                value = jump.amp * math.exp(-(t_ns - jump.t0_ns) / jump.tau_ns)
                if abs(value) > 1e-7:
                    live.append(jump)
                    total += value
            book.jumps = live
        return total

    def _quote(self, book: _VenueBook, mid: float) -> tuple[int, int]:
        grid = book.grid
        mid_sats = max(1, int(mid * 1e8))
        tick = grid.tick(mid_sats)
        # Half the spread on each side of the mid, then snap outwards onto the grid.
        best_bid = grid.floor(max(tick, mid_sats - (book.spread_ticks * tick) // 2))
        best_ask = grid.ceil(best_bid + 1)
        while _ticks_between(grid, best_bid, best_ask) < book.spread_ticks:
            best_ask = grid.above(best_ask, 1)
        return best_bid, best_ask

    def _dislocated(self, book: _VenueBook, dis: _Dislocation, bid: int, ask: int) -> tuple[int, int]:
        other = self._peer(book)
        if not other.bids or not other.asks:
            return bid, ask
        grid, factor = book.grid, dis.bps * 1e-4
        if book.venue is dis.cheap:
            ask = min(ask, grid.floor(int(other.bids[0][0] * (1.0 - factor))))
            ask = max(ask, grid.tick(ask))
            bid = min(bid, grid.below(ask, book.spread_ticks))
        else:
            bid = max(bid, grid.ceil(int(other.asks[0][0] / (1.0 - factor)) + 1))
            ask = max(ask, grid.above(bid, book.spread_ticks))
        return bid, ask

    def _peer(self, book: _VenueBook) -> _VenueBook:
        return self._by_key[(book.venue.other, book.market)]

    def _reladder(self, book: _VenueBook, best_bid: int, best_ask: int) -> None:
        depth, rng = self.config.depth, book.rng
        bids = [lvl for lvl in book.bids if lvl[0] <= best_bid]
        asks = [lvl for lvl in book.asks if lvl[0] >= best_ask]
        book.bids = _extend(_fill_top(bids, best_bid, depth, book, True), depth, book, True)
        book.asks = _extend(_fill_top(asks, best_ask, depth, book, False), depth, book, False)
        for side in (book.bids, book.asks):
            for _ in range(_RESIZED_PER_UPDATE):
                level = side[int(rng.random() * len(side))]
                level[1] = _size(book, level[0])

    def _apply_taken(self) -> None:
        while self._taken:
            venue, market, side, price, size = self._taken.popleft()
            book = self._by_key.get((venue, market))
            if book is None:
                continue
            levels = book.bids if side == "bid" else book.asks
            for level in levels:
                if level[0] == price:
                    level[1] -= size
                    break
            levels[:] = [lvl for lvl in levels if lvl[1] > 0]


def _fill_top(levels: list[list[int]], best: int, depth: int, book: _VenueBook,
              bids: bool) -> list[list[int]]:
    """Insert fresh levels from ``best`` towards the old top, so the best level exists."""
    if levels and levels[0][0] == best:
        return levels
    stop = levels[0][0] if levels else None
    grid, new, price = book.grid, [], best
    while len(new) < depth:
        new.append([price, _size(book, price)])
        price = grid.below(price, _gap(book)) if bids else grid.above(price, _gap(book))
        if stop is None or (price <= stop if bids else price >= stop):
            break
    return new + levels


def _extend(levels: list[list[int]], depth: int, book: _VenueBook, bids: bool) -> list[list[int]]:
    """Cut to ``depth`` levels, or add levels beyond the last one until there are ``depth``."""
    if len(levels) >= depth:
        return levels[:depth]
    grid = book.grid
    while len(levels) < depth:
        last = levels[-1][0]
        price = grid.below(last, _gap(book)) if bids else grid.above(last, _gap(book))
        if bids and price >= last:
            break  # reached the smallest price the grid has
        levels.append([price, _size(book, price)])
    return levels


def _gap(book: _VenueBook) -> int:
    r = book.rng.random()
    return 1 if r < 0.7 else (2 if r < 0.9 else 3)


def _size(book: _VenueBook, price: int) -> int:
    coins = book.level_krw / (price / 1e8) * math.exp(_SIZE_SIGMA * book.rng.gauss(0.0, 1.0) - 0.5)
    sats = max(1, int(coins * 1e8))
    digits = len(str(sats))
    if digits > 15:  # keep sizes exactly representable as JSON floats
        quantum = 10 ** (digits - 15)
        sats = max(quantum, sats - sats % quantum)
    return sats


def _ticks_between(grid: TickGrid, low: int, high: int) -> int:
    return (high - low) // grid.tick(low) if high > low else 0


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))

