"""``SimCluster``: both simulated venues, their servers, the market thread and the control API.

    with SimCluster.from_config(config).start() as cluster:
        config = cluster.apply_to(config)             # venues.* URLs point at the sim
        creds = cluster.credentials(Venue.UPBIT)      # the paper account's keys
        cluster.faults(Venue.UPBIT).rest_error(503)   # scripted faults
        cluster.dislocate("KRW-BTC", Venue.BITHUMB, bps=60, seconds=2)
        cluster.wallet.suspend(Venue.BITHUMB, "XRP")  # coin transfers (karb.sim.wallet)

Every thread it starts is named ``sim-*`` and joined by ``stop()``. ``start()`` returns once
both venues have a book for every market (``MarketThread.ready``): the sim never serves an
empty book.
"""
from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from loguru import logger

from feeds.recorder import recording_files
from karb.clock import Clock
from karb.config import Config
from karb.model import Balance, Venue
from karb.rules import MarketRules
from karb.schema import ConfigError
from karb.secrets import Credentials
from karb.sim.config import SimConfig, SimFaultConfig
from karb.sim.exchange import SimExchange
from karb.sim.faults import VenueFaults
from karb.sim.market import MarketGenerator
from karb.sim.publisher import MarketThread, PublishStats, VenueOutlets
from karb.sim.wallet import SimWallet
from karb.sim.ws import WsHub, WsServer
from karb.sim.ws_private import BITHUMB_PRIVATE_PATH, UPBIT_PRIVATE_PATH, PrivateHub

WS_PATH = "/websocket/v1"
LEGACY_WS_PATH = "/pub/ws"
START_COIN_KRW = Decimal("10000000")
READY_TIMEOUT_S = 10.0  # the opening books come at once; a recording may lack a market


@dataclass(frozen=True)
class SimEndpoints:
    rest_url: str
    ws_url: str
    legacy_ws_url: str | None = None
    private_ws_url: str | None = None


