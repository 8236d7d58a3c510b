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
