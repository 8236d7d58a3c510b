"""The chaos campaign (``tools/chaos.py``): its invariant checker on hand-made data, and a short run.

The short run (``-m chaos``, ~2 minutes) starts the sim and the engine as separate processes,
injects faults, kills the engine with ``kill -9`` and restarts it on the same journal, and checks
the invariants against the sim's own accounts and order history.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from decimal import Decimal as D
from pathlib import Path

import pytest

from karb.journal import SCHEMA

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from chaos import EngineState  # noqa: E402
from chaos_invariants import (  # noqa: E402
    JournalView, Truth, check, halt_lost, read_journal, traded_while_killed,
)

PRICES = {"BTC": D("140000000")}
T0 = 1_750_000_000_000_000_000


def _truth(upbit_btc="1", upbit_krw="50000000", bithumb_btc="1", bithumb_krw="50000000", orders=None,
           attempts=None) -> Truth:
    def account(btc, krw):
        return {"BTC": {"free": btc, "locked": "0", "start": "1"},
                "KRW": {"free": krw, "locked": "0", "start": "50000000"}}
    return Truth({"upbit": account(upbit_btc, upbit_krw), "bithumb": account(bithumb_btc, bithumb_krw)},
                 orders or {"upbit": [], "bithumb": []}, attempts or {"upbit": {}, "bithumb": {}})


def _order(client_id, venue, side, volume, funds, fee, created=T0, signal="s1", role="buy"):
    return {"client_id": client_id, "signal_id": signal, "role": role, "venue": venue, "market": "KRW-BTC",
            "side": side, "state": "filled", "executed_volume": volume, "executed_funds": funds,
            "paid_fee": fee, "created_wall_ns": created}


def _venue_order(identifier, created=T0 + 1_000_000):
    return {"uuid": "u-" + identifier, "identifier": identifier, "state": "done", "created_ns": created}


def _a_clean_trade():
    """Bought 0.01 BTC on upbit for 1,400,000 + 700 fee, sold it on bithumb for 1,410,000 - 564."""
    truth = _truth(upbit_btc="1.01", upbit_krw="48599300", bithumb_btc="0.99", bithumb_krw="51409436",
                   orders={"upbit": [_venue_order("s1b")], "bithumb": [_venue_order("s1s")]},
                   attempts={"upbit": {"s1b": 1}, "bithumb": {"s1s": 1}})
    journal = JournalView(
        orders=[_order("s1b", "upbit", "buy", "0.01", "1400000", "700"),
                _order("s1s", "bithumb", "sell", "0.01", "1410000", "564", role="sell")],
        signals=[{"id": "s1", "market": "KRW-BTC", "status": "filled", "residual": "0", "wall_ns": T0}])
    return truth, journal


def _names(found):
    return sorted(v.invariant for v in found)


def test_checker_passes_a_clean_trade():
    truth, journal = _a_clean_trade()
    assert check(truth, journal, PRICES, quiet=True) == []


def test_checker_reports_a_client_id_placed_twice():
    truth, journal = _a_clean_trade()
    truth.attempts["upbit"]["s1b"] = 2
    found = check(truth, journal, PRICES, quiet=False)
    assert _names(found) == ["duplicate_placement"] and found[0].subject == "upbit/s1b"


def test_checker_reports_an_order_the_journal_never_saw_and_one_journalled_too_late():
    truth, journal = _a_clean_trade()
    truth.orders["upbit"].append(_venue_order("ghost"))
    truth.orders["bithumb"][0]["created_ns"] = T0 - 5_000_000  # the venue had it before the journal
    found = check(truth, journal, PRICES, quiet=False)
    assert _names(found) == ["unjournalled_order", "unjournalled_order"]
    assert {v.subject for v in found} == {"upbit/ghost", "bithumb/s1s"}


def test_checker_reports_a_residual_the_engine_did_not_book():
    truth, journal = _a_clean_trade()
    # the sell never happened at the venue, the journal still shows it flat: -0.01 BTC hidden
    truth.accounts["bithumb"]["BTC"]["free"] = "1"
    truth.accounts["bithumb"]["KRW"]["free"] = "50000000"
    journal.orders[1]["executed_volume"], journal.orders[1]["executed_funds"] = "0", "0"
    journal.orders[1]["paid_fee"] = "0"
    found = check(truth, journal, PRICES, quiet=True)
    assert _names(found) == ["residual_mismatch"]
    assert "engine residual 0" in found[0].detail and "venues net 0.01" in found[0].detail
    journal.signals[0]["residual"] = "0.01"
    assert check(truth, journal, PRICES, quiet=True) == []


def test_checker_reports_journal_balances_that_differ_from_the_venue():
    truth, journal = _a_clean_trade()
    journal.orders[0]["paid_fee"] = "7"  # off by 693 KRW
    found = check(truth, journal, PRICES, quiet=True)
    assert _names(found) == ["journal_balance"] and found[0].subject == "upbit/KRW"
    assert check(truth, journal, PRICES, quiet=False) == []  # only checked when quiet


def test_checker_tolerates_dust_but_not_more():
    truth, journal = _a_clean_trade()
    truth.accounts["upbit"]["KRW"]["free"] = "48599300.5"
    assert check(truth, journal, PRICES, quiet=True, dust_krw=D(1)) == []
    truth.accounts["upbit"]["KRW"]["free"] = "48599302"
    assert _names(check(truth, journal, PRICES, quiet=True, dust_krw=D(1))) == ["journal_balance"]


def test_halt_and_an_open_breaker_must_survive_a_restart():
    halted = EngineState(t=100.0, halted=True, circuit="closed")
    assert [v.invariant for v in halt_lost(halted, EngineState(110.0, False, "closed"), 90.0, 30.0, "r1")] \
        == ["halt_lost"]
    assert halt_lost(halted, EngineState(110.0, True, "closed"), 90.0, 30.0, "r1") == []
    tripped = EngineState(t=100.0, halted=False, circuit="open")
    assert len(halt_lost(tripped, EngineState(110.0, False, "closed"), 95.0, 30.0, "r1")) == 1
    # last seen closed 40 s before the check: it may have timed out by itself
    assert halt_lost(tripped, EngineState(135.0, False, "closed"), 95.0, 30.0, "r1") == []


def test_a_trade_leg_placed_while_the_kill_file_was_there_is_reported_not_an_unwind():
    truth, journal = _a_clean_trade()
    journal.orders.append(_order("s0f1", "upbit", "sell", "0.01", "1400000", "700", role="flatten-1"))
    truth.orders["upbit"].append(_venue_order("s0f1"))
    found = traded_while_killed(truth, journal, since_ns=T0 - 1, subject="r1")  # decided at T0
    assert sorted(v.subject for v in found) == ["r1 bithumb/s1s", "r1 upbit/s1b"]
    assert traded_while_killed(truth, journal, since_ns=T0 + 2_000_000, subject="r1") == []


def test_a_leg_decided_before_the_kill_file_but_held_at_the_venue_is_not_trading_while_killed():
    # decided at T0, the kill file seen from T0 + 1 ms; a delay_orders fault made the venue
    # create the legs only at T0 + 2 s
    truth, journal = _a_clean_trade()
    for orders in truth.orders.values():
        orders[0]["created_ns"] = T0 + 2_000_000_000
    assert traded_while_killed(truth, journal, since_ns=T0 + 1_000_000, subject="r1") == []


def test_read_journal_reads_the_engines_schema(tmp_path):
    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        db.execute("INSERT INTO signals (id, market, status, residual, wall_ns) VALUES ('s1','KRW-BTC','sending',NULL,1)")
        db.execute("INSERT INTO orders (client_id, signal_id, venue, market, side, state, created_wall_ns) "
                   "VALUES ('s1b','s1','upbit','KRW-BTC','buy','sent',1)")
    view = read_journal(path)
    assert [o["client_id"] for o in view.orders] == ["s1b"] and view.signals[0]["status"] == "sending"
    assert view.in_flight(now_ns=2, stuck_after_s=10) == ["order s1b sent", "signal s1 sending"]
    assert read_journal(tmp_path / "missing.sqlite").orders == []


# --- the short campaign ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_campaign(tmp_path_factory):
    out = tmp_path_factory.mktemp("chaos")
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "chaos.py"), "--duration", "90", "--seed", "20261203",
         "--kill-every", "14", "--fault-every", "1.0", "--kill9-share", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=420)
    report_path = out / "chaos-run.json"
    assert report_path.exists(), f"chaos.py exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done, json.loads(report_path.read_text()), out


@pytest.mark.chaos
@pytest.mark.integration
def test_short_chaos_campaign_runs_faults_and_kill9_restarts(short_campaign):
    done, report, out = short_campaign
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 2 = the campaign itself could not run
    assert report["faults_total"] >= 30
    assert len(report["faults"]) >= 8  # most kinds got drawn
    assert report["kill9_total"] >= 2
    assert report["restarts"] >= report["kill9_total"] + report["sigterm_total"]
    assert report["checks"] == report["restarts"] + 1  # after every restart, and at the end
    assert report["trades"]["signals"] >= 5 and report["dislocations"] >= 10
    assert (out / "chaos-report.txt").read_text().startswith("chaos campaign:")


@pytest.mark.chaos
@pytest.mark.integration
def test_short_chaos_campaign_finds_no_invariant_violation(short_campaign):
    _, report, _ = short_campaign
    assert report["violations_total"] == 0, json.dumps(report["violations"], indent=1)[:4000]
