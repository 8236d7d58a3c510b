"""Engine configuration: frozen dataclasses loaded from YAML and validated on load.

``load_config(path)`` returns a ``Config`` or raises ``ConfigError`` whose message starts with
the key path (``risk.max_trade_krw: must not be negative, was -5``). Every default below is the
safe one: ``mode`` is ``dry_run`` unless a config says ``live`` (and the command line says
``--live`` too). Units are in the field names (``_s`` seconds, ``_ms`` milliseconds, ``_krw``
won, ``_bps`` basis points).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

import yaml

from karb.backtest.config import BacktestConfig
from karb.model import Venue
from karb.rebalance import config as rebalance_config
from karb.rebalance.config import RebalanceConfig
from karb.schema import ConfigError, build
from karb.secrets import ALERT_ENV_NAMES
from karb.sim import profiles
from karb.sim.config import SimConfig

POSITIVE = {"gt": 0}
_MARKET_RE = re.compile(r"^KRW-[A-Z0-9]{1,15}$")


@dataclass(frozen=True)
class RateLimitConfig:
    """Requests per second per endpoint group (a one-second window each, as the venues count).

    ``reserve_fraction`` of the private and order windows is kept for cancels and unwind
    orders, so a recovery is never throttled by ordinary traffic.
    """

    public_per_s: float = field(default=10.0, metadata=POSITIVE)
    private_per_s: float = field(default=30.0, metadata=POSITIVE)
    order_per_s: float = field(default=12.0, metadata=POSITIVE)  # Upbit since 2026-08-21 (8 before)
    reserve_fraction: float = field(default=0.25, metadata={"le": 0.9})
    retry_reads: int = 3  # a 429 / 5xx on a read is retried this many times with backoff


@dataclass(frozen=True)
class VenueConfig:
    """One venue's endpoints and limits. ``api`` matters for Bithumb only (``v2`` or ``legacy``).

    Fees are fractions (``0.0005`` = 0.05%). They are the fallback when the venue's own
    ``/v1/orders/chance`` cannot be read; the strategy uses the larger of the two.
    """

    rest_url: str = field(metadata={"schemes": ("http", "https")})
    ws_url: str = field(metadata={"schemes": ("ws", "wss")})
    taker_fee: Decimal
    maker_fee: Decimal
    api: Literal["v2", "legacy"] = "v2"  # REST/auth generation
    ws_api: Literal["v2", "legacy"] = "v2"  # Bithumb legacy = pubwss orderbookdepth deltas
    connect_timeout_s: float = field(default=3.05, metadata=POSITIVE)
    read_timeout_s: float = field(default=5.0, metadata=POSITIVE)
    ws_levels: int = field(default=15, metadata=POSITIVE)
    ws_format: Literal["DEFAULT", "SIMPLE"] = "DEFAULT"
    proxy: str | None = None  # e.g. http://10.0.0.5:3128; the environment's proxy vars are ignored
    # The private myOrder/myAsset WebSocket: first source of fills and balances (REST stays
    # the fallback and the check). Upbit, and Bithumb with api v2; ignored for legacy keys.
    private_stream: bool = True
    # None: the private path on ws_url's host (/websocket/v1/private Upbit, /websocket/v2/private
    # Bithumb); with a legacy pubwss ws_url, Bithumb's documented host.
    private_ws_url: str | None = field(default=None, metadata={"schemes": ("ws", "wss")})
    rate_limits: RateLimitConfig = field(default_factory=RateLimitConfig)


@dataclass(frozen=True)
class VenuesConfig:
    upbit: VenueConfig
    bithumb: VenueConfig

    def __getitem__(self, venue: Venue) -> VenueConfig:
        return self.upbit if venue is Venue.UPBIT else self.bithumb


@dataclass(frozen=True)
class FeedConfig:
    watchdog_s: float = field(default=60.0, metadata=POSITIVE)  # reconnect after this silence
    ping_interval_s: float = field(default=30.0, metadata=POSITIVE)  # venues drop idle at ~120 s
    backoff_initial_s: float = field(default=0.5, metadata=POSITIVE)
    backoff_max_s: float = field(default=30.0, metadata=POSITIVE)
    # Bithumb legacy deltas carry no sequence numbers, so a lost delta cannot be detected from
    # the stream: a REST snapshot every snapshot_check_s repairs the book (and counts a repair).
    # This bounds how long a phantom level can live; it costs markets / snapshot_check_s
    # public requests per second.
    snapshot_check_s: float = field(default=5.0, metadata=POSITIVE)
    record_path: str | None = None  # raw frames to a .jsonl.gz for replay


@dataclass(frozen=True)
class StrategyConfig:
    threshold_bps: float = field(default=30.0, metadata=POSITIVE)  # net edge after fees
    cooldown_ms: int = 1000  # per market, after a signal
    max_book_age_ms: int = field(default=2000, metadata=POSITIVE)
    max_skew_ms: int = field(default=500, metadata=POSITIVE)  # between the two books' receive times
    max_volume: dict[str, Decimal] = field(default_factory=dict)  # per market, in coin
    wait_timeout_ms: int = field(default=50, metadata=POSITIVE)  # idle wake-up of the strategy
    # A net edge above this is "too good to be true" (a bad frame, a stuck book): not traded
    # until a REST read of both books shows it too (karb.sanity).
    sanity_max_net_bps: float = field(default=300.0, metadata=POSITIVE)
    # Skip a market a venue flags (investment warning, caution or alert, delisting): the gap
    # that opens then may never close (karb.venue_state). Read every venue_state_s.
    skip_flagged_markets: bool = True
    venue_state_s: float = field(default=60.0, metadata=POSITIVE)


@dataclass(frozen=True)
class BandConfig:
    """Inventory band of one asset on one venue, in that asset's units."""

    min: Decimal = Decimal(0)
    max: Decimal | None = None


