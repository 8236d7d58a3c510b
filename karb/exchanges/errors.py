"""Typed venue errors. Each carries the venue, the HTTP status, and the venue's own code and text.

Callers decide by type: ``AuthError`` -> stop and fix keys; ``InsufficientFunds`` /
``InvalidOrder`` -> the order was *not* placed; ``RateLimited`` / ``VenueUnavailable`` -> not
placed, retry later; ``OrderStateUnknown`` -> the order *may* have been placed: look it up by
client identifier before doing anything else; ``OrderNotReady`` -> the order exists but the
venue cannot show it yet: read it again shortly.
"""
from __future__ import annotations

from typing import Any, Callable

from karb.model import Venue


class VenueError(Exception):
    """A venue refused or failed a request."""

    def __init__(self, venue: Venue, message: str, code: str = "", status: int = 0):
        super().__init__(f"{venue.value} {status or ''} {code}: {message}".replace("  ", " "))
        self.venue = venue
        self.code = code  # the venue's own error name / status code, as a string
        self.venue_message = message
        self.status = status


class AuthError(VenueError):
    """Keys invalid, expired, not allowed from this IP, or signature/nonce rejected."""


class InsufficientFunds(VenueError):
    """Not enough balance for the order. Not placed."""


class InvalidOrder(VenueError):
    """Order breaks the venue's rules (tick, minimum, precision, parameters). Not placed."""


class OrderNotFound(VenueError):
    """The venue has no order with that id / client identifier."""


class OrderNotReady(VenueError):
    """Bithumb ``422 order_not_ready`` ("주문 접수 처리 중입니다. 잠시 후 다시 시도해주세요."): the
    order was accepted and is still being registered. Retryable: read it again shortly. It is
    *not* ``OrderNotFound`` (the order exists)."""

    retryable = True


class RateLimited(VenueError):
    """HTTP 429 (or 418 block). Not placed. ``retry_after_s`` when the venue said."""

    def __init__(self, venue: Venue, message: str, code: str = "", status: int = 429,
                 retry_after_s: float | None = None):
        super().__init__(venue, message, code, status)
        self.retry_after_s = retry_after_s


class VenueUnavailable(VenueError):
    """5xx, maintenance, or connection refused before sending. Not placed."""


class WalletSuspended(VenueUnavailable):
    """The asset's deposits or withdrawals (or its network) are suspended: nothing was sent."""


class UnknownVenueError(VenueError):
    """An error the mapping does not know. Treat as not placed only if the status says so."""


class OrderStateUnknown(VenueError):
    """The request may or may not have reached the venue (read timeout, reset after send).

    ``client_id`` is the identifier to look the order up by before anything is re-sent.
    """

    def __init__(self, venue: Venue, message: str, client_id: str | None = None):
        super().__init__(venue, message, code="state_unknown", status=0)
        self.client_id = client_id


_PARSE_ERRORS = (KeyError, ValueError, TypeError, AttributeError, IndexError, StopIteration)


def parse_body(venue: Venue, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a venue-body parser; a body of unexpected shape becomes ``UnknownVenueError``
    (code ``bad_body``) instead of a stray ``KeyError`` in the caller."""
    try:
        return fn(*args)
    except VenueError:
        raise
    except _PARSE_ERRORS as exc:
        raise UnknownVenueError(venue, f"unexpected body ({type(exc).__name__}: {exc})",
                                "bad_body") from exc
