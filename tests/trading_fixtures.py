"""Builders shared by the trading tests (strategy, risk, execution, journal, dry-run)."""
from __future__ import annotations

from decimal import Decimal as D

from karb.config import Config, parse_config
from karb.model import Balance, Signal, Venue
from karb.rules import RulesBook

MARKET = "KRW-BTC"


def make_config(tmp_path=None, markets=(MARKET,), **sections) -> Config:
    """A config with loopback venues, Upbit 0.05% / Bithumb 0.04% taker fees, and overrides."""
    data = {
        "venues": {
            "upbit": {"rest_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1",
                      "taker_fee": "0.0005", "maker_fee": "0.0005"},
            "bithumb": {"rest_url": "http://127.0.0.1:2", "ws_url": "ws://127.0.0.1:2",
                        "taker_fee": "0.0004", "maker_fee": "0.0004"},
        },
        "markets": list(markets),
    }
    if tmp_path is not None:
        data["risk"] = {"kill_switch_file": str(tmp_path / "KILL")}
        data["journal"] = {"path": str(tmp_path / "journal.sqlite")}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data)


def make_rules(config: Config) -> RulesBook:
    fees = {v: (config.venues[v].taker_fee, config.venues[v].maker_fee) for v in Venue}
    return RulesBook.fallback(list(config.markets), fees)


def balances(**amounts) -> dict[str, Balance]:
    return {ccy: Balance(ccy, D(str(v))) for ccy, v in amounts.items()}


def make_signal(signal_id="s1", volume="0.01", buy_price="140000000", sell_price="140700000",
                buy_venue=Venue.BITHUMB, market=MARKET) -> Signal:
    buy_p, sell_p = float(buy_price), float(sell_price)
    return Signal(market=market, buy_venue=buy_venue, sell_venue=buy_venue.other,
                  volume=D(volume), buy_price=D(buy_price), sell_price=D(sell_price),
                  buy_vwap=buy_p, sell_vwap=sell_p, gross_bps=(sell_p - buy_p) / buy_p * 1e4,
                  net_bps=0.0, est_profit_krw=D(0), created_ns=1, id=signal_id)
