"""The sanity guard: an edge beyond ``strategy.sanity_max_net_bps`` is traded only once a REST
look at both books, walked by the same strategy code, shows it too."""
import threading
import time
from pathlib import Path

import pytest
import yaml

from karb.book import BookBoard
from karb.clock import ManualClock, SystemClock
from karb.config import parse_config
from karb.exchanges.errors import VenueError
from karb.exchanges.factory import make_client
from karb.inventory import Inventory
from karb.market_data import MarketData
from karb.model import BookView, Venue
from karb.risk import Risk
from karb.sanity import CONFIRM_TTL_S, RECHECK_S
from karb.sim.cluster import SimCluster
from karb.strategy import Strategy
from tests.conftest import wait_until
from tests.trading_fixtures import MARKET, balances, make_config, make_rules

# A normal market: Upbit bids 140.8M / Bithumb asks 140.0M, about +47 bps net after fees.
NORMAL_UP = ([(140_800_000.0, 0.02), (140_700_000.0, 0.05)], [(140_900_000.0, 0.05), (141_000_000.0, 0.05)])
NORMAL_BT = ([(139_900_000.0, 0.05), (139_800_000.0, 0.05)], [(140_000_000.0, 0.01), (140_100_000.0, 0.03)])
# A bad frame: Bithumb's asks at a tenth of the price (a decimal slip), +90,000 bps "edge".
BAD_BT = ([(13_990_000.0, 0.05)], [(14_000_000.0, 0.01), (14_010_000.0, 0.03)])
# A real dislocation: Bithumb 6% cheap, +657 bps net at the top.
REAL_BT = ([(131_500_000.0, 0.05)], [(132_000_000.0, 0.01), (132_100_000.0, 0.03)])


def rest_view(venue, book, recv_ns=0) -> BookView:
    bids, asks = book
    return BookView(venue, MARKET, tuple(bids), tuple(asks), 1, 0, recv_ns, True)


class Guarded:
    """A strategy with the guard on; ``rest`` holds the books the REST look returns."""

    def __init__(self, tmp_path, line_bps=300, clock=None):
        self.clock = clock or ManualClock()
        self.config = make_config(tmp_path, strategy={"threshold_bps": 10, "sanity_max_net_bps": line_bps},
                                  risk={"max_trade_krw": "100000000"})
        self.rules = make_rules(self.config)
        self.board = BookBoard([MARKET])
        self.risk = Risk(self.config, self.rules, self.clock)
        self.risk.ledger.load(Venue.UPBIT, balances(KRW=10_000_000, BTC=1))
        self.risk.ledger.load(Venue.BITHUMB, balances(KRW=10_000_000, BTC=1))
        self.received, self.alerts, self.reads = [], [], []
        self.rest = {Venue.UPBIT: NORMAL_UP, Venue.BITHUMB: NORMAL_BT}
        self.read_gate: threading.Event | None = None
        self.strategy = Strategy(self.board, self.rules, self.risk,
                                 Inventory(self.config.inventory, self.risk.ledger), self.config,
                                 self.clock, self.on_signal, read_book=self.read_book,
                                 on_alert=self.alerts.append)
        self.guard = self.strategy.sanity
        self.guard.start()

    def on_signal(self, signal):
        self.received.append(signal)
        return None

    def read_book(self, venue, market):
        self.reads.append((threading.current_thread().name, venue))
        if self.read_gate is not None:
            assert self.read_gate.wait(5)
        book = self.rest[venue]
        if isinstance(book, Exception):
            raise book
        return rest_view(venue, book, self.clock.monotonic_ns())

    def books(self, up=NORMAL_UP, bt=NORMAL_BT):
        now = self.clock.monotonic_ns()
        self.board.get(Venue.UPBIT, MARKET).apply_snapshot(*up, 1, now)
        self.board.get(Venue.BITHUMB, MARKET).apply_snapshot(*bt, 1, now)

    def evaluate(self):
        return self.strategy.evaluate(self.clock.monotonic_ns())

    def verdict(self, kind):
        return wait_until(lambda: [a for a in self.alerts if a.kind == kind], message=kind)

    def close(self):
        self.guard.stop()


