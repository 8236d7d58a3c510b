"""A market a venue flags (warning, caution, alert, delisting) is not traded, and the panel says why."""
import io
from pathlib import Path

import pytest
import yaml

from karb.config import parse_config
from karb.engine import Engine
from karb.exchanges.factory import make_client
from karb.exchanges.market_state import parse_bithumb_states, parse_upbit_states
from karb.model import Venue
from karb.sim.cluster import SimCluster
from karb.status import render_panel
from karb.venue_state import VenueStateWatch
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
MARKETS = ["KRW-BTC", "KRW-XRP"]


def _config(tmp_path, **strategy):
    data = yaml.safe_load((ROOT / "config" / "sim.yaml").read_text(encoding="utf-8"))
    data["markets"] = MARKETS
    data["sim"] = {"seed": 5, "gaps_per_min": 0, "update_hz": 20,
                   "markets": {"KRW-BTC": {"price": "140000000"}, "KRW-XRP": {"price": "3200"}}}
    data["strategy"] = {"threshold_bps": 20, "cooldown_ms": 300, **strategy}
    data["journal"] = {"path": str(tmp_path / "journal.sqlite")}
    data["log"] = {"file": None}
    data["risk"] = {"max_trade_krw": "2000000", "kill_switch_file": str(tmp_path / "KILL")}
    data["monitor"] = {"metrics_port": 0}
    return parse_config(data)


def test_upbit_details_give_warnings_and_cautions_by_name():
    body = [{"market": "KRW-BTC", "market_warning": "NONE",
             "market_event": {"warning": False, "caution": {"PRICE_FLUCTUATIONS": False}}},
            {"market": "KRW-XRP", "market_warning": "CAUTION",
             "market_event": {"warning": True, "caution": {"GLOBAL_PRICE_DIFFERENCES": True,
                                                           "PRICE_FLUCTUATIONS": False}}},
            {"market": "BTC-ETH", "market_warning": "CAUTION"}]
    assert parse_upbit_states(body) == {
        "KRW-BTC": None,
        "KRW-XRP": "investment warning (market_warning CAUTION); warning (market_event); "
                   "caution: GLOBAL_PRICE_DIFFERENCES"}


def test_bithumb_alerts_come_from_the_warning_list():
    body = [{"market": "KRW-BTC", "market_warning": "NONE"}, {"market": "KRW-XRP", "market_warning": "NONE"}]
    warnings = [{"market": "KRW-XRP", "warning_type": "PRICE_DIFFERENCE_HIGH", "end_date": "2026-12-04 10:00:00"}]
    assert parse_bithumb_states(body, warnings) == {"KRW-BTC": None, "KRW-XRP": "alert: PRICE_DIFFERENCE_HIGH"}


@pytest.mark.integration
def test_sim_venues_answer_their_flags_in_each_venues_shape(tmp_path):
    config = _config(tmp_path)
    with SimCluster.from_config(config).start() as cluster:
        config = cluster.apply_to(config)
        cluster.exchange(Venue.UPBIT).set_market_flags("KRW-XRP", {"GLOBAL_PRICE_DIFFERENCES"})
        cluster.exchange(Venue.BITHUMB).set_market_flags("KRW-BTC", {"WARNING", "PRICE_DIFFERENCE_HIGH"})
        up = make_client(Venue.UPBIT, config, None)
        bt = make_client(Venue.BITHUMB, config, None)
        assert up.get_market_states() == {"KRW-BTC": None, "KRW-XRP": "caution: GLOBAL_PRICE_DIFFERENCES"}
        assert bt.get_market_states() == {
            "KRW-BTC": "investment warning (market_warning CAUTION); alert: PRICE_DIFFERENCE_HIGH (CAUTION)",
            "KRW-XRP": None}


class _Strategy:
    def __init__(self):
        self.states = {}

    def set_venue_state(self, venue, market, state):
        self.states[(venue, market)] = state


class _Client:
    def __init__(self, answer):
        self.answer = answer

    def get_market_states(self):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_a_delisted_market_is_held_and_a_failed_read_keeps_the_last_state(tmp_path):
    strategy = _Strategy()
    client = _Client({"KRW-BTC": None})
    watch = VenueStateWatch({Venue.UPBIT: client, Venue.BITHUMB: object()}, strategy, _config(tmp_path))
    watch.poll()
    assert strategy.states == {(Venue.UPBIT, "KRW-XRP"): "not listed (delisted?)"}
    client.answer = RuntimeError("502 from the venue")
    watch.poll()
    assert strategy.states[(Venue.UPBIT, "KRW-XRP")] == "not listed (delisted?)" and watch.errors == 1
    client.answer = {"KRW-BTC": None, "KRW-XRP": None}
    watch.poll()
    assert strategy.states[(Venue.UPBIT, "KRW-XRP")] is None


