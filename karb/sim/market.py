"""Seeded market generator: the books both simulated venues publish.

Model, per market: one fair value (geometric Brownian motion, ``vol_annual``) shared by both
venues; per venue a premium = a slow Ornstein-Uhlenbeck gap (``gap_std_bps``, ``gap_reversion_s``;
``realistic`` only, drawn from its stationary law at start) + fast OU noise (``noise_bps``,
``noise_reversion_per_s``) + jumps (``gaps_per_min``, log-uniform size ``gap_bps_min..max`` and
decay time ``gap_life_min_s..max_s``), so cross-venue gaps open at once and close over a
lifetime. The parameters are per market, from the profile (``karb.sim.profiles``: ``demo`` or
``realistic``) with ``sim.markets.<M>`` overrides. Each venue's book is a persistent price ->
size ladder around its mid: levels keep their price and size as the mid moves (so Bithumb
legacy deltas are realistic), sizes are lognormal around ``level_krw``, ``resized_per_update``
levels per side are resized each update, and every price sits on the venue's tick for its band
(``karb.sim.grid`` from ``karb.rules``). Levels are ``(price, size)`` tuples in a list per side,
so an event's ladders are plain ``tuple(list)`` copies.

Every (venue, market) book is first yielded once at sim time 0 (the opening books, so a
venue has a book for every market the moment it serves); updates then arrive per (venue,
market) as Poisson processes at the market's ``update_hz``. ``events()`` yields them in
sim-time order; the stream is a pure function of ``SimConfig`` (seed included) and the market
list, unless our own fills (``take``) or ``dislocate`` change it.

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
from statistics import NormalDist
from typing import Iterator, NamedTuple

from karb.model import Venue
from karb.sim.config import SimConfig, SimMarketConfig
from karb.sim.grid import GRIDS, TickGrid
from karb.sim.profiles import MarketParams, market_params

NS = 1_000_000_000
_YEAR_S = 365 * 86400
_SIZE_SIGMA = 0.8
_JSON_EXACT = 10 ** 15  # sizes from here up are rounded to 15 significant digits
# Lognormal size factors (median exp(-0.5), sigma 0.8) at 4096 equal-probability quantiles: one
# uniform draw and a lookup per level instead of a gauss and an exp (the generator's hot spot).
_SIZE_QUANTILES = 4096
_SIZE_FACTORS = tuple(math.exp(_SIZE_SIGMA * NormalDist().inv_cdf((i + 0.5) / _SIZE_QUANTILES) - 0.5)
                      for i in range(_SIZE_QUANTILES))

Ladder = tuple[tuple[int, int], ...]  # ((price_sats, size_sats), ...) best first
FLOAT_SCALE = 1e8  # a float ladder's level is (price / FLOAT_SCALE, size / FLOAT_SCALE)


class BookEvent(NamedTuple):
    """One book update of one venue: ``t_ns`` is sim time since the stream's start.

    ``fbids`` / ``fasks``: the same ladders' top ``float_depth`` levels as floats
    (``sats / FLOAT_SCALE``, what a feed decodes), from a generator made with ``float_depth``;
    else None."""

    t_ns: int
    venue: Venue
    market: str
    bids: Ladder
    asks: Ladder
    fbids: tuple[tuple[float, float], ...] | None = None
    fasks: tuple[tuple[float, float], ...] | None = None


@dataclass
class _Jump:
    amp: float  # fraction of price, signed
    t0_ns: int
    tau_ns: float


@dataclass
class _Fair:
    """One market's fair value (geometric Brownian motion), shared by both venues' books."""

    value: float
    rng: random.Random
    sigma: float  # per sqrt(second)
    t_ns: int = 0


@dataclass
class _VenueBook:
    venue: Venue
    market: str
    grid: TickGrid
    rng: random.Random
    params: MarketParams
    fair: _Fair  # shared by the market's two books
    level_krw: float
    spread_ticks: int
    premium: float = 0.0  # fast noise
    slow: float = 0.0  # slow gap (realistic)
    jumps: list[_Jump] = field(default_factory=list)
    bids: list[tuple[int, int]] = field(default_factory=list)  # [(price, size), ...] best first
    asks: list[tuple[int, int]] = field(default_factory=list)
    # the float mirror (a ``float_depth`` generator): the first levels of bids / asks as
    # floats, at least ``float_depth`` of them after each update
    fbids: list[tuple[float, float]] | None = None
    fasks: list[tuple[float, float]] | None = None
    float_depth: int = 0
    last_ns: int = 0
    band: tuple[int, int, int] = (0, 0, 1)  # (low, high, tick) of the last mid's tick band


@dataclass
class _Dislocation:
    cheap: Venue
    bps: float
    until_ns: int


class MarketGenerator:
    """Deterministic book stream for ``markets`` on both venues.

    ``float_depth`` (a backtest): also keep a float mirror of the top of every ladder,
    converting only the levels that are new there, and put its top ``float_depth`` levels in
    each event (``fbids`` / ``fasks``). The stream itself is the same with or without it."""

    def __init__(self, config: SimConfig, markets: list[str], float_depth: int | None = None):
        self.config = config
        self.markets = list(markets)
        self.float_depth = float_depth
        self._fair: dict[str, _Fair] = {}
        self._books: list[_VenueBook] = []
        self._taken: deque[tuple[Venue, str, str, int, int]] = deque()
        self._dislocations: dict[str, _Dislocation] = {}
        self.now_ns = 0
        for market in self.markets:
            mc = config.markets.get(market) or SimMarketConfig(price=Decimal(1000))
            fair = self._fair[market] = _Fair(float(mc.price), random.Random(f"{config.seed}:fair:{market}"),
                                              mc.vol_annual / math.sqrt(_YEAR_S))
            params = market_params(config, market)
            for venue in Venue:
                book = _VenueBook(
                    venue, market, GRIDS[venue], random.Random(f"{config.seed}:{venue.value}:{market}"),
                    params, fair, params.level_krw, max(1, params.spread_ticks),
                )
                if params.gap_std_bps:  # start in the stationary law: no warm-up needed
                    book.slow = _slow_std(params) * book.rng.gauss(0.0, 1.0)
                if float_depth is not None:
                    book.fbids, book.fasks, book.float_depth = [], [], float_depth
                self._books.append(book)
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
        books = self._books
        for book in books:
            yield self._update(book, 0)
        heap = [(int(b.rng.expovariate(b.params.update_hz) * NS), i) for i, b in enumerate(books)]
        heapq.heapify(heap)
        heapreplace, update, log = heapq.heapreplace, self._update, math.log
        draws = [(b.rng.random, b.params.update_hz) for b in books]
        while True:
            t_ns, i = heap[0]
            rand, hz = draws[i]
            # rng.expovariate(hz), inlined (the generator's hottest loop): same draw, same value
            heapreplace(heap, (t_ns + max(1, int(-log(1.0 - rand()) / hz * NS)), i))
            self.now_ns = t_ns
            yield update(books[i], t_ns)

    def _update(self, book: _VenueBook, t_ns: int) -> BookEvent:
        if self._taken:
            self._apply_taken()
        fair = _advance_fair(book.fair, t_ns)
        mid = fair * (1.0 + self._advance_premium(book, t_ns))
        best_bid, best_ask = self._quote(book, mid)
        dis = self._dislocations.get(book.market)
        if dis is not None:
            if t_ns >= dis.until_ns:
                del self._dislocations[book.market]
            else:
                best_bid, best_ask = self._dislocated(book, dis, best_bid, best_ask)
        self._reladder(book, best_bid, best_ask)
        if book.fbids is None:
            return BookEvent(t_ns, book.venue, book.market, tuple(book.bids), tuple(book.asks))
        n = self.float_depth
        return BookEvent(t_ns, book.venue, book.market, tuple(book.bids), tuple(book.asks),
                         tuple(book.fbids[:n]), tuple(book.fasks[:n]))

    def _advance_premium(self, book: _VenueBook, t_ns: int) -> float:
        p, rng, exp, sqrt = book.params, book.rng, math.exp, math.sqrt
        dt = (t_ns - book.last_ns) / NS
        book.last_ns = t_ns
        decay = exp(-p.noise_reversion_per_s * dt)
        std = p.noise_bps * 1e-4
        book.premium = book.premium * decay + std * sqrt(1.0 - decay * decay) * rng.gauss(0.0, 1.0)
        if p.gap_std_bps:
            decay = exp(-dt / p.gap_reversion_s)
            book.slow = book.slow * decay + _slow_std(p) * sqrt(1.0 - decay * decay) * rng.gauss(0.0, 1.0)
        if rng.random() < 1.0 - exp(-p.gaps_per_min / 60.0 * dt):
            amp = _log_uniform(rng, p.gap_bps_min, p.gap_bps_max) * 1e-4
            tau = _log_uniform(rng, p.gap_life_min_s, p.gap_life_max_s) * NS
            book.jumps.append(_Jump(amp if rng.random() < 0.5 else -amp, t_ns, tau))
        total = book.premium + book.slow
        if book.jumps:
            live = []
            for jump in book.jumps:
                value = jump.amp * math.exp(-(t_ns - jump.t0_ns) / jump.tau_ns)
                if abs(value) > 1e-6:  # 0.01 bps: below every tick, so gone
                    live.append(jump)
                    total += value
            book.jumps = live
        return total

    def _quote(self, book: _VenueBook, mid: float) -> tuple[int, int]:
        grid = book.grid
        mid_sats = max(1, int(mid * 1e8))
        low, high, tick = book.band
        if not low <= mid_sats < high:
            low, high, tick = book.band = grid.band_of(mid_sats)
        # Half the spread on each side of the mid, then snap outwards onto the grid (plain
        # arithmetic inside the mid's tick band; the grid's floor/ceil across a band bound).
        best_bid = max(tick, mid_sats - (book.spread_ticks * tick) // 2)
        best_bid = best_bid - best_bid % tick if best_bid >= low else grid.floor(best_bid)
        best_ask = best_bid + tick if low <= best_bid and best_bid + tick < high else grid.ceil(best_bid + 1)
        if book.spread_ticks > 1:
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
        depth, rng, resized = self.config.depth, book.rng, book.params.resized_per_update
        book.bids, book.fbids = bids, fbids = _reside(book, book.bids, book.fbids, best_bid, depth, True)
        book.asks, book.fasks = asks, fasks = _reside(book, book.asks, book.fasks, best_ask, depth, False)
        rand, scale = rng.random, book.level_krw * 1e16  # _size, inlined
        for side, fside in ((bids, fbids), (asks, fasks)):
            for _ in range(resized):
                i = int(rand() * len(side))
                price = side[i][0]
                sats = int(scale / price * _SIZE_FACTORS[int(rand() * _SIZE_QUANTILES)])
                if not 0 < sats < _JSON_EXACT:
                    sats = _json_size(sats)
                side[i] = (price, sats)
                if fside is not None and i < len(fside):
                    fside[i] = (price / FLOAT_SCALE, sats / FLOAT_SCALE)

    def _apply_taken(self) -> None:
        while self._taken:
            venue, market, side, price, size = self._taken.popleft()
            book = self._by_key.get((venue, market))
            if book is None:
                continue
            levels, floats = (book.bids, book.fbids) if side == "bid" else (book.asks, book.fasks)
            for i, (level_price, level_size) in enumerate(levels):
                if level_price == price:
                    if level_size > size:
                        levels[i] = (price, level_size - size)
                        if floats is not None and i < len(floats):
                            floats[i] = (price / FLOAT_SCALE, (level_size - size) / FLOAT_SCALE)
                    else:
                        del levels[i]
                        if floats is not None and i < len(floats):
                            del floats[i]  # still a prefix; the next update extends it
                    break


def _reside(book: _VenueBook, levels: list[tuple[int, int]], floats: list | None, best: int,
            depth: int, bids: bool) -> tuple[list[tuple[int, int]], list | None]:
    """One side moved to its new best price ``best``: drop the levels the new touch crossed (a
    prefix: sides are sorted best first), insert fresh levels from ``best`` towards the old top
    so the best level exists, then cut to ``depth`` levels or add levels beyond the last one
    until there are ``depth``. The kept levels are a slice of the old ones, so the float mirror
    (``floats``, if kept) converts only the fresh levels."""
    n, cut = len(levels), 0
    if bids:
        while cut < n and levels[cut][0] > best:
            cut += 1
    else:
        while cut < n and levels[cut][0] < best:
            cut += 1
    if cut < n and levels[cut][0] == best:
        top = []
    else:
        top = [(best, _size(book, best))]
        if cut < n:
            top += _walk(book, best, bids, depth - 1, levels[cut][0])
    keep = n - cut
    if len(top) + keep >= depth:
        keep, tail = depth - len(top), []
    else:
        last = levels[n - 1][0] if keep else top[-1][0]
        tail = _walk(book, last, bids, depth - len(top) - keep)
    out = top + levels[cut:cut + keep] if top else levels[cut:cut + keep]
    if tail:
        out += tail
    if floats is None:
        return out, None
    # the mirror is a prefix: at least the top ``float_depth`` levels, as floats
    n = book.float_depth
    fout = [(p / FLOAT_SCALE, z / FLOAT_SCALE) for p, z in top[:n]] if top else []
    if len(fout) < n:
        fout += floats[cut:cut + keep]
        if len(fout) < n and len(fout) < len(out):
            fout += [(p / FLOAT_SCALE, z / FLOAT_SCALE) for p, z in out[len(fout):n]]
    return out, fout


def _walk(book: _VenueBook, price: int, down: bool, count: int, stop: int | None = None) -> list:
    """Up to ``count`` fresh levels beyond ``price``, 1-3 ticks apart (70/20/10%), ending before
    ``stop`` or the grid's smallest price. Inside one tick band a step is plain arithmetic;
    across a band bound it goes through the grid, which keeps every price on tick. (The hot
    loop of the generator: ``_size`` is inlined.)"""
    grid, rand = book.grid, book.rng.random
    low, high, tick = grid.band_of(price)
    scale, factors, quantiles = book.level_krw * 1e16, _SIZE_FACTORS, _SIZE_QUANTILES
    out: list[tuple[int, int]] = []
    while len(out) < count:
        r = rand()
        gap = 1 if r < 0.7 else (2 if r < 0.9 else 3)
        new = price - gap * tick if down else price + gap * tick
        if not low < new < high:  # may cross a band bound: ask the grid
            new = grid.below(price, gap) if down else grid.above(price, gap)
            if down and new >= price:
                break  # the smallest price the grid has
            low, high, tick = grid.band_of(new)
        if stop is not None and (new <= stop if down else new >= stop):
            break
        price = new
        sats = int(scale / new * factors[int(rand() * quantiles)])
        out.append((new, sats if 0 < sats < _JSON_EXACT else _json_size(sats)))
    return out


def _size(book: _VenueBook, price: int) -> int:
    """Lognormal size around ``level_krw`` worth at ``price`` (1e16 = sats of KRW x sats of coin)."""
    sats = int(book.level_krw * 1e16 / price * _SIZE_FACTORS[int(book.rng.random() * _SIZE_QUANTILES)])
    return sats if 0 < sats < _JSON_EXACT else _json_size(sats)


def _json_size(sats: int) -> int:
    """At least 1 sat, and at most 15 significant digits (exact as a JSON float)."""
    if sats < 1:
        return 1
    quantum = 10 ** (len(str(sats)) - 15)
    return max(quantum, sats - sats % quantum)


def _advance_fair(fair: _Fair, t_ns: int) -> float:
    dt = (t_ns - fair.t_ns) / NS
    if dt > 0:
        sigma = fair.sigma
        z = fair.rng.gauss(0.0, 1.0)
        fair.value *= math.exp(sigma * math.sqrt(dt) * z - 0.5 * sigma * sigma * dt)
        fair.t_ns = t_ns
    return fair.value


def _slow_std(params: MarketParams) -> float:
    """Per-venue std of the slow premium, so that the venues' difference has ``gap_std_bps``."""
    return params.gap_std_bps * 1e-4 / math.sqrt(2.0)


def _ticks_between(grid: TickGrid, low: int, high: int) -> int:
    return (high - low) // grid.tick(low) if high > low else 0


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))

