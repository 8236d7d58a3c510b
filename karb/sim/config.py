"""Configuration of the simulated venues (the ``sim:`` section of a config file).

Loaded through ``karb.schema`` (frozen dataclasses, unknown keys rejected, numbers non-negative
unless ``signed``). Fees come from ``venues.<v>.taker_fee/maker_fee`` of the main config, not
from here, so the engine and the sim agree on them.

``SimConfig``
    seed (7) - the market stream is a pure function of seed, this config and a start time;
    profile (demo) - ``demo`` (the knobs below, frequent big jumps: exercises the engine) or
        ``realistic`` (calibrated to public facts, per-market parameters; the demo-only knobs
        update_hz, gaps_per_min, gap_*, premium_* are then refused): see ``karb.sim.profiles``;
    host (127.0.0.1); ports (0 = any free port);
    update_hz (10.0) - book messages per second per market per venue (Poisson arrivals);
    depth (30) - levels per side, the venues' real depth;
    gaps_per_min (2.0) - premium jumps per market per venue per minute (cross-venue gaps);
    gap_bps_min/max (5 / 100) - size of a jump, log-uniform (0.05%-1%);
    gap_life_min_s/max_s (0.05 / 3.0) - e-folding time of a jump's decay, log-uniform;
    premium_vol_bps (1.0) / premium_reversion_per_s (2.0) - the venues' OU premium noise;
    refill_s (1.0) - how long liquidity taken by our fills stays missing from the book;
    bithumb_ts_window_ms (30000) - Bithumb 2.0 JWT ``timestamp`` accepted this far from now;
    bithumb_pending_page (100) - orders per ``GET /v2/orders/pending`` page (the venue's max);
    bithumb_pending_shape ("cursor") - that answer as ``next_key`` cursor pages (the venue since
        2026-07-09) or as the older bare ``list``;
    idle_timeout_s (120) - WebSocket closed after this long without client traffic;
    enforce_rate_limits (True) - 429 once a key/IP exceeds the venue's per-second group limit;
    replay_path (None) - recorded frames (see ``karb.sim.replay``) replace the generator;
    replay_speed (1.0) - playback speed multiplier;
    venues - per-venue latency, competition, starting balances, and how soon an order's fills
        show on a read (``fill_visible_ms``) and, on Bithumb, how long reads of a new order
        answer ``422 order_not_ready`` (``not_ready_ms``);
    faults - scheduled faults (same actions as the control endpoint);
    markets - per-market starting price, volatility, and overrides of the profile's
        per-market parameters (None = the profile's value; see ``karb.sim.profiles``);
    wallet - coin networks for deposits and withdrawals between the two venues
        (``karb.sim.wallet``): confirmation delay, network fee and minimum per asset.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

FaultAction = Literal[
    "drop_ws", "stall_ws", "rest_error", "delay_rest", "reject_next_order", "partial_next_ioc",
    "delay_orders", "lose_answer", "slow_registration", "garbage_frames", "future_frames",
    "dislocate", "clear",
]


@dataclass(frozen=True)
class SimMarketConfig:
    price: Decimal  # starting fair value, KRW
    vol_annual: float = 0.6  # fair-value volatility (annualised, lognormal)
    start_coin: Decimal | None = None  # starting coin balance; default ~10,000,000 KRW worth
    # Overrides of the profile's value for this market (None = the profile's; karb.sim.profiles).
    level_krw: float | None = field(default=None, metadata={"gt": 0})  # median KRW per level
    spread_ticks: int | None = field(default=None, metadata={"gt": 0})  # min best bid/ask distance
    update_hz: float | None = field(default=None, metadata={"gt": 0})  # messages/s per venue
    gap_std_bps: float | None = None  # stationary std of the slow cross-venue mid gap
    gap_reversion_s: float | None = field(default=None, metadata={"gt": 0})
    gaps_per_min: float | None = None  # premium jumps per venue per minute
    gap_bps_min: float | None = field(default=None, metadata={"gt": 0})
    gap_bps_max: float | None = field(default=None, metadata={"gt": 0})
    gap_life_min_s: float | None = field(default=None, metadata={"gt": 0})
    gap_life_max_s: float | None = field(default=None, metadata={"gt": 0})


@dataclass(frozen=True)
class SimVenueConfig:
    """Per-venue behaviour of the simulated exchange."""

    latency_ms: float = 0.0  # mean extra delay before an order is matched
    latency_jitter_ms: float = 0.0  # uniform +/- around the mean (never below zero)
    competition: float = field(default=0.0, metadata={"le": 1.0})  # chance the top level is gone
    start_krw: Decimal = Decimal("50000000")
    start_btc: Decimal = Decimal("1")
    rest_port: int = 0
    ws_port: int = 0
    legacy_ws_port: int = 0  # Bithumb legacy pubwss only
    # Reads of an order show it as accepted (state wait, no trades) for this long after it was
    # placed, as the venues do: Upbit's placement answer is that view (docs' example: wait,
    # trades_count 0) and the fill shows later on GET /v1/order. 0 shows fills at once.
    fill_visible_ms: float = 30.0
    # Bithumb only: reads of an order this young answer 422 order_not_ready. 0 disables.
    not_ready_ms: float = 15.0


@dataclass(frozen=True)
class SimVenuesConfig:
    upbit: SimVenueConfig = field(default_factory=SimVenueConfig)
    bithumb: SimVenueConfig = field(default_factory=SimVenueConfig)


@dataclass(frozen=True)
class SimFaultConfig:
    """One scheduled fault: ``action`` on ``venue`` at ``at_s`` seconds after start."""

    at_s: float
    action: FaultAction
    venue: Literal["upbit", "bithumb"] = "upbit"
    seconds: float = 0.0  # stall_ws / delay_rest / delay_orders / slow_registration / future_frames / dislocate
    status: int = 503  # rest_error
    count: int = 1  # rest_error / delay_rest / delay_orders / lose_answer / slow_registration / *_frames
    fraction: float = field(default=0.5, metadata={"le": 1.0})  # partial_next_ioc
    market: str = ""  # dislocate
    bps: float = 50.0  # dislocate; venue = the cheap venue


@dataclass(frozen=True)
class SimNetworkConfig:
    """One asset's withdrawal network on both sim venues (None = the wallet's default)."""

    net_type: str | None = None  # the venues' network code; default: the asset code
    fee: Decimal | None = None  # withdrawal fee in coin; default ``fee_krw`` worth at the start price
    minimum: Decimal | None = None  # smallest withdrawal; default 10 x the fee
    confirm_s: float | None = field(default=None, metadata={"gt": 0})  # withdrawal to credit


@dataclass(frozen=True)
class SimWalletConfig:
    confirm_s: float = field(default=600.0, metadata={"gt": 0})  # ten minutes, on the sim's clock
    fee_krw: Decimal = Decimal("1000")  # a network fee of about this much KRW, when not given
    networks: dict[str, SimNetworkConfig] = field(default_factory=dict)  # per asset (XRP, BTC...)


@dataclass(frozen=True)
class SimConfig:
    seed: int = 7
    profile: Literal["demo", "realistic"] = "demo"
    host: str = "127.0.0.1"
    control_port: int = 0
    update_hz: float = field(default=10.0, metadata={"gt": 0})
    depth: int = field(default=30, metadata={"gt": 0})
    gaps_per_min: float = 2.0
    gap_bps_min: float = field(default=5.0, metadata={"gt": 0})
    gap_bps_max: float = field(default=100.0, metadata={"gt": 0})
    gap_life_min_s: float = field(default=0.05, metadata={"gt": 0})
    gap_life_max_s: float = field(default=3.0, metadata={"gt": 0})
    premium_vol_bps: float = 1.0
    premium_reversion_per_s: float = field(default=2.0, metadata={"gt": 0})
    refill_s: float = 1.0
    bithumb_ts_window_ms: int = 30_000
    bithumb_pending_page: int = field(default=100, metadata={"gt": 0, "le": 100})
    bithumb_pending_shape: Literal["cursor", "list"] = "cursor"
    idle_timeout_s: float = field(default=120.0, metadata={"gt": 0})
    enforce_rate_limits: bool = True
    replay_path: str | None = None
    replay_speed: float = field(default=1.0, metadata={"gt": 0})
    venues: SimVenuesConfig = field(default_factory=SimVenuesConfig)
    faults: list[SimFaultConfig] = field(default_factory=list)
    markets: dict[str, SimMarketConfig] = field(default_factory=dict)
    wallet: SimWalletConfig = field(default_factory=SimWalletConfig)
