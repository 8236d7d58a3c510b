"""``run_backtest``: the engine's own decision code on simulated time, then the oracles.

One run builds what ``karb.engine`` builds (``BookBoard``, ``Risk`` with its ``Ledger``,
``Inventory``, ``Journal``, ``Executor`` with its placer and unwinder, ``Strategy``) on a
``ManualClock``, with a ``ModelVenue`` per venue (``karb.backtest.venue``) and the
``InlineRunner`` as leg path (``karb.backtest.runner``). No thread runs the strategy; the
driver loop does, in simulated-time order:

1. take the next book event of the source, move the clock to its time, apply it to the board
   (``karb.backtest.sources``; the generator's books as built, a recording's frames through
   the feed decoder);
2. ``Strategy.evaluate(now, changed_only=True)``, or a full pass when ``wait_timeout_ms`` of
   simulated time passed since the last one (as the strategy thread does);
3. the runner drains the legs the pass submitted: each leg's arrival is drawn, the stream is
   advanced to each arrival in turn (books change, nothing is decided) and the leg filled
   there; then the executor's leg tasks run: placement, the poll that sees the fill (the
   placer's pause advances simulated time and the stream), the ledger, the unwind (its orders
   travel and fill the same way), booking and the journal.

So arrivals are in a single timeline: the heap of pending arrivals is the runner's sorted
plan, and the stream is advanced to each before its leg fills. While a trade is in flight the
strategy does not decide (live, a spare pair of leg threads could trade another market):
trades take a few simulated milliseconds, so this costs little and is stated here.

Oracles (``BacktestOptions.oracle``): the oracle is the same run with zero latency and no
competitors, and nothing else changed: the strategy's own threshold (and inventory skew),
balances and limits. It decides as the backtest does but its legs fill at the signal's books,
so ``capture = realised / oracle`` measures what execution (latency, competitors, partial
legs and their unwinds) loses: about 100% or less. (A break-even oracle would not be an upper
bound: under inventory limits it spends coin on small edges a threshold keeps for larger
ones.) The unconstrained run is the oracle with inventory lifted: balances ``UNCONSTRAINED``
times larger, no position limit, no bands, no skew; ``unconstrained - oracle`` is what
inventory costs.

Processes (``BacktestOptions.parallel``): on the generator, a feeder process generates the
stream once and the three runs (this process and two workers) read it from pipes
(``karb.backtest.shared``); on a recording, the oracle runs go to a process pool and each
reads the recording itself. Serially, each run generates or reads its own. Same numbers.

Determinism: the generator, the latency draws and the signal ids are seeded; every time
stamp is the ``ManualClock``'s.
"""
from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import sys
import signal
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any, TextIO

from karb.backtest.runner import InlineRunner
from karb.backtest.shared import FedSource, feed
from karb.backtest.sources import RecordingSource, SimSource
from karb.backtest.venue import ModelVenue, Wire
from karb.backtest.wallet import BacktestRebalance
from karb.book import BookBoard
from karb.clock import NS_PER_MS, NS_PER_S, ManualClock
from karb.config import Config
from karb.execution import Executor
from karb.inventory import Inventory
from karb.backtest.journal import InlineJournal
from karb.model import Balance, Venue, base_currency
from karb.risk import Risk, taker_fee
from karb.rules import RulesBook
from karb.schema import ConfigError
from karb.sim.config import SimConfig, SimMarketConfig
from karb.strategy import Strategy

ORIGIN_NS = NS_PER_S  # the ManualClock's monotonic start
WALL_ORIGIN_NS = 1_750_000_000 * NS_PER_S  # 2025-06-15 15:06:40 UTC: simulated wall start
START_COIN_KRW = Decimal("10000000")  # other coins: this much KRW worth (the sim's rule)
UNCONSTRAINED = Decimal(1_000_000)
INVENTORY_EVERY_NS = 600 * NS_PER_S
HIST_BUCKET_BPS = 1.0


