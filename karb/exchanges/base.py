"""The interface every venue client offers (real REST clients, and in-process fakes in tests).

The executor, risk and engine code depend only on this protocol, so the same code runs against
the real venues, the loopback sim, and in-process backtests.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from karb.model import Balance, BookView, OrderRequest, OrderResult, Venue
from karb.rules import MarketInfo


class VenueClient(Protocol):
    venue: Venue

    # --- public -------------------------------------------------------------------------
    def get_markets(self) -> list[str]:
        """All KRW markets the venue lists, as ``KRW-BTC`` strings."""

    def get_ticker(self, markets: list[str]) -> dict[str, Decimal]:
        """Last trade price per market."""

    def get_orderbook(self, market: str) -> BookView:
        """A REST snapshot of the book (``recv_ns`` = monotonic time of the response)."""

    def get_market_info(self, markets: list[str]) -> list[MarketInfo]:
        """Tick size, minimum order and fees per market, as far as the venue tells."""

    # --- private ------------------------------------------------------------------------
    def get_balances(self) -> dict[str, Balance]:
        """Balances by currency (``KRW``, ``BTC``...)."""

    def place_order(self, request: OrderRequest, priority: bool = False) -> OrderResult:
        """Send one order. Raises a ``VenueError`` subclass; ``OrderStateUnknown`` when the
        outcome is unknown (look up by ``request.client_id`` before re-sending).
        The result may be an acknowledgement only (Bithumb returns ids, no fills).
        ``priority`` orders (unwinds) may use the rate limiter's reserved headroom."""

    def get_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        """One order with its fills, by venue id or by client identifier."""

    def cancel_order(self, order_id: str | None = None, client_id: str | None = None) -> OrderResult:
        """Ask the venue to cancel (always priority traffic). The returned status may still
        be OPEN (cancel pending)."""

    def get_open_orders(self, market: str | None = None) -> list[OrderResult]:
        """Orders still resting (``wait`` / ``watch``)."""

    def close(self) -> None:
        """Release sessions."""
