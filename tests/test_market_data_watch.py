"""``karb watch``: the rendered panel, symbol parsing, and a short run against the sim."""
from __future__ import annotations

import re

import pytest
import responses
import yaml

from karb.book import BookBoard
from karb.cli import REPO_CONFIG, main
from karb.commands.watch import render
from karb.rules import market_code
from karb.model import Venue

STATS = {v: {"state": "connected", "msgs_per_s": 12.0, "last_message_age_s": 0.1, "reconnects": 0,
             "decode_errors": 0} for v in ("upbit", "bithumb")}


@pytest.mark.parametrize("symbol, code", [("btc", "KRW-BTC"), ("KRW-ETH", "KRW-ETH"),
                                          ("XRP_KRW", "KRW-XRP")])
def test_market_code_with_any_spelling_returns_upbit_code(symbol, code):
    assert market_code(symbol) == code


def test_render_shows_both_venues_and_gross_and_net_spread_both_ways():
    board = BookBoard(["KRW-BTC"])
    board.sink("upbit").on_snapshot("KRW-BTC", [(100_000.0, 1.0)], [(100_100.0, 2.0)], 1, 1_000)
    board.sink("bithumb").on_snapshot("KRW-BTC", [(100_300.0, 1.5)], [(100_400.0, 1.0)], 1, 1_000)
    fees = {Venue.UPBIT: 0.0005, Venue.BITHUMB: 0.0004}
    lines = render(board, ["KRW-BTC"], fees, STATS, 1_000 + 200_000_000)
    text = "\n".join(lines)
    assert "upbit    bid" in text and "100,000 x 1.0000" in text and "100,400 x 1.0000" in text
    # buy upbit at 100,100, sell bithumb at 100,300: gross 19.98 bp, net 19.98 - 5 - 4.01 bp
    assert re.search(r"buy upbit / sell bithumb: gross\s+\+20\.0 bp\s+net\s+\+11\.0 bp", text)
    assert re.search(r"buy bithumb / sell upbit: gross\s+-39\.8 bp", text)
    assert "age   0.2s" in text and lines[-1].startswith("feeds: upbit connected 12 msg/s")


def test_render_with_invalid_or_stale_book_says_so():
    board = BookBoard(["KRW-BTC"])
    board.sink("upbit").on_snapshot("KRW-BTC", [(100.0, 1.0)], [(101.0, 1.0)], 1, 0)
    text = "\n".join(render(board, ["KRW-BTC"], {Venue.UPBIT: 0.0, Venue.BITHUMB: 0.0}, STATS,
                            10_000_000_000))
    assert "STALE" in text and "invalid (waiting for a snapshot)" in text
    assert "buy upbit / sell bithumb: -" in text


def test_watch_with_sim_prints_both_venues_updating(tmp_path, capsys):
    data = yaml.safe_load((REPO_CONFIG / "sim.yaml").read_text())
    data["log"] = {"file": str(tmp_path / "karb.jsonl"), "level": "WARNING"}
    data["journal"] = {"path": str(tmp_path / "sim.sqlite")}
    config_path = tmp_path / "sim.yaml"
    config_path.write_text(yaml.safe_dump(data))
    code = main(["watch", "KRW-BTC", "--sim", "--config", str(config_path),
                 "--count", "4", "--interval", "0.4"])
    out = capsys.readouterr().out
    assert code == 0
    blocks = [b for b in out.split("\n\n") if b.strip()]
    assert len(blocks) == 4 and "\x1b[" not in out  # plain lines when not a terminal
    last = blocks[-1]
    for venue in ("upbit", "bithumb"):
        assert re.search(rf"{venue}\s+bid\s+[\d,]+ x [\d.]+\s+ask\s+[\d,]+ x", last), last
    assert "gross" in last and "net" in last
    quotes = [re.findall(r"(upbit|bithumb)\s+bid\s+([\d,]+ x [\d.]+)", b) for b in blocks[1:]]
    assert len({tuple(q) for q in quotes}) > 1  # the numbers move between refreshes


@responses.activate
def test_watch_with_unlisted_symbol_exits_2_at_once_saying_not_listed(tmp_path, capsys):
    listing = [{"market": "KRW-BTC", "korean_name": "x", "english_name": "Bitcoin"}]
    responses.get("http://127.0.0.1:9/v1/market/all", json=listing)
    responses.get("http://127.0.0.1:10/v1/market/all", json=listing)
    config_path = tmp_path / "karb.yaml"
    config_path.write_text(yaml.safe_dump({
        "markets": ["KRW-BTC"], "log": {"file": None, "level": "WARNING"},
        "venues": {"upbit": {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9",
                             "taker_fee": "0.0005", "maker_fee": "0.0005"},
                   "bithumb": {"rest_url": "http://127.0.0.1:10", "ws_url": "ws://127.0.0.1:10",
                               "taker_fee": "0.0004", "maker_fee": "0.0004"}}}))
    code = main(["watch", "KRW-BTC", "nope", "--config", str(config_path), "--count", "1",
                 "--interval", "0.01"])
    captured = capsys.readouterr()
    assert code == 2
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "KRW-NOPE is not listed on upbit or bithumb" in err[0]
    assert captured.out == ""  # no panel of nothing
