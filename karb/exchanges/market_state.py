"""Which listed KRW markets a venue flags: the answer behind "this market is not traded".

A large gap between the venues appears exactly when a venue warns about a coin (Upbit's
투자유의 ``market_warning: CAUTION`` and its ``market_event`` cautions, one of which is
``GLOBAL_PRICE_DIFFERENCES``; Bithumb's ``market_warning`` and its 경보제 list
``/v1/market/virtual_asset_warning``) or is about to delist it, and such a gap may never close.

Each parser returns ``{market: reason or None}`` for every listed KRW market; a market missing
from the answer is not listed (any more). Shapes: Upbit ``GET /v1/market/all?is_details=true``
``[{"market", "korean_name", "english_name", "market_warning": "NONE"|"CAUTION",
"market_event": {"warning": bool, "caution": {"PRICE_FLUCTUATIONS": bool, ...}}}]`` (docs.upbit.com
"마켓 코드 조회"; the ``market_event`` object confirmed by third-party clients, e.g. glupbit);
Bithumb ``GET /v1/market/all?isDetails=true`` with ``market_warning`` only, and the warning list
``[{"market", "warning_type", "warning_step"?, "end_date"}]`` [U: ``warning_step`` is seen in
some clients' captures, not in the reference page].
"""
from __future__ import annotations

from typing import Any


def _krw(body: list) -> list[dict[str, Any]]:
    return [item for item in body if str(item["market"]).startswith("KRW-")]


def parse_upbit_states(body: list) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in _krw(body):
        reasons = []
        if item.get("market_warning") == "CAUTION":
            reasons.append("investment warning (market_warning CAUTION)")
        event = item.get("market_event") or {}
        if event.get("warning"):
            reasons.append("warning (market_event)")
        cautions = sorted(k for k, on in (event.get("caution") or {}).items() if on)
        if cautions:
            reasons.append("caution: " + ", ".join(cautions))
        out[item["market"]] = "; ".join(reasons) or None
    return out


def parse_bithumb_states(body: list, warnings: list) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    flagged: dict[str, list[str]] = {}
    for row in warnings:
        kind = str(row["warning_type"])
        step = row.get("warning_step")
        flagged.setdefault(row["market"], []).append(f"{kind} ({step})" if step else kind)
    for item in _krw(body):
        reasons = []
        if item.get("market_warning") == "CAUTION":
            reasons.append("investment warning (market_warning CAUTION)")
        if item["market"] in flagged:
            reasons.append("alert: " + ", ".join(sorted(flagged[item["market"]])))
        out[item["market"]] = "; ".join(reasons) or None
    return out
