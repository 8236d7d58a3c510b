"""The REST commands (markets, book, balances) and the client factory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import responses

from karb import cli
from karb.config import load_config
from karb.exchanges.bithumb import BithumbClient, BithumbLegacyClient
from karb.exchanges.errors import AuthError
from karb.exchanges.factory import make_client
from karb.exchanges.upbit import UpbitClient
from karb.model import Venue
from karb.secrets import ENV_NAMES, Credentials
from tests.conftest import load_json

ROOT = Path(__file__).resolve().parent.parent
UPBIT, BITHUMB = "http://127.0.0.1:9", "http://127.0.0.1:10"


@pytest.fixture
def config_path(tmp_path):
    def write(bithumb_api: str = "v2") -> str:
        path = tmp_path / "karb.yaml"
        path.write_text(f"""
markets: [KRW-BTC, KRW-ETH]
log: {{file: null}}
venues:
  upbit: {{rest_url: "{UPBIT}", ws_url: "ws://127.0.0.1:9/ws", taker_fee: "0.0005", maker_fee: "0.0005"}}
  bithumb: {{api: {bithumb_api}, rest_url: "{BITHUMB}", ws_url: "ws://127.0.0.1:10/ws",
             taker_fee: "0.0004", maker_fee: "0.0004"}}
""")
        return str(path)
    return write


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KARB_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_help_lists_the_rest_subcommands():
    out = subprocess.run([sys.executable, "main.py", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env=_clean_env())

    assert out.returncode == 0
    for name in ("markets", "book", "balances"):
        assert name in out.stdout


def test_balances_without_keys_exits_3_with_one_line_and_no_traceback():
    out = subprocess.run([sys.executable, "main.py", "balances", "--config", "config/default.yaml"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, env=_clean_env())

    assert out.returncode == 3
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "KARB_UPBIT_ACCESS_KEY" in lines[0]
    assert "Traceback" not in out.stderr and out.stdout == ""


@responses.activate
def test_markets_with_both_venues_prints_the_common_ones(config_path, capsys):
    listing = load_json("rest/upbit/market_all.json")
    responses.get(f"{UPBIT}/v1/market/all", json=listing)
    responses.get(f"{BITHUMB}/v1/market/all", json=[m for m in listing if m["market"] != "KRW-XRP"])

    code = cli.main(["markets", "--config", config_path()])

    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out == ["KRW-BTC", "KRW-ETH", "2 markets on both venues (upbit 3, bithumb 2)"]


@responses.activate
def test_book_with_one_venue_prints_levels_and_spread(config_path, capsys):
    responses.get(f"{UPBIT}/v1/market/all", json=load_json("rest/upbit/market_all.json"))
    responses.get(f"{UPBIT}/v1/orderbook", json=load_json("rest/upbit/orderbook.json"))

    code = cli.main(["book", "btc", "--venue", "upbit", "--depth", "1", "--config", config_path()])

    out = capsys.readouterr().out
    assert code == 0
    assert "ask          140,010,000" in out and "bid          140,000,000" in out
    assert "139,990,000" not in out  # depth 1
    assert "spread 10,000 KRW (0.71 bps of mid)" in out


@responses.activate
def test_book_with_legacy_bithumb_uses_legacy_path(config_path, capsys):
    responses.get(f"{BITHUMB}/public/ticker/ALL_KRW", json=load_json("rest/bithumb_legacy/ticker_all_krw.json"))
    responses.get(f"{BITHUMB}/public/orderbook/BTC_KRW",
                  json=load_json("rest/bithumb_legacy/orderbook_btc.json"))

    code = cli.main(["book", "BTC_KRW", "--venue", "bithumb", "--config", config_path("legacy")])

    assert code == 0 and "bithumb KRW-BTC" in capsys.readouterr().out


@responses.activate
def test_balances_with_keys_prints_non_zero_balances(config_path, capsys, monkeypatch):
    for access, secret in ENV_NAMES.values():
        monkeypatch.setenv(access, "test-access-key-000000")
        monkeypatch.setenv(secret, "test-secret-key-000000")
    accounts = load_json("spec/rest_samples.json")["upbit"]["GET /v1/accounts"]["body"]
    responses.get(f"{UPBIT}/v1/accounts", json=accounts)

    code = cli.main(["balances", "--venue", "upbit", "--config", config_path()])

    out = capsys.readouterr().out
    assert code == 0 and "upbit: 2 currencies" in out and "1000000" in out
    assert "test-secret" not in out


@responses.activate
def test_book_with_venue_down_exits_4_with_one_line(config_path, capsys):
    responses.get(f"{UPBIT}/v1/market/all", status=503, body="maintenance")

    code = cli.main(["book", "BTC", "--venue", "upbit", "--config", config_path()])

    assert code == 4 and capsys.readouterr().err.startswith("venue error: upbit 503")


@responses.activate
@pytest.mark.parametrize("argv", [["book", "KRW-NOPE"], ["book", "nope", "--venue", "bithumb"]])
def test_book_with_unlisted_symbol_exits_2_saying_not_listed(config_path, capsys, argv):
    listing = load_json("rest/upbit/market_all.json")
    responses.get(f"{UPBIT}/v1/market/all", json=listing)
    responses.get(f"{BITHUMB}/v1/market/all", json=listing)

    code = cli.main([*argv, "--config", config_path()])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "KRW-NOPE" in err[0] and "not listed" in err[0]
    assert not [c for c in responses.calls if "orderbook" in c.request.url]


@pytest.mark.parametrize("venue, api, expected", [
    (Venue.UPBIT, "v2", UpbitClient),
    (Venue.BITHUMB, "v2", BithumbClient),
    (Venue.BITHUMB, "legacy", BithumbLegacyClient),
])
def test_make_client_with_config_picks_the_client_class(config_path, venue, api, expected):
    client = make_client(venue, load_config(config_path(api)), Credentials("a" * 10, "b" * 10))

    assert type(client) is expected and client.venue is venue
    client.close()


@pytest.mark.parametrize("api", ["v2", "legacy"])
def test_make_client_without_credentials_gives_public_only_client(config_path, api):
    client = make_client(Venue.BITHUMB, load_config(config_path(api)), None)

    with pytest.raises(AuthError) as err:
        client.get_balances()

    assert err.value.code == "no_credentials"
    client.close()