@dataclass(frozen=True)
class BacktestOptions:
    days: float | None = None  # sim source only; None: ``backtest.days``
    data: str | None = None  # a recording file or directory instead of the generator
    out: str | None = None  # journal.sqlite here; else a temporary directory
    oracle: bool = True
    progress: TextIO | None = None  # progress lines; None: quiet
    parallel: bool = True  # the oracle runs in worker processes
    profile: str | None = None


@dataclass
class RunStats:
    """What one run measured (``summary`` is the dict the sweep table reads)."""

    summary: dict[str, Any]
    per_market: dict[str, dict[str, Any]]
    start_balances: dict[str, dict[str, str]]
    end_balances: dict[str, dict[str, str]]
    missed: dict[str, int]
    net_spread_hist: dict[str, Any]
    inventory: list[list]
    latency_ms: list[float]
    sim_seconds: float
    wall_seconds: float
    start_wall_ns: int
    end_wall_ns: int
    events: int
    bad_frames: int


@dataclass
class BacktestResult:
    config: Config
    options: BacktestOptions
    run: RunStats
    oracle: RunStats | None = None
    unconstrained: RunStats | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``backtest.json`` contract (see the module docstring of ``karb.commands.backtest``)."""
        c, r = self.config, self.run
        sim = c.sim or SimConfig()

        def oracle(stats: RunStats | None):
            if stats is None:
                return None
            return {"pnl_krw": stats.summary["pnl_krw"], "trades": stats.summary["trades"],
                    "per_market": {m: {"pnl_krw": v["pnl_krw"], "trades": v["trades"]}
                                   for m, v in stats.per_market.items()}}

        return {
            "seed": sim.seed, "profile": getattr(sim, "profile", "demo") if not self.options.data else "recording",
            "data": self.options.data,
            "days": r.sim_seconds / 86400 if self.options.data else (
                self.options.days if self.options.days is not None else c.backtest.days), "markets": list(c.markets),
            "sim_seconds": r.sim_seconds, "wall_seconds": r.wall_seconds,
            "speed": r.sim_seconds / r.wall_seconds if r.wall_seconds else None,
            "events": r.events, "bad_frames": r.bad_frames,
            "start_wall_ns": r.start_wall_ns, "end_wall_ns": r.end_wall_ns,
            "threshold_bps": c.strategy.threshold_bps,
            "latency_config_ms": {v.value: [getattr(c.backtest.latency, v.value).min_ms,
                                            getattr(c.backtest.latency, v.value).max_ms] for v in Venue},
            "competitor_share": c.backtest.competitor_share,
            "start_balances": r.start_balances, "end_balances": r.end_balances,
            "oracle": oracle(self.oracle), "unconstrained": oracle(self.unconstrained),
            "per_market": r.per_market, "missed": r.missed, "net_spread_hist": r.net_spread_hist,
            "inventory": r.inventory, "latency_ms": r.latency_ms, "summary": self.summary,
        }


def run_backtest(config: Config, options: BacktestOptions) -> BacktestResult:
    """The backtest of ``config`` (and its oracles unless ``options.oracle`` is False).

    With ``options.parallel`` the two oracle runs go to two worker processes while this one
    runs the backtest, and on the generator a feeder process generates the stream for all
    three (the machine's cores; a sweep, already one process per point, passes False). The
    result is the same either way."""
    check(config)
    out = Path(options.out) if options.out else None
    start = start_balances(config, options)
    quiet = dataclasses.replace(options, progress=None, out=None)
    with tempfile.TemporaryDirectory(prefix="karb-backtest-") as tmp:
        where = out or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        jobs = []
        if options.oracle and config.backtest.oracle:
            jobs = [(oracle_config(config), quiet, Path(tmp) / "oracle.sqlite", None, "oracle", start,
                     True),
                    (unconstrained_config(oracle_config(config)), quiet,
                     Path(tmp) / "unconstrained.sqlite", None, "unconstrained",
                     _scaled(start, UNCONSTRAINED), True)]
        if jobs and options.parallel and not options.data:
            run, oracle, unconstrained = _fed_runs(config, options, where / "journal.sqlite", jobs,
                                                   start)
        elif jobs and options.parallel:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=len(jobs), mp_context=context,
                                     initializer=_quiet_worker) as pool:
                futures = [pool.submit(_simulate, *job) for job in jobs]
                run = _simulate(config, options, where / "journal.sqlite", options.progress,
                                "backtest", start)
                oracle, unconstrained = (f.result() for f in futures)
        else:
            run = _simulate(config, options, where / "journal.sqlite", options.progress, "backtest",
                            start)
            oracle, unconstrained = (_simulate(*job) for job in jobs) if jobs else (None, None)
    summary = dict(run.summary)
    summary["capture"] = _capture(Decimal(run.summary["pnl_krw"]),
                                  Decimal(oracle.summary["pnl_krw"]) if oracle else None)
    summary["oracle_pnl_krw"] = oracle.summary["pnl_krw"] if oracle else None
    summary["unconstrained_pnl_krw"] = unconstrained.summary["pnl_krw"] if unconstrained else None
    return BacktestResult(config, options, run, oracle, unconstrained, summary)


def _fed_runs(config: Config, options: BacktestOptions, journal_path: Path, jobs: list,
              start: dict[str, dict[str, str]]) -> tuple[RunStats, ...]:
    """The backtest here and the oracle runs in two worker processes, all three reading the
    one stream a feeder process generates (``karb.backtest.shared``)."""
    context = multiprocessing.get_context("spawn")
    feeds = [context.Pipe(duplex=False) for _ in range(1 + len(jobs))]
    results = [context.Pipe(duplex=False) for _ in jobs]
    board_depth = max(config.venues.upbit.ws_levels, config.venues.bithumb.ws_levels)
    feeder = context.Process(target=feed, name="backtest-feed", daemon=True, args=(
        config.sim or SimConfig(), list(config.markets), board_depth,
        _stream_ns(config, options), [send for _, send in feeds]))
    workers = [context.Process(target=_fed_worker, name=f"backtest-{job[4]}", daemon=True,
                               args=(job, feeds[i + 1][0], results[i][1]))
               for i, job in enumerate(jobs)]
    processes = [feeder, *workers]
    try:
        for process in processes:
            process.start()
        for receive, send in feeds:  # the children hold their ends now
            send.close()
        for (receive, _), (_, send) in zip(feeds[1:], results):
            receive.close()
            send.close()
        run = _simulate(config, options, journal_path, options.progress, "backtest", start,
                        feed=feeds[0][0])
        outcomes = []
        for (receive, _), job in zip(results, jobs):
            try:
                outcome = receive.recv()
            except EOFError:
                outcome = RuntimeError(f"the {job[4]} run's process died")
            if isinstance(outcome, BaseException):
                raise outcome
            outcomes.append(outcome)
        for process in processes:
            process.join(10)
        return (run, *outcomes)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()


def _fed_worker(job: tuple, feed_connection, result_connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent ends this process
    _quiet_worker()
    try:
        outcome = _simulate(*job, feed=feed_connection)
    except BaseException as exc:  # noqa: BLE001 - the parent raises it
        outcome = exc
    result_connection.send(outcome)


def _stream_ns(config: Config, options: BacktestOptions) -> int:
    """How much of the generator's stream a run reads (``--days`` or ``backtest.days``)."""
    days = options.days if options.days is not None else config.backtest.days
    return int(days * 86400 * NS_PER_S)


def _quiet_worker() -> None:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="ERROR")