@pytest.fixture
def guarded(tmp_path):
    g = Guarded(tmp_path)
    yield g
    g.close()


def test_a_normal_edge_is_traded_without_a_second_look(guarded):
    guarded.books()
    (signal,) = guarded.evaluate()
    assert signal.net_bps < 300 and guarded.reads == []


def test_an_absurd_gap_from_a_bad_frame_is_refuted_by_rest_and_never_traded(guarded):
    guarded.books(bt=BAD_BT)  # the feed's bad frame; REST shows the normal books
    assert guarded.evaluate() == []
    assert guarded.strategy.last_reason[MARKET].startswith("sanity: net +")
    (alert,) = guarded.verdict("sanity_refuted")
    assert alert.key == MARKET and "REST books show +" in alert.message and "upbit_sell" in alert.message
    for _ in range(5):  # the bad book stays; the market stays held, no second REST look
        guarded.clock.advance(0.1)
        guarded.books(bt=BAD_BT)
        assert guarded.evaluate() == []
    assert guarded.received == [] and len(guarded.reads) == 2
    assert "refuted" in guarded.strategy.stats()["sanity_held"][MARKET]
    assert guarded.strategy.skipped["sanity"] >= 6


def test_a_real_gap_confirmed_by_rest_is_traded_on_the_next_evaluation(guarded):
    guarded.rest[Venue.BITHUMB] = REAL_BT  # the venue really is 6% cheap
    guarded.books(bt=REAL_BT)
    assert guarded.evaluate() == []  # held while the REST look runs
    (alert,) = guarded.verdict("sanity_confirmed")
    assert "REST books show +657.3 bps, a signal of 0.04" in alert.message
    (signal,) = guarded.evaluate()  # the next evaluation after the verdict trades it
    assert signal.net_bps > 300 and signal.sell_venue is Venue.UPBIT
    assert guarded.strategy.stats()["sanity_held"] == {}


def test_the_strategy_never_waits_for_the_rest_look(guarded):
    guarded.read_gate = threading.Event()  # the venue is slow to answer
    guarded.books(bt=BAD_BT)
    started = time.monotonic()
    for _ in range(3):
        assert guarded.evaluate() == []
    assert time.monotonic() - started < 1.0
    wait_until(lambda: guarded.reads, message="the look started")
    assert {name for name, _ in guarded.reads} == {"sanity-check"}
    assert "awaiting a REST look" in guarded.strategy.stats()["sanity_held"][MARKET]
    guarded.read_gate.set()
    guarded.verdict("sanity_refuted")


def test_a_failed_rest_read_is_no_confirmation(guarded):
    guarded.rest[Venue.UPBIT] = VenueError(Venue.UPBIT, "service unavailable", status=503)
    guarded.books(bt=REAL_BT)
    guarded.evaluate()
    (alert,) = guarded.verdict("sanity_refuted")
    assert "REST book read failed" in alert.message
    guarded.evaluate()
    assert guarded.received == []


def test_a_refuted_gap_is_looked_at_again_after_the_hold_and_alerts_once_per_episode(guarded):
    guarded.books(bt=BAD_BT)
    guarded.evaluate()
    guarded.verdict("sanity_refuted")
    guarded.clock.advance(RECHECK_S + 0.1)
    guarded.books(bt=BAD_BT)
    guarded.evaluate()
    wait_until(lambda: guarded.guard.refuted == 2, message="second look")
    assert len(guarded.reads) == 4 and len(guarded.alerts) == 1  # same episode: one alert
    guarded.books()  # the feed recovers: the episode ends
    assert len(guarded.evaluate()) == 1
    guarded.clock.advance(1.1)  # past the cooldown
    guarded.books(bt=BAD_BT)
    guarded.evaluate()
    wait_until(lambda: len(guarded.alerts) == 2, message="a new episode alerts again")


