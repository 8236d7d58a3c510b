"""Start-up checks refuse to trade on missing markets, bad keys or a wrong clock."""
import email.utils
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from karb.exchanges.errors import AuthError, VenueUnavailable
from karb.model import Balance, Venue
from karb.startup import StartupError, check_clocks, check_keys, check_markets, clock_skew_s


class StubClient:
    def __init__(self, venue, markets=(), balances_error=None):
        self.venue = venue
        self._markets = list(markets)
        self._error = balances_error

    def get_markets(self):
        if isinstance(self._error, VenueUnavailable):
            raise self._error
        return self._markets

    def get_balances(self):
        if self._error:
            raise self._error
        return {"KRW": Balance("KRW", 1)}


def test_check_markets_with_market_missing_on_one_venue_names_it():
    clients = {Venue.UPBIT: StubClient(Venue.UPBIT, ["KRW-BTC", "KRW-ETH"]),
               Venue.BITHUMB: StubClient(Venue.BITHUMB, ["KRW-BTC"])}
    check_markets(clients, ["KRW-BTC"])
    with pytest.raises(StartupError, match="not listed on bithumb: KRW-ETH") as info:
        check_markets(clients, ["KRW-BTC", "KRW-ETH"])
    assert info.value.exit_code == 2


def test_check_markets_with_venue_down_exits_4():
    clients = {Venue.UPBIT: StubClient(Venue.UPBIT, balances_error=VenueUnavailable(Venue.UPBIT, "down", status=503))}
    with pytest.raises(StartupError) as info:
        check_markets(clients, ["KRW-BTC"])
    assert info.value.exit_code == 4


def test_check_keys_with_rejected_key_names_venue_and_code():
    clients = {Venue.UPBIT: StubClient(Venue.UPBIT),
               Venue.BITHUMB: StubClient(Venue.BITHUMB, balances_error=AuthError(
                   Venue.BITHUMB, "invalid key", code="invalid_access_key", status=401))}
    with pytest.raises(StartupError, match="bithumb rejected the API keys .invalid_access_key") as info:
        check_keys(clients)
    assert info.value.exit_code == 3


def _date_server(offset_s: float):
    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def date_time_string(self, timestamp=None):
            return email.utils.formatdate(time.time() + offset_s, usegmt=True)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="test-date", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("offset,fails", [(0, False), (60, True), (-60, True)])
def test_check_clocks_with_venue_clock_offset(offset, fails):
    server, url = _date_server(offset)
    try:
        skew = clock_skew_s(url)
        assert skew == pytest.approx(offset, abs=2.0)
        if fails:
            with pytest.raises(StartupError, match="local clock differs"):
                check_clocks({Venue.UPBIT: url})
        else:
            check_clocks({Venue.UPBIT: url})
    finally:
        server.shutdown()
        server.server_close()


def test_clock_skew_with_unreachable_venue_is_unknown():
    assert clock_skew_s("http://127.0.0.1:9", timeout_s=0.5) is None


# --- fee schedules: one read per venue at start-up, each market checked slowly after ----------

def test_fee_check_gives_a_market_with_its_own_fee_its_own_rules(tmp_path, monkeypatch):
    from decimal import Decimal as D

    from karb import engine as engine_module
    from karb.config import parse_config
    from karb.engine import Engine
    from karb.exchanges.errors import AuthError
    from karb.model import Venue
    from karb.rules import MarketInfo

    class FeeClient:
        def __init__(self, venue, fees):
            self.venue, self.fees, self.asked = venue, fees, []

        def get_market_info(self, markets):  # the venue-wide schedule, read once
            return [MarketInfo(m, taker_fee=D("0.0005"), maker_fee=D("0.0005")) for m in markets]

        def get_market_fees(self, market):
            self.asked.append(market)
            if self.fees is None:
                raise AuthError(self.venue, "public-only", "no_credentials")
            return MarketInfo(market, taker_fee=self.fees.get(market, D("0.0005")),
                              maker_fee=D("0.0005"), min_total=D("5000"))

        def close(self):
            pass

    markets = ["KRW-BTC", "KRW-ETH", "KRW-XRP"]
    config = parse_config({
        "markets": markets,
        "venues": {v: {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9",
                       "taker_fee": "0.0005", "maker_fee": "0.0005"} for v in ("upbit", "bithumb")},
        "journal": {"path": str(tmp_path / "j.sqlite")},
        "risk": {"kill_switch_file": str(tmp_path / "KILL")},
        "monitor": {"metrics_port": 0},
    })
    upbit = FeeClient(Venue.UPBIT, {"KRW-ETH": D("0.0025")})
    bithumb = FeeClient(Venue.BITHUMB, None)  # no keys
    monkeypatch.setattr(engine_module, "FEE_CHECK_INTERVAL_S", 0.0)
    engine = Engine(config, {Venue.UPBIT: upbit, Venue.BITHUMB: bithumb}, "dry_run")
    try:
        engine._check_market_fees()
        checked = engine.rules.get(Venue.UPBIT, "KRW-ETH").taker_fee
        upbit.fees = {}  # the next day every market answers the venue-wide rate again
        engine._daily_rules_pass()
    finally:
        engine.market_data.stop(1.0)

    assert upbit.asked == markets * 2 and bithumb.asked == ["KRW-BTC"] * 2
    assert checked == D("0.0025")
    assert engine.rules.get(Venue.UPBIT, "KRW-ETH").taker_fee == D("0.0005")
    assert engine.rules.get(Venue.UPBIT, "KRW-BTC").taker_fee == D("0.0005")


def test_daily_refresh_keeps_a_markets_own_fee_until_its_check_says_otherwise(tmp_path,
                                                                             monkeypatch):
    from decimal import Decimal as D

    from karb import engine as engine_module
    from karb.config import parse_config
    from karb.engine import Engine
    from karb.model import Venue
    from karb.rules import MarketInfo

    seen_during_check = []

    class Client:
        def __init__(self, venue):
            self.venue = venue

        def get_market_info(self, markets):
            return [MarketInfo(m, taker_fee=D("0.0005")) for m in markets]

        def get_market_fees(self, market):
            seen_during_check.append(engine.rules.get(self.venue, "KRW-ETH").taker_fee)
            return MarketInfo(market, taker_fee=D("0.0025") if market == "KRW-ETH" else D("0.0005"))

        def close(self):
            pass

    config = parse_config({
        "markets": ["KRW-BTC", "KRW-ETH"],
        "venues": {v: {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9",
                       "taker_fee": "0.0005", "maker_fee": "0.0005"} for v in ("upbit", "bithumb")},
        "journal": {"path": str(tmp_path / "j.sqlite")},
        "risk": {"kill_switch_file": str(tmp_path / "KILL")},
        "monitor": {"metrics_port": 0},
    })
    monkeypatch.setattr(engine_module, "FEE_CHECK_INTERVAL_S", 0.0)
    engine = Engine(config, {v: Client(v) for v in Venue}, "dry_run")
    try:
        engine._check_market_fees()
        seen_during_check.clear()
        engine._daily_rules_pass()  # the venue-wide read says 0.0005 for KRW-ETH too
    finally:
        engine.market_data.stop(1.0)

    assert seen_during_check and set(seen_during_check) == {D("0.0025")}