def test_with_skipping_off_flags_are_only_logged(tmp_path):
    strategy = _Strategy()
    watch = VenueStateWatch({Venue.UPBIT: _Client({"KRW-BTC": "caution: X", "KRW-XRP": None})}, strategy,
                            _config(tmp_path, skip_flagged_markets=False))
    watch.poll()
    assert strategy.states == {} and watch.states == {(Venue.UPBIT, "KRW-BTC"): "caution: X"}


@pytest.mark.integration
def test_engine_skips_a_flagged_market_says_why_and_trades_it_once_the_flag_clears(tmp_path):
    config = _config(tmp_path)
    with SimCluster.from_config(config).start() as cluster:
        config = cluster.apply_to(config)
        cluster.exchange(Venue.UPBIT).set_market_flags("KRW-XRP", {"GLOBAL_PRICE_DIFFERENCES"})
        clients = {v: make_client(v, config, cluster.credentials(v)) for v in Venue}
        engine = Engine(config, clients, "sim", out=io.StringIO(), panel=False)
        engine.start()
        try:
            def traded(market):
                engine.journal.flush()
                return engine.journal.query("SELECT id FROM signals WHERE market = ?", (market,))

            cluster.dislocate("KRW-XRP", Venue.UPBIT, bps=80, seconds=1.5)
            cluster.dislocate("KRW-BTC", Venue.UPBIT, bps=80, seconds=1.5)
            wait_until(lambda: traded("KRW-BTC"), timeout=10, message="a BTC trade")
            wait_until(lambda: any(k.startswith("venue state") for k in list(engine.strategy.skipped)),
                       timeout=5, message="XRP evaluated and held")
            assert not traded("KRW-XRP")
            panel = render_panel(engine.snapshot())
            assert "KRW-XRP held: upbit caution: GLOBAL_PRICE_DIFFERENCES" in panel
            # the venue clears the flag: the next read frees the market
            cluster.exchange(Venue.UPBIT).set_market_flags("KRW-XRP", set())
            engine.venue_state.poll()
            cluster.dislocate("KRW-XRP", Venue.UPBIT, bps=80, seconds=1.5)
            wait_until(lambda: traded("KRW-XRP"), timeout=10, message="an XRP trade once cleared")
            assert "held" not in render_panel(engine.snapshot())
        finally:
            engine.stop()


@pytest.mark.integration
def test_a_suspended_wallet_holds_its_market_and_the_panel_says_why(tmp_path):
    config = _config(tmp_path)
    with SimCluster.from_config(config).start() as cluster:
        config = cluster.apply_to(config)
        cluster.wallet.suspend(Venue.BITHUMB, "XRP", "deposit_only")  # XRP cannot leave Bithumb
        clients = {v: make_client(v, config, cluster.credentials(v)) for v in Venue}
        engine = Engine(config, clients, "sim", out=io.StringIO(), panel=False)
        engine.start()
        try:
            assert engine.strategy.venue_state("KRW-XRP") == \
                "bithumb wallet: withdrawals suspended (deposit_only)"
            assert engine.strategy.venue_state("KRW-BTC") is None
            assert "KRW-XRP held: bithumb wallet: withdrawals suspended" in render_panel(engine.snapshot())
            cluster.wallet.suspend(Venue.BITHUMB, "XRP", "working")
            engine.venue_state.poll()
            assert engine.strategy.venue_state("KRW-XRP") is None
        finally:
            engine.stop()


def test_a_public_only_client_guards_by_listing_alone(tmp_path):
    from karb.exchanges.errors import AuthError

    class PublicOnly(_Client):
        def get_wallet_status(self):
            raise AuthError(Venue.UPBIT, "no API keys loaded", "no_credentials")

    strategy = _Strategy()
    client = PublicOnly({"KRW-BTC": None, "KRW-XRP": "caution: X"})
    watch = VenueStateWatch({Venue.UPBIT: client}, strategy, _config(tmp_path))
    watch.poll()
    watch.poll()
    assert strategy.states == {(Venue.UPBIT, "KRW-XRP"): "caution: X"} and watch.errors == 0