def check(config: Config) -> None:
    """Cross-checks the schema cannot express; raises ``ConfigError`` naming the key."""
    for venue in Venue:
        lat = getattr(config.backtest.latency, venue.value)
        if lat.min_ms < 0 or lat.max_ms < lat.min_ms:
            raise ConfigError(f"backtest.latency.{venue.value}: need 0 <= min_ms <= max_ms, "
                              f"was {lat.min_ms}..{lat.max_ms}")


def oracle_config(config: Config) -> Config:
    """Zero latency, no competitors; the strategy's own threshold, balances and limits."""
    zero = dataclasses.replace(config.backtest.latency.upbit, min_ms=0.0, max_ms=0.0)
    latency = dataclasses.replace(config.backtest.latency, upbit=zero, bithumb=zero)
    return dataclasses.replace(
        config, backtest=dataclasses.replace(config.backtest, latency=latency, competitor_share=0.0))


def unconstrained_config(config: Config) -> Config:
    """Inventory lifted: no bands, no skew, no position limit (balances are scaled by the caller)."""
    big = Decimal(10) ** 18
    return dataclasses.replace(
        config, inventory=dataclasses.replace(config.inventory, bands={}, floor_share=0.0, skew_bps=0.0),
        risk=dataclasses.replace(config.risk, max_position_krw=big, max_position={}))