@dataclass(frozen=True)
class InventoryConfig:
    bands: dict[str, dict[str, BandConfig]] = field(default_factory=dict)  # venue -> asset -> band
    # threshold move half-way between target and floor (raise), and the most relief above target
    skew_bps: float = field(default=10.0, metadata={"ge": 0})
    floor_share: float = field(default=0.2, metadata={"ge": 0, "le": 0.95})  # default band: of start
    soft_share: float = field(default=0.5, metadata={"ge": 0, "le": 1})  # "low": suggest a transfer


@dataclass(frozen=True)
class RiskConfig:
    max_trade_krw: Decimal = Decimal("1000000")  # ~0.01 BTC: the first-live-run size
    max_position_krw: Decimal = Decimal("20000000")  # net coin exposure across venues, per asset
    max_position: dict[str, Decimal] = field(default_factory=dict)  # per asset, coin units
    daily_loss_limit_krw: Decimal = Decimal("200000")
    max_drawdown_krw: Decimal = Decimal("300000")
    max_stale_s: float = field(default=300.0, metadata=POSITIVE)  # halt after this long on stale data
    circuit_failures: int = field(default=5, metadata=POSITIVE)  # failures within circuit_window_s
    circuit_window_s: float = field(default=300.0, metadata=POSITIVE)
    circuit_reset_s: float = field(default=30.0, metadata=POSITIVE)
    halt_after_failures: int = field(default=10, metadata=POSITIVE)  # consecutive: halt, not just open
    kill_switch_file: str = "var/KILL"


@dataclass(frozen=True)
class ExecutionConfig:
    leg_type: Literal["ioc_limit", "market"] = "ioc_limit"
    workers: int = field(default=4, metadata={"ge": 2, "why": "a trade fires both legs at once"})
    lookup_attempts: int = field(default=5, metadata=POSITIVE)  # after a timeout, by client id
    unwind_attempts: int = 3
    unwind_tolerance_bps: float = 30.0  # how far past the signal price a retry may go
    unwind_loss_cap_krw: Decimal = Decimal("50000")
    residual_tolerance_krw: Decimal = Decimal("5000")  # exposure below this is "flat"
    # Python's GIL switch interval while the engine runs (default 5 ms). A leg thread woken by
    # the strategy waits up to this long for a busy thread to yield the GIL; lower sends legs
    # sooner at a small CPU cost (tools/soak.py measures both).
    gil_switch_interval_ms: float = field(default=0.5, metadata=POSITIVE)
    # Re-warm every leg thread's venue connections when idle this long (venues close idle
    # keep-alive connections; a cold one costs the next order a TCP/TLS handshake). 0: never.
    keepalive_s: float = 30.0
    fill_timeout_s: float = field(default=5.0, metadata=POSITIVE)  # follow a leg to a final state
    poll_interval_ms: int = field(default=20, metadata=POSITIVE)  # first poll / lookup backoff
    # With a private stream up, a leg waits for its order's events; without one for this long
    # it asks REST (and again after every further silence of this length).
    stream_fallback_ms: int = field(default=500, metadata=POSITIVE)
    # A leg still not final after its fill timeout is possible exposure: the leg-resolver keeps
    # looking it up this long (backoff) before it halts trading for a human to look.
    resolve_timeout_s: float = field(default=300.0, metadata=POSITIVE)
    # An order the venue has not heard of is "never placed" only once this long has passed since
    # it was journalled (venues can be slow to register orders): live, and after a restart.
    not_found_window_s: float = 30.0