class SimCluster:
    """Both venues on loopback. Construct with ``from_config``; ``start()`` binds the ports."""

    def __init__(self, config: Config, start_ms: int | None = None, clock: Clock | None = None):
        self.config = config
        self.sim: SimConfig = config.sim or SimConfig()
        self.markets = list(config.markets)
        for market in self.markets:
            if market not in self.sim.markets:
                raise ConfigError(f"sim.markets.{market}: the sim needs a starting price for every market")
        self.start_ms = start_ms
        self._stop = threading.Event()
        self._faults = {venue: VenueFaults() for venue in Venue}
        if self.sim.replay_path:
            recording_files(self.sim.replay_path)  # a missing file or empty directory fails here
        self.generator = MarketGenerator(self.sim, self.markets)
        self._exchanges = {venue: self._make_exchange(venue) for venue in Venue}
        self._credentials = {venue: self._paper_credentials(venue) for venue in Venue}
        for venue, creds in self._credentials.items():
            self._exchanges[venue].add_account(creds.access_key, creds.secret_key, self.start_balances(venue))
        prices = {m.split("-", 1)[1]: self.sim.markets[m].price for m in self.markets}
        self.wallet = SimWallet(self._exchanges, self.sim.wallet, prices, clock)  # clock: confirmations
        for exchange in self._exchanges.values():
            exchange.wallet = self.wallet
        self._outlets: dict[Venue, VenueOutlets] = {}
        self._ws: list[WsServer] = []
        self._private_hubs: dict[Venue, PrivateHub] = {}
        self._rest: dict[Venue, object] = {}
        self._control = None
        self._endpoints: dict[Venue, SimEndpoints] = {}
        self._market: MarketThread | None = None
        self._pending_faults: list[SimFaultConfig] = sorted(self.sim.faults, key=lambda f: f.at_s)
        self._started = False

    @classmethod
    def from_config(cls, config: Config, start_ms: int | None = None,
                    clock: Clock | None = None) -> "SimCluster":
        return cls(config, start_ms, clock)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "SimCluster":
        from karb.sim.control import ControlServer
        from karb.sim.rest import RestServer

        host = self.sim.host
        for venue in Venue:
            vcfg = self.sim.venues.upbit if venue is Venue.UPBIT else self.sim.venues.bithumb
            exchange = self._exchanges[venue]
            lock = threading.Lock()
            hubs = [self._hub(venue.value, "upbit", venue, lock)]
            private_path = UPBIT_PRIVATE_PATH if venue is Venue.UPBIT else BITHUMB_PRIVATE_PATH
            private = PrivateHub(f"{venue.value}-private", venue.value, exchange, self._faults[venue],
                                 self.sim.idle_timeout_s, self.sim.bithumb_ts_window_ms)
            self._private_hubs[venue] = private
            servers = [WsServer(hubs[0], host, vcfg.ws_port, WS_PATH, {private_path: private})]
            if venue is Venue.BITHUMB:
                hubs.append(self._hub("bithumb-legacy", "legacy", venue, lock))
                servers.append(WsServer(hubs[1], host, vcfg.legacy_ws_port, LEGACY_WS_PATH))
            self._outlets[venue] = VenueOutlets(exchange, hubs, lock)
            rest = RestServer(venue, exchange, self._faults[venue], self.sim, host, vcfg.rest_port,
                              self._stop)
            self._rest[venue] = rest
            self._ws.extend(servers)
            self._endpoints[venue] = SimEndpoints(
                f"http://{host}:{rest.port}", f"ws://{host}:{servers[0].port}{WS_PATH}",
                f"ws://{host}:{servers[1].port}{LEGACY_WS_PATH}" if len(servers) > 1 else None,
                f"ws://{host}:{servers[0].port}{private_path}",
            )
        self._control = ControlServer(self, host, self.sim.control_port)
        if self.start_ms is None:
            self.start_ms = time.time_ns() // 1_000_000
        events = self._events()
        expected = {(venue, market) for venue in Venue for market in self.markets}
        self._market = MarketThread(events, self._outlets, self.start_ms, self.sim.replay_speed,
                                    self._on_tick, expected)
        for server in self._ws:
            server.start()
        for rest in self._rest.values():
            rest.start()
        self._control.start()
        self._market.start()
        self._started = True
        if not self._market.ready.wait(READY_TIMEOUT_S):
            missing = sorted(f"{v.value} {m}" for v, m in self._market.missing())
            logger.warning("sim: no book yet for {} after {:g} s; serving anyway", ", ".join(missing),
                           READY_TIMEOUT_S)
        return self

    def stop(self) -> None:
        """Stop every thread and join it (bounded)."""
        self._stop.set()
        if self._market is not None:
            self._market.stop()
        if self._control is not None:
            self._control.stop()
        for rest in self._rest.values():
            rest.stop()
        for server in self._ws:
            server.stop()
        self._started = False

    def __enter__(self) -> "SimCluster":
        return self if self._started else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- API for tests and other components ---------------------------------------------------
    def endpoints(self, venue: Venue) -> SimEndpoints:
        return self._endpoints[venue]

    def control_url(self) -> str:
        assert self._control is not None, "start() the cluster first"
        return f"http://{self.sim.host}:{self._control.port}"

    def apply_to(self, config: Config) -> Config:
        """``config`` with ``venues.*.rest_url`` / ``ws_url`` / ``private_ws_url`` pointing at
        this sim."""
        venues = config.venues
        changes = {}
        for venue in Venue:
            ep = self._endpoints[venue]
            vcfg = venues[venue]
            ws_url = ep.legacy_ws_url if (venue is Venue.BITHUMB and vcfg.ws_api == "legacy") else ep.ws_url
            changes[venue.value] = dataclasses.replace(vcfg, rest_url=ep.rest_url, ws_url=ws_url,
                                                       private_ws_url=ep.private_ws_url)
        return dataclasses.replace(config, venues=dataclasses.replace(venues, **changes))

    def credentials(self, venue: Venue) -> Credentials:
        return self._credentials[venue]

    def exchange(self, venue: Venue) -> SimExchange:
        return self._exchanges[venue]

    def faults(self, venue: Venue) -> VenueFaults:
        return self._faults[venue]

    def hubs(self, venue: Venue) -> list[WsHub]:
        return self._outlets[venue].hubs

    def private_hub(self, venue: Venue) -> PrivateHub:
        return self._private_hubs[venue]

    def dislocate(self, market: str, cheap_venue: Venue, bps: float, seconds: float) -> None:
        """Hold ``cheap_venue``'s asks ~``bps`` below the other venue's bids for ``seconds``."""
        self.generator.dislocate(market, cheap_venue, bps, seconds)

    def market_stats(self) -> PublishStats:
        return self._market.stats if self._market else PublishStats()

    def start_balances(self, venue: Venue) -> dict[str, Decimal]:
        vcfg = self.sim.venues.upbit if venue is Venue.UPBIT else self.sim.venues.bithumb
        balances = {"KRW": vcfg.start_krw}
        for market in self.markets:
            coin = market.split("-", 1)[1]
            mc = self.sim.markets[market]
            if coin == "BTC":
                balances[coin] = vcfg.start_btc
            elif mc.start_coin is not None:
                balances[coin] = mc.start_coin
            else:
                balances[coin] = (START_COIN_KRW / mc.price).quantize(Decimal("0.0001"), ROUND_DOWN)
        return balances

    def balances(self, venue: Venue) -> dict[str, Balance]:
        return self._exchanges[venue].balances(self._credentials[venue].access_key)

    # --- internals ----------------------------------------------------------------------------
    def _make_exchange(self, venue: Venue) -> SimExchange:
        vconf = self.config.venues[venue]
        rules = {m: MarketRules(venue, m, taker_fee=vconf.taker_fee, maker_fee=vconf.maker_fee)
                 for m in self.markets}
        vcfg = self.sim.venues.upbit if venue is Venue.UPBIT else self.sim.venues.bithumb
        return SimExchange(venue, rules, vcfg, self._faults[venue], self.generator.take, self.sim.seed,
                           self._stop)

    def _hub(self, name: str, flavour: str, venue: Venue, lock: threading.Lock) -> WsHub:
        exchange = self._exchanges[venue]
        return WsHub(name, flavour, self.markets, self._faults[venue], lock, exchange.snapshot,
                     self.sim.idle_timeout_s)

    def _paper_credentials(self, venue: Venue) -> Credentials:
        seed = f"{self.sim.seed}:{venue.value}"
        access = "sim" + hashlib.sha256(f"{seed}:access".encode()).hexdigest()[:37]
        secret = "sim" + hashlib.sha256(f"{seed}:secret".encode()).hexdigest()[:37]
        return Credentials(access, secret)

    def _events(self):
        if self.sim.replay_path:
            from karb.sim.replay import ReplaySource
            return ReplaySource(self.sim.replay_path, self.markets).events()
        return self.generator.events()

    def _on_tick(self, sim_ns: int) -> None:
        self.wallet.settle()  # credit deposits whose confirmations are done
        while self._pending_faults and sim_ns >= self._pending_faults[0].at_s * 1e9:
            self.apply_fault(self._pending_faults.pop(0))

    def apply_fault(self, fault: SimFaultConfig) -> None:
        """Run one fault action (scheduled from config, or from the control endpoint)."""
        venue = Venue(fault.venue)
        faults = self._faults[venue]
        action = fault.action
        if action == "drop_ws":
            faults.drop_ws()
        elif action == "stall_ws":
            faults.stall_ws(fault.seconds)
        elif action == "rest_error":
            faults.rest_error(fault.status, fault.count)
        elif action == "delay_rest":
            faults.delay_rest(fault.seconds, fault.count)
        elif action == "reject_next_order":
            faults.reject_next_order()
        elif action == "partial_next_ioc":
            faults.partial_next_ioc(fault.fraction)
        elif action in ("delay_orders", "slow_registration"):
            getattr(faults, action)(fault.seconds, fault.count)
        elif action == "future_frames":
            faults.future_frames(fault.count, fault.seconds)
        elif action in ("lose_answer", "garbage_frames"):
            getattr(faults, action)(fault.count)
        elif action == "dislocate":
            self.dislocate(fault.market, venue, fault.bps, fault.seconds)
        elif action == "clear":
            faults.clear()
        else:  # pragma: no cover - the schema's Literal rejects anything else
            raise ValueError(f"unknown fault action {action}")
