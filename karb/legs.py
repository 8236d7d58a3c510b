"""One order of a trade and its state machine.

::

    NEW ──► SENT ──► ACKNOWLEDGED ──► PARTIALLY_FILLED ──► FILLED
             │  │          │                 │  ▲   └────► CANCELLED (what filled, filled)
             │  │          └──────► FILLED / CANCELLED     └─ more fills
             │  ├──► FILLED / PARTIALLY_FILLED / CANCELLED / REJECTED  (a full answer at once)
             │  └──► UNKNOWN (timed out) ──► anything SENT may go to, once looked up
             └─ NEW ──► REJECTED (refused before a byte was sent)

FILLED, CANCELLED and REJECTED are final. Anything else raises ``IllegalTransition``: a
late, stale answer can never turn a filled leg back into an open one. A leg is driven by one
thread at a time (the leg thread that sent it, then the ``leg-resolver`` if it was left not
final, then the thread running the unwind), so it has no lock of its own.
"""
from __future__ import annotations

import enum
from decimal import Decimal

from karb.model import OrderRequest, OrderResult, OrderStatus, OrderType

ZERO = Decimal(0)


class LegState(str, enum.Enum):
    NEW = "new"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


S = LegState
_AFTER_SEND = {S.ACKNOWLEDGED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.REJECTED}
TRANSITIONS: dict[LegState, frozenset[LegState]] = {
    S.NEW: frozenset({S.SENT, S.REJECTED}),
    S.SENT: frozenset(_AFTER_SEND | {S.UNKNOWN}),
    S.UNKNOWN: frozenset(_AFTER_SEND),
    S.ACKNOWLEDGED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED}),
    S.FILLED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
}
FINAL = frozenset({S.FILLED, S.CANCELLED, S.REJECTED})


class IllegalTransition(RuntimeError):
    """A leg was asked to move to a state it cannot reach from where it is."""


class Leg:
    """An order we intend to send, its state, and what the venue says filled (exact)."""

    __slots__ = ("role", "request", "state", "order_id", "executed_volume", "executed_funds",
                 "paid_fee", "error", "history", "sent_ns", "wire_ns", "acked_ns", "fills")

    def __init__(self, role: str, request: OrderRequest):
        self.role = role  # "buy", "sell", "retry-1", "flatten-2", ...
        self.request = request
        self.state = LegState.NEW
        self.order_id: str | None = None
        self.executed_volume = ZERO
        self.executed_funds = ZERO
        self.paid_fee = ZERO
        self.error = ""
        self.history: list[tuple[LegState, int]] = [(LegState.NEW, 0)]
        self.sent_ns = 0  # the leg left NEW: its thread began to place it
        self.wire_ns = 0  # its request's last byte was handed to the socket (lean path only)
        self.acked_ns = 0
        self.fills: tuple = ()

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def ended_normally(self) -> bool:
        """Filled, or an IOC/market remainder cancelled, with no error on the way (never
        refused, never unknown, never an answer we had to look up)."""
        return (self.state in (LegState.FILLED, LegState.CANCELLED) and not self.error
                and all(state is not LegState.UNKNOWN for state, _ in self.history))

    @property
    def client_id(self) -> str:
        return self.request.client_id

    def transition(self, to: LegState, now_ns: int = 0) -> None:
        if to not in TRANSITIONS[self.state]:
            raise IllegalTransition(
                f"leg {self.client_id}: {self.state.value} -> {to.value} is not allowed")
        self.state = to
        self.history.append((to, now_ns))

    def mark_sent(self, now_ns: int) -> None:
        self.transition(LegState.SENT, now_ns)
        self.sent_ns = now_ns

    def reject(self, error: str, now_ns: int = 0) -> None:
        self.error = error
        self.transition(LegState.REJECTED, now_ns)

    def apply(self, result: OrderResult, now_ns: int = 0) -> None:
        """Move to the state ``result`` describes and record what filled.

        Re-applying an answer that says nothing new is a no-op; executed amounts never
        shrink (a venue's answers are cumulative). Raises ``IllegalTransition``.
        """
        if result.executed_volume < self.executed_volume:
            raise IllegalTransition(
                f"leg {self.client_id}: executed volume fell from {self.executed_volume} "
                f"to {result.executed_volume}")
        target = self._target(result)
        more = result.executed_volume > self.executed_volume
        if target is not self.state or (more and target is LegState.PARTIALLY_FILLED):
            self.transition(target, now_ns)
        if not self.acked_ns:
            self.acked_ns = now_ns
        self.order_id = result.order_id or self.order_id
        self.executed_volume = result.executed_volume
        self.executed_funds = result.executed_funds
        self.paid_fee = result.paid_fee
        if result.fills:
            self.fills = result.fills

    def _target(self, result: OrderResult) -> LegState:
        filled = result.executed_volume
        if result.status is OrderStatus.OPEN:
            return LegState.PARTIALLY_FILLED if filled > 0 else LegState.ACKNOWLEDGED
        wanted = self.request.volume
        if self.request.order_type is OrderType.MARKET_BUY:
            complete = result.status is OrderStatus.DONE and filled > 0
        else:
            complete = wanted is not None and filled >= wanted
        return LegState.FILLED if complete else LegState.CANCELLED