@dataclass(frozen=True)
class JournalConfig:
    path: str = "var/karb.sqlite"


@dataclass(frozen=True)
class LogConfig:
    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    file: str | None = "logs/karb.jsonl"
    rotation: str = "50 MB"
    retention: str = "14 days"


@dataclass(frozen=True)
class MonitorConfig:
    status_interval_s: float = field(default=1.0, metadata=POSITIVE)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108  # 0 disables the endpoint
    webhook_url: str | None = None  # generic JSON webhook; Telegram/Slack/Discord: environment
    low_balance_krw: Decimal = Decimal("100000")
    low_balance: dict[str, Decimal] = field(default_factory=dict)  # per coin, in coin units
    telegram_api_url: str = field(default="https://api.telegram.org",
                                  metadata={"schemes": ("http", "https")})  # or a self-hosted Bot API
    feed_down_alert_s: float = field(default=60.0, metadata=POSITIVE)
    balance_sync_s: float = field(default=30.0, metadata=POSITIVE)
    # With a private stream up, syncs read its myAsset balances; REST is still asked at least
    # this often (the check; also whenever the stream was down since the last REST answer).
    balance_rest_check_s: float = field(default=60.0, metadata=POSITIVE)


@dataclass(frozen=True)
class Config:
    venues: VenuesConfig
    markets: list[str]
    mode: Literal["dry_run", "live"] = "dry_run"
    keys_file: str | None = None
    feed: FeedConfig = field(default_factory=FeedConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    inventory: InventoryConfig = field(default_factory=InventoryConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    sim: SimConfig | None = None
    backtest: BacktestConfig = field(default_factory=BacktestConfig)
    rebalance: RebalanceConfig = field(default_factory=RebalanceConfig)


def parse_config(data: object) -> Config:
    """Build and cross-check a ``Config`` from already-parsed YAML data."""
    _refuse_secrets(data)
    config = build(Config, data)
    if not config.markets:
        raise ConfigError("markets: at least one market is required")
    for i, market in enumerate(config.markets):
        if not _MARKET_RE.match(market):
            raise ConfigError(f"markets[{i}]: expected a KRW market like KRW-BTC, was {market!r}")
    for market in config.strategy.max_volume:
        if market not in config.markets:
            raise ConfigError(f"strategy.max_volume.{market}: not one of the configured markets")
    if "KRW" in config.monitor.low_balance:
        raise ConfigError("monitor.low_balance.KRW: KRW has its own key, monitor.low_balance_krw")
    for venue in config.inventory.bands:
        if venue not in {v.value for v in Venue}:
            raise ConfigError(f"inventory.bands.{venue}: unknown venue (upbit or bithumb)")
    rebalance_config.check(config.rebalance)
    _check_writable_file("journal.path", config.journal.path)
    if config.sim is not None:
        profiles.check(config.sim)
    return config


def _refuse_secrets(data: object) -> None:
    """A bot token or webhook URL in the config file would end up in the repo and in backups."""
    for path, section in (("", data), ("monitor.", data.get("monitor") if isinstance(data, dict) else None)):
        if not isinstance(section, dict):
            continue
        for key, env in ALERT_ENV_NAMES.items():
            if key in section:
                raise ConfigError(f"{path}{key}: a secret, refused in the config file; set {env} in "
                                  f"the environment or alerts.{key} in the chmod 600 keys_file")


def _check_writable_file(key: str, value: str) -> None:
    """Refuse a file path the engine could not create or write: empty, a directory, or under
    a directory (the nearest existing ancestor) it may not write to. Missing parents are fine:
    the journal creates them."""
    if not value.strip():
        raise ConfigError(f"{key}: must not be empty")
    path = Path(value).expanduser()
    if path.is_dir():
        raise ConfigError(f"{key}: is a directory, expected a file path, was {value!r}")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(f"{key}: cannot be written (no permission), was {value!r}")
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: cannot be written ({parent} is not a writable directory), was {value!r}")


def load_config(path: str | Path) -> Config:
    """Load and validate a YAML config file. Raises ``ConfigError`` naming the bad key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML") from None
    return parse_config(data)
