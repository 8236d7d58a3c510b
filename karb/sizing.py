"""Decide once: the exact limits a signal must meet, shared by the strategy and risk.

The strategy sizes on the hot path in floats (``karb.spread``); risk, the ledger and inventory
check in ``Decimal``. A float one ulp over a limit made the engine refuse its own signal, so a
candidate is finished exactly: ``Risk.exact_cap`` and ``Inventory.exact_cap`` give the largest
volume on the venues' grid that their checks accept at the candidate's limit prices (each the
inverse of its check's own expression, via ``steps_within``), ``spread.finalize`` shrinks the
volume to them, and ``refusal`` runs those very checks (``Risk.check``: trade value, position
room, the ledger reservation; ``Inventory.check``: bands) on the result.

Used on the strategy thread once per candidate (never per book change); ``risk.approve``
applies the same ``Risk`` checks when the signal is submitted.
"""
from __future__ import annotations

from decimal import Decimal, localcontext

from karb.model import Signal

ZERO = Decimal(0)


def steps_within(bound: Decimal, unit: Decimal, step: Decimal) -> Decimal:
    """Largest multiple ``v`` of ``step`` with ``v * unit <= bound`` exactly (0 if none).

    Integer division, so no rounding can put ``v * unit`` over ``bound``; the wide context
    keeps huge balances at fine steps from overflowing 28 digits.
    """
    if bound <= 0:
        return ZERO
    with localcontext() as ctx:
        ctx.prec = 60
        return (bound // (unit * step)) * step


def refusal(risk, inventory, signal: Signal) -> str | None:
    """Why risk (limits and ledger) or an inventory band would refuse ``signal``, or None."""
    return risk.check(signal) or inventory.check(signal, *risk.fees(signal))