def _capture(realised: Decimal, oracle: Decimal | None) -> str | None:
    if oracle is None or oracle <= 0:
        return None  # a ratio against nothing (or a loss) is not a capture
    return str((realised / oracle).quantize(Decimal("0.0001")))


def _scaled(balances: dict[str, dict[str, str]], factor: Decimal) -> dict[str, dict[str, str]]:
    return {v: {c: str(Decimal(a) * factor) for c, a in b.items()} for v, b in balances.items()}


class _SimClock(ManualClock):
    """The run's ``ManualClock``; only the driver thread moves it (``move_to``), so a read of
    the monotonic clock needs no lock (one attribute: atomic), a move still takes it."""

    def monotonic_ns(self) -> int:
        return self._mono

    def move_to(self, t_ns: int) -> None:
        """Both clocks forward to monotonic ``t_ns``; an earlier time is now, no move."""
        with self._lock:
            step = t_ns - self._mono
            if step > 0:
                self._mono = t_ns
                self._wall += step


END = object()  # ``_Stream.step``'s end of the stream


class _Stream:
    """The source's events in time order; ``step`` for the loop, ``advance_to`` for legs."""

    def __init__(self, source, clock: _SimClock, end_ns: int | None):
        self.source = source
        self.clock = clock
        self.end_ns = end_ns if end_ns is not None else 1 << 62
        self._events = source.events()
        self._apply = source.apply
        self._market_of = source.market_of
        self._next = next(self._events, None)
        self.count = 0

    def step(self):
        """Apply the next event; return its market (None: any, a recording's frame), or
        ``END``."""
        event = self._next
        if event is None or event[0] > self.end_ns:
            return END
        t_ns, payload = event
        self.clock.move_to(t_ns)
        self._apply(payload, t_ns)
        self.count += 1
        self._next = next(self._events, None)
        return self._market_of(payload)

    def advance_to(self, t_ns: int) -> None:
        end, move = self.end_ns, self.clock.move_to
        while self._next is not None and self._next[0] <= t_ns and self._next[0] <= end:
            t, payload = self._next
            move(t)
            self._apply(payload, t)
            self.count += 1
            self._next = next(self._events, None)
        move(t_ns)


def start_balances(config: Config, options: BacktestOptions) -> dict[str, dict[str, str]]:
    """Per venue: the sim's ``start_krw`` and ``start_btc``; other coins their market's
    ``start_coin``, else ``START_COIN_KRW`` worth at the sim's price (a recording: the first
    mid price it shows)."""
    sim = config.sim or SimConfig()
    if options.data:
        prices = _first_prices(config, options.data)
    else:
        prices = {m: (sim.markets.get(m) or SimMarketConfig(price=Decimal(1000))).price
                  for m in config.markets}
    out = {}
    for venue in Venue:
        vcfg = sim.venues.upbit if venue is Venue.UPBIT else sim.venues.bithumb
        balances = {"KRW": str(vcfg.start_krw)}
        for market in config.markets:
            coin = base_currency(market)
            mc = sim.markets.get(market)
            if coin == "BTC":
                balances[coin] = str(vcfg.start_btc)
            elif mc is not None and mc.start_coin is not None:
                balances[coin] = str(mc.start_coin)
            elif market in prices:
                balances[coin] = str((START_COIN_KRW / prices[market]).quantize(Decimal("0.0001"), ROUND_DOWN))
        out[venue.value] = balances
    return out