def test_a_confirmation_expires_and_the_gap_is_looked_at_again(guarded):
    guarded.rest[Venue.BITHUMB] = REAL_BT
    guarded.books(bt=REAL_BT)
    guarded.evaluate()
    guarded.verdict("sanity_confirmed")
    assert len(guarded.evaluate()) == 1
    guarded.clock.advance(CONFIRM_TTL_S + 0.1)
    guarded.rest[Venue.BITHUMB] = NORMAL_BT  # the venue's gap closed; the feed is stuck on it
    guarded.books(bt=REAL_BT)
    assert guarded.evaluate() == []
    wait_until(lambda: guarded.guard.refuted == 1, message="refuted on the second look")
    assert guarded.evaluate() == [] and len(guarded.received) == 1


# --- against the sim's REST API -------------------------------------------------------------

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config"


@pytest.fixture
def sim(tmp_path):
    data = yaml.safe_load((REPO_CONFIG / "sim.yaml").read_text())
    data["markets"] = [MARKET]
    data["sim"]["markets"] = {MARKET: data["sim"]["markets"][MARKET]}
    data["sim"]["update_hz"] = 40
    data["journal"] = {"path": str(tmp_path / "j.sqlite")}
    data["risk"]["kill_switch_file"] = str(tmp_path / "KILL")
    data["log"] = {"file": None}
    data["strategy"]["sanity_max_net_bps"] = 300
    config = parse_config(data)
    with SimCluster.from_config(config).start() as cluster:
        config = cluster.apply_to(config)
        clients = {v: make_client(v, config, cluster.credentials(v)) for v in Venue}
        yield cluster, config, clients
        for client in clients.values():
            client.close()


def sim_strategy(config, clients, board, received, alerts):
    clock = SystemClock()
    rules = make_rules(config)
    risk = Risk(config, rules, clock)
    for venue, client in clients.items():
        risk.ledger.load(venue, client.get_balances())
    strategy = Strategy(board, rules, risk, Inventory(config.inventory, risk.ledger), config, clock,
                        lambda s: received.append(s), read_book=lambda v, m: clients[v].get_orderbook(m),
                        on_alert=alerts.append)
    return strategy, clock


@pytest.mark.integration
def test_sim_bad_frame_is_refuted_by_the_venues_rest_books(sim):
    cluster, config, clients = sim
    board, received, alerts = BookBoard([MARKET]), [], []
    strategy, clock = sim_strategy(config, clients, board, received, alerts)
    strategy.sanity.start()
    try:
        now = clock.monotonic_ns()
        board.get(Venue.UPBIT, MARKET).apply_snapshot(*NORMAL_UP, 1, now)
        board.get(Venue.BITHUMB, MARKET).apply_snapshot(*BAD_BT, 1, now)
        strategy.evaluate(clock.monotonic_ns())
        wait_until(lambda: alerts, timeout=10, message="verdict")
        assert [a.kind for a in alerts] == ["sanity_refuted"]
        assert strategy.evaluate(clock.monotonic_ns()) == [] and received == []
    finally:
        strategy.sanity.stop()


@pytest.mark.integration
def test_sim_real_dislocation_is_confirmed_by_rest_and_traded(sim):
    cluster, config, clients = sim
    board, received, alerts = BookBoard([MARKET]), [], []
    strategy, clock = sim_strategy(config, clients, board, received, alerts)
    market_data = MarketData(config, board)
    market_data.start()
    strategy.start()  # the real strategy thread, fed by the sim's WebSocket feeds
    try:
        cluster.dislocate(MARKET, Venue.BITHUMB, 600, 30)
        wait_until(lambda: received, timeout=15, message="a confirmed signal traded")
        assert [a.kind for a in alerts] == ["sanity_confirmed"]
        assert received[0].net_bps > 300 and received[0].buy_venue is Venue.BITHUMB
    finally:
        strategy.stop()
        market_data.stop(5.0)