def _first_prices(config: Config, data: str) -> dict[str, Decimal]:
    """Mid prices from the first valid books of a recording (for the start-balance rule)."""
    board = BookBoard(config.markets, depth=1)
    source = RecordingSource(data, config, board)
    prices: dict[str, Decimal] = {}
    for n, (t_ns, payload) in enumerate(source.events()):
        source.apply(payload, t_ns)
        for market in config.markets:
            if market not in prices:
                view = board.get(Venue.UPBIT, market).view
                if view.valid and view.bids and view.asks:
                    prices[market] = Decimal(repr((view.bids[0][0] + view.asks[0][0]) / 2))
        if len(prices) == len(config.markets) or n > 100_000:
            break
    return prices


def _simulate(config: Config, options: BacktestOptions, journal_path: Path, progress: TextIO | None,
              label: str, start_balances: dict[str, dict[str, str]], oracle: bool = False,
              feed=None) -> RunStats:
    """One run; ``feed``: read the generator's stream from the shared feeder's connection;
    ``oracle``: an oracle run, read for its outcomes only: no net spread histogram, and a
    journal without the per-order rows (``InlineJournal.outcomes_only``)."""
    sim = config.sim or SimConfig()
    bt = config.backtest
    clock = _SimClock(monotonic_ns=ORIGIN_NS, wall_ns=WALL_ORIGIN_NS)
    fees = {v: (config.venues[v].taker_fee, config.venues[v].maker_fee) for v in Venue}
    rules = RulesBook.fallback(config.markets, fees)
    board = BookBoard(config.markets, depth=max(config.venues.upbit.ws_levels,
                                                 config.venues.bithumb.ws_levels))
    if options.data:
        source = RecordingSource(options.data, config, board)
        end_ns = None
    elif feed is not None:
        source = FedSource(feed, config.markets, board, ORIGIN_NS, WALL_ORIGIN_NS)
        end_ns = ORIGIN_NS + _stream_ns(config, options)
    else:
        source = SimSource(sim, config.markets, board, ORIGIN_NS, WALL_ORIGIN_NS)
        end_ns = ORIGIN_NS + _stream_ns(config, options)
    start = start_balances
    stream = _Stream(source, clock, end_ns)
    if options.data and stream._next is not None:  # a recording's clock starts at its first frame
        clock.move_to(stream._next[0])
    wire = Wire({v: (getattr(bt.latency, v.value).min_ms, getattr(bt.latency, v.value).max_ms)
                 for v in Venue}, sim.seed, stream.advance_to, clock, bt.latency_samples)
    clients = {v: ModelVenue(v, board, rules, clock, wire, bt.competitor_share, bt.competitor_levels)
               for v in Venue}
    runner = InlineRunner(clients, wire)

    def pause(seconds: float) -> None:  # the placer's poll interval, in simulated time
        stream.advance_to(clock.monotonic_ns() + int(seconds * NS_PER_S))

    journal = InlineJournal(journal_path, clock, outcomes_only=oracle)
    risk = Risk(config, rules, clock)
    inventory = Inventory(config.inventory, risk.ledger)
    executor = Executor(clients, rules, risk, journal, config, clock, runner=runner, pause=pause)
    # signal ids (and the order ids made from them) in order of issue: every journal insert
    # then lands at the end of its index (random ids cost ~30 % more SQL per trade, growing
    # as the table outgrows the page cache)
    ids = itertools.count(1)
    strategy = Strategy(board, rules, risk, inventory, config, clock, on_signal=executor.submit,
                        new_id=lambda: f"{label[0]}{next(ids):019d}")
    for venue in Venue:
        balances = {c: Balance(c, Decimal(a)) for c, a in start[venue.value].items()}
        risk.ledger.load(venue, balances)
        clients[venue].load(balances)
    inventory.set_targets({v: {c: Decimal(a) for c, a in start[v.value].items()} for v in Venue})
    rebalance = BacktestRebalance(config, clients, board, rules, risk, inventory, journal, clock)  # rebalance
    if journal_path.exists():
        journal_path.unlink()
    journal.start()
    try:
        risk.rebuild(journal)
        executor.start()
        hist = _Histogram(config, rules, HIST_BUCKET_BPS)
        inventory_samples: list[list] = []
        wall0 = time.monotonic()
        t0 = clock.monotonic_ns()
        full_every = config.strategy.wait_timeout_ms * NS_PER_MS
        last_full = t0
        full_state: tuple = ()
        next_sample = t0
        next_progress = wall0 + bt.progress_s
        total_ns = (end_ns - t0) if end_ns is not None else None
        evaluate = strategy.evaluate
        last_net = strategy.last_net_bps
        markets = config.markets
        step, add = stream.step, (_skip_histogram if oracle else hist.add)
        while (market := step()) is not END:
            now = clock._mono
            if now - last_full >= full_every:
                # the strategy thread's periodic full pass; it can only find something new
                # when a cooldown ended, a trade moved balances or risk's blocking changed
                state = (executor.trades, risk.blocked())
                full = state != full_state or strategy.cooldown_ended(last_full, now)
                last_full, full_state = now, state
                evaluate(now, changed_only=not full)
            else:
                evaluate(now, changed_only=True, markets=(market,) if market else None)
            if runner._tasks:
                runner.drain()
            rebalance.tick(now)  # rebalance: every rebalance.check_s of simulated time
            if market:
                add(market, last_net)
            else:
                for m in markets:
                    add(m, last_net)
            if now >= next_sample:
                next_sample = now + INVENTORY_EVERY_NS
                _sample(inventory_samples, risk, clock)
                if progress is not None and time.monotonic() >= next_progress:
                    next_progress = time.monotonic() + bt.progress_s
                    _progress(progress, label, now - t0, total_ns, time.monotonic() - wall0)
            elif progress is not None and stream.count % 4096 == 0 and time.monotonic() >= next_progress:
                next_progress = time.monotonic() + bt.progress_s
                _progress(progress, label, now - t0, total_ns, time.monotonic() - wall0)
        runner.drain()
        _sample(inventory_samples, risk, clock)
        executor.stop(5.0)
        wall_s = time.monotonic() - wall0
        sim_s = (clock.monotonic_ns() - t0) / NS_PER_S
        if progress is not None:
            print(f"{label}: done, {sim_s:,.0f} sim s in {wall_s:,.1f} wall s = "
                  f"{sim_s / wall_s if wall_s else 0:,.0f} sim s / wall s ({stream.count:,} book events)",
                  file=progress, flush=True)
        journal.flush()
        summary, per_market = _from_journal(journal, risk)
        summary.update(rebalance.summary(Decimal(summary["pnl_krw"])))  # rebalance
    finally:
        journal.stop()
    missed = Counter(strategy.skipped)
    for kind, n in strategy.refused.items():
        missed[f"refused: {kind}"] += n
    end = {v.value: {c: str(b.free) for c, b in clients[v].get_balances().items()} for v in Venue}
    return RunStats(summary, per_market, start, end, dict(missed), hist.to_json(), inventory_samples,
                    list(wire.samples), sim_s, wall_s, WALL_ORIGIN_NS, clock.wall_ns(),
                    stream.count, source.bad_frames)


def _skip_histogram(market: str, last_net: dict) -> None:
    pass


class _Histogram:
    """Best net spread (bps) per evaluation of a market with a positive gross gap."""

    def __init__(self, config: Config, rules: RulesBook, width: float):
        self.width = width
        self.counts: Counter[float] = Counter()
        self._fees = {m: 1e4 * float(taker_fee(config, rules, Venue.UPBIT, m)
                                     + taker_fee(config, rules, Venue.BITHUMB, m))
                      for m in config.markets}
        self._keys = {m: ((m, "upbit_sell"), (m, "bithumb_sell")) for m in config.markets}

    def add(self, market: str, last_net: dict) -> None:
        a, b = self._keys[market]
        x, y = last_net.get(a), last_net.get(b)
        best = x if y is None else (y if x is None or y > x else x)
        if best is not None and best > -self._fees[market]:
            self.counts[(best // self.width) * self.width] += 1

    def to_json(self) -> dict[str, Any]:
        return {"bucket_bps": self.width,
                "counts": {f"{k:g}": n for k, n in sorted(self.counts.items())}}


def _sample(samples: list[list], risk: Risk, clock: ManualClock) -> None:
    wall = clock.wall_ns()
    for (venue, currency), (free, held) in sorted(risk.ledger.snapshot().items()):
        samples.append([wall, venue.value, currency, str(free + held)])


def _progress(out: TextIO, label: str, done_ns: int, total_ns: int | None, wall_s: float) -> None:
    speed = done_ns / NS_PER_S / wall_s if wall_s else 0.0
    eta = f", ETA {(total_ns - done_ns) / NS_PER_S / speed:,.0f} s" if total_ns and speed else ""
    print(f"{label}: simulated {done_ns / NS_PER_S / 3600:,.2f} h, {speed:,.0f} sim s / wall s{eta}",
          file=out, flush=True)


def _from_journal(journal: InlineJournal, risk: Risk) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    rows = journal.query("SELECT market, status, realised_krw, fees_krw, done_ns FROM signals "
                         "WHERE status IS NOT NULL ORDER BY done_ns, id")
    per_market: dict[str, dict[str, Any]] = {}
    equity = peak = drawdown = Decimal(0)
    fees_total = Decimal(0)
    for row in rows:
        realised = Decimal(row["realised_krw"] or 0)
        fees = Decimal(row["fees_krw"] or 0)
        m = per_market.setdefault(row["market"], {"pnl_krw": Decimal(0), "trades": 0, "filled": 0,
                                                  "fees_krw": Decimal(0)})
        m["pnl_krw"] += realised
        m["fees_krw"] += fees
        m["trades"] += 1
        m["filled"] += row["status"] == "filled"
        equity += realised
        fees_total += fees
        peak = max(peak, equity)
        drawdown = max(drawdown, peak - equity)
    legs = journal.query("SELECT state, COUNT(*) AS n FROM orders WHERE role IN ('buy', 'sell') "
                         "GROUP BY state")
    total_legs = sum(r["n"] for r in legs)
    filled_legs = sum(r["n"] for r in legs if r["state"] == "filled")
    summary = {
        "pnl_krw": str(equity), "trades": len(rows),
        "successes": sum(m["filled"] for m in per_market.values()),
        "leg_success_rate": (filled_legs / total_legs) if total_legs else None,
        "fees_krw": str(fees_total), "max_drawdown_krw": str(drawdown),
        "risk_state": risk.state.value,
    }
    return summary, {m: {k: (str(v) if isinstance(v, Decimal) else v) for k, v in d.items()}
                     for m, d in sorted(per_market.items())}


def sweep_job(base, overrides: dict[str, Any]) -> dict[str, Any]:
    """One sweep point (``karb.backtest.sweep``'s picklable job): the backtest's summary."""
    from loguru import logger

    from karb.backtest.sweep import config_for

    logger.remove()
    config = config_for(base, overrides)
    return run_backtest(config, BacktestOptions(parallel=False)).summary
