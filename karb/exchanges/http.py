"""Shared REST transport: per-thread keep-alive sessions, timeouts, rate limits, retries, errors.

Every venue client sends through one ``RestTransport``:

* one ``requests.Session`` per calling thread (``threading.local``; sessions have no
  thread-safety promise, psf/requests#2766), each with a pooled ``HTTPAdapter`` kept warm by
  keep-alive, and no ``Origin`` header ever (Upbit throttles browser-style calls to 1 per 10 s);
* explicit ``(connect, read)`` timeouts from ``VenueConfig``;
* a slot of the venue's ``RateLimiter`` held from before each call until its answer (so it
  counts from when the venue had counted it) and its ``Remaining-Req`` header fed back;
* reads (``idempotent=True``) retried ``rate_limits.retry_reads`` times on 429 / 5xx /
  timeouts with exponential backoff (a 429 instead closes the group until the venue's next
  window, or for ``Retry-After`` up to ``ratelimit.MAX_PAUSE_S``, and the retry waits for it);
* a 418 (Upbit: the IP/account is blocked for repeated requests past a 429) is never retried:
  every group of the venue closes for the block (``RateLimiter.ban``), logged as an ERROR;
* bounded waits for a slot: ``PRIORITY_MAX_WAIT_S`` for priority calls (cancels, unwinds),
  ``MAX_WAIT_S`` for the others (never less than one window). A group closed for longer fails
  the call at once with ``RateLimited`` (code ``window_closed``, nothing sent), and ``close()``
  cuts a wait short (``VenueUnavailable``, nothing sent);
* writes (orders, cancels) never retried: ``ConnectTimeout`` or a refused connection means
  "not sent" (``VenueUnavailable``); a ``ReadTimeout`` or any other connection failure, an
  unreadable 2xx body, or a 5xx other than 503, means "may have been applied"
  (``OrderStateUnknown``).

Query strings are built here (``wire_query``). urllib3 percent-encodes ``[`` and ``]`` in every
request target, so arrays go out as ``states%5B%5D=wait`` (as pyupbit sends them); the venue
decodes before hashing, and the signers hash the *decoded* query read back from the prepared
request (``states[]=wait``), so the hashed string is exactly what the venue sees.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any, Callable
from urllib.parse import quote

import orjson
import requests
from loguru import logger
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError

from karb.config import VenueConfig
from karb.exchanges.errors import (
    AuthError, InsufficientFunds, InvalidOrder, OrderNotFound, OrderNotReady, OrderStateUnknown,
    RateLimited, UnknownVenueError, VenueError, VenueUnavailable, WalletSuspended,
)
from karb.exchanges.ratelimit import (MAX_PAUSE_S, WINDOW_MARGIN_S, Group, RateLimiter, Ticket,
                                      WindowClosed)
from karb.exchanges.wire import NotSent, SentNoAnswer, WireConnection, build_request
from karb.model import Venue

Query = Sequence[tuple[str, "str | Sequence[str]"]]
ErrorOf = Callable[[Venue, int, Any, str, Any], "VenueError | None"]
"""``error_of(venue, http_status, decoded_body_or_None, body_text, headers)`` -> error or None."""

USER_AGENT = "karb/0.1"
BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 5.0
PRIORITY_MAX_WAIT_S = 2.0  # a cancel / unwind fails rather than wait longer for a slot
MAX_WAIT_S = 10.0  # any other call
WARM_MIN = 2  # lean connections kept per venue at least: one trade's leg, and an unwind's
WINDOW_CLOSED = "window_closed"  # RateLimited code: the limiter refused to wait, nothing sent
_SAFE = "-_.~,:"  # left as-is in query keys and values; everything else is percent-encoded

# Error names as each venue documents them. Upbit: docs.upbit.com rest-api-guide and the
# new-order page's examples (notfoundmarket, over_krw_funds_bid/ask, 403 market_offline).
# Bithumb 2.0: apidocs.bithumb.com "API 주요 에러 코드" (v2.1.5): invalid_parameter,
# invalid_price[_bid|_ask], under_price_limit_*, cross_trading, expired_jwt, NotAllowIP,
# 403 blocked_member_id, 404 order_not_found, 422 order_not_ready.
AUTH_CODES = frozenset({
    "jwt_verification", "invalid_access_key", "expired_access_key", "nonce_used",
    "no_authorization_ip", "out_of_scope", "no_credentials", "expired_jwt",
    "NotAllowIP", "blocked_member_id", "bank_account_required", "two_factor_auth_required",
})
INVALID_ORDER_CODES = frozenset({
    "validation_error", "invalid_query_payload", "invalid_parameter", "invalid_time_in_force",
    "notfoundmarket", "cross_trading", "currency does not have a valid value",
})
INVALID_ORDER_PREFIXES = ("invalid_price", "invalid_volume", "under_min_total", "over_max_total",
                          "over_krw_funds", "under_price_limit")
UNAVAILABLE_CODES = frozenset({"market_offline"})  # Upbit 403: market or system maintenance
NOT_READY_CODES = frozenset({"order_not_ready"})  # Bithumb 422: order still being registered
# Withdrawals (karb.exchanges.wallet): Upbit documents withdraw_address_not_registerd (sic; the
# newer pages spell it ..._registered) and Bithumb withdraw_insufficient_balance; the suspended
# wallet's name is not documented in the sources found [U].
WALLET_SUSPENDED_CODES = frozenset({"withdraw_suspended"})
WITHDRAW_INSUFFICIENT_CODES = frozenset({"withdraw_insufficient_balance"})
# A 418 body gives the block's length in a form neither venue documents [U]: "30s", "10 분"...
_BLOCK_TIME = re.compile(r"(\d+(?:\.\d+)?)\s*(초|seconds?|secs?|s|분|minutes?|mins?|m)(?![a-z])",
                         re.IGNORECASE)


def render_query(params: Query) -> str:
    """The unencoded ``k=v&k=v`` string, arrays as repeated ``k[]=v``, in the given order."""
    return "&".join(f"{k}={v}" for k, v in _pairs(params))


def wire_query(params: Query) -> str:
    """The URL form of ``render_query``: percent-decoding it gives ``render_query`` back.

    Ordinary values (markets, uuids, numbers) are left as they are; ``[]`` becomes ``%5B%5D``
    (urllib3 would encode it anyway)."""
    return "&".join(f"{quote(k, safe=_SAFE)}={quote(str(v), safe=_SAFE)}" for k, v in _pairs(params))


def _pairs(params: Query):
    for key, value in params:
        if isinstance(value, (list, tuple)):
            for item in value:
                yield f"{key}[]", item
        else:
            yield key, value


def classify(venue: Venue, status: int, code: str, message: str,
             retry_after_s: float | None = None) -> VenueError:
    """Map a venue's answer to the typed error a caller can act on."""
    if code in UNAVAILABLE_CODES:
        return VenueUnavailable(venue, message, code, status)
    if code in WALLET_SUSPENDED_CODES:
        return WalletSuspended(venue, message, code, status)
    if code in WITHDRAW_INSUFFICIENT_CODES:
        return InsufficientFunds(venue, message, code, status)
    if code in NOT_READY_CODES or status == 422:
        return OrderNotReady(venue, message, code or "order_not_ready", status)
    if code in AUTH_CODES or status == 401:
        return AuthError(venue, message, code, status)
    if code.startswith("insufficient_funds"):
        return InsufficientFunds(venue, message, code, status)
    if code in INVALID_ORDER_CODES or code.startswith(INVALID_ORDER_PREFIXES):
        return InvalidOrder(venue, message, code, status)
    if code == "order_not_found" or status == 404:
        return OrderNotFound(venue, message, code, status)
    if status in (429, 418):
        if status == 418 and retry_after_s is None:
            retry_after_s = block_time_of(message)
        return RateLimited(venue, message, code, status, retry_after_s)
    if status == 403:  # permission / security on both venues
        return AuthError(venue, message, code, status)
    if status >= 500:
        return VenueUnavailable(venue, message, code, status)
    if status == 400:
        return InvalidOrder(venue, message, code, status)
    return UnknownVenueError(venue, message, code, status)


def block_time_of(message: str) -> float | None:
    """Seconds of a block as a 418's message states it ("blocked for 30s", "10분"), or None."""
    match = _BLOCK_TIME.search(message or "")
    if match is None:
        return None
    unit = match.group(2).lower()
    return float(match.group(1)) * (60.0 if unit[0] in "m분" else 1.0)


def retry_after_of(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the backoff applies instead


def jwt_api_error(venue: Venue, status: int, body: Any, text: str, headers) -> VenueError | None:
    """Upbit / Bithumb 2.0: ``{"error": {"name": ..., "message": ...}}`` (also seen with a 2xx).

    A non-JSON error body (Upbit's 429 is the plain text ``Too many API requests.``) is mapped
    by its HTTP status, its text as the message."""
    error = body.get("error") if isinstance(body, dict) else None
    if status < 400 and not isinstance(error, dict):
        return None
    code, message = "", text[:200]
    if isinstance(error, dict):
        code = str(error.get("name", "") or "")
        message = str(error.get("message", "") or "")
    return classify(venue, status if status >= 400 else 400, code, message, retry_after_of(headers))


def _not_sent(exc: Exception) -> bool:
    # requests raises ConnectTimeout for a connect timeout and ConnectionError wrapping
    # MaxRetryError(reason=NewConnectionError) for refused / unresolvable: nothing was sent.
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    return isinstance(getattr(reason, "reason", reason), ConnectTimeoutError)


_TRANSPORT_ERRORS = (
    requests.exceptions.ConnectionError, requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError,
)


def _close_session(session: requests.Session) -> None:
    # urllib3 2.x pool managers close pooled connections only when the pool is garbage
    # collected, and a kept traceback (a response in a frame) can keep it alive: a server
    # then waits on our idle keep-alive socket. Close every pool explicitly.
    for adapter in {id(a): a for a in session.adapters.values()}.values():
        pools = getattr(getattr(adapter, "poolmanager", None), "pools", None)
        for key in list(pools.keys()) if pools is not None else ():
            try:
                pools[key].close()
            except KeyError:
                pass
    session.close()


def _encode_body(headers: dict[str, str], json_body: dict | None, form: str | None) -> bytes | None:
    """The request body's bytes (JSON or an encoded form), its Content-Type set in ``headers``."""
    if json_body is not None:
        headers["Content-Type"] = "application/json; charset=utf-8"
        return orjson.dumps(json_body)
    if form is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return form.encode("ascii")
    return None


class RestTransport:
    """Send one venue's REST calls. Safe to call from many threads at once.

    ``sleep(seconds)`` is the backoff wait (injected by tests); by default it waits on the
    transport's close event, so ``close()`` cuts a backoff short.
    """

    def __init__(self, venue: Venue, config: VenueConfig, limiter: RateLimiter, error_of: ErrorOf,
                 sleep: Callable[[float], None] | None = None, pool_maxsize: int = 4):
        self.venue = venue
        self.base_url = config.rest_url.rstrip("/")
        self.timeout = (config.connect_timeout_s, config.read_timeout_s)
        self.retry_reads = config.rate_limits.retry_reads
        self.limiter = limiter
        self._error_of = error_of
        self._closed = threading.Event()
        self._sleep = sleep or (lambda seconds: self._closed.wait(seconds))
        self._pool_maxsize = pool_maxsize
        self._proxy = config.proxy
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._wires: list[WireConnection] = []  # every lean connection, idle or in use
        self._idle_wires: list[WireConnection] = []
        self._opening = 0  # fresh lean connections being opened by ``warm``
        self._tls = None  # the lean path's TLS context: requests' defaults (tests inject one)
        self._sessions_lock = threading.Lock()
        self._log = logger.bind(venue=venue.value)

    # --- sessions -------------------------------------------------------------------------
    @property
    def session(self) -> requests.Session:
        """This thread's session, created on first use."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self._pool_maxsize, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
            session.headers.pop("Origin", None)
            # No proxy / .netrc lookups in the environment on every request (about a third of
            # a request's CPU on the order path); a proxy is explicit config instead.
            session.trust_env = False
            if self._proxy:
                session.proxies = {"http": self._proxy, "https": self._proxy}
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        self._closed.set()
        self.limiter.wake()  # a call waiting for a slot gives up (nothing sent)
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
            wires, self._wires, self._idle_wires = self._wires, [], []
        for session in sessions:
            _close_session(session)
        for wire in wires:
            wire.close()

    # --- requests -------------------------------------------------------------------------
    def request(self, method: str, path: str, *, group: Group, query: Query = (),
                json_body: dict | None = None, form: str | None = None, auth=None,
                priority: bool = False, idempotent: bool = True,
                client_id: str | None = None) -> Any:
        """Send one call and return its decoded JSON body, or raise a ``VenueError``.

        ``json_body`` values must already be strings (they are hashed as sent); ``form`` is
        an already-encoded ``application/x-www-form-urlencoded`` body (Bithumb legacy).
        """
        url = self.base_url + path + (f"?{wire_query(query)}" if query else "")
        headers: dict[str, str] = {}
        data = _encode_body(headers, json_body, form)
        attempts = 1 + (self.retry_reads if idempotent else 0)
        for attempt in range(attempts):
            try:
                return self._send_once(method, url, group, headers, data, auth, priority,
                                       idempotent, client_id)
            except (RateLimited, VenueUnavailable) as exc:
                if attempt + 1 >= attempts or not self._retryable(exc):
                    raise
                if isinstance(exc, RateLimited):
                    # The group is closed until the venue's next window: the next acquire waits.
                    self._log.warning("{} {} failed ({}); retry {}/{} when the {} window reopens "
                                      "in {:.2f}s", method, path, exc, attempt + 1, attempts - 1,
                                      group.value, self.limiter.closed_for(group))
                    continue
                delay = self._backoff(attempt)
                self._log.warning("{} {} failed ({}); retry {}/{} in {:.2f}s", method, path,
                                  exc, attempt + 1, attempts - 1, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- the lean write path (karb.exchanges.wire) -----------------------------------------
    @property
    def lean(self) -> bool:
        """Whether writes can go the lean path (not through a proxy: that is ``requests``')."""
        return not self._proxy

    def _checkout(self, connect: bool) -> WireConnection | None:
        """An idle lean connection that is still open (the most recently used first), or with
        ``connect`` a fresh one (``NotSent`` if it cannot be opened); else None."""
        while True:
            with self._sessions_lock:
                wire = self._idle_wires.pop() if self._idle_wires else None
            if wire is None:
                break
            if wire.alive():
                return wire
            wire.close()  # the venue closed it while idle: nothing of ours was written to it
            with self._sessions_lock:
                if wire in self._wires:
                    self._wires.remove(wire)
        return self._open() if connect else None

    def _open(self) -> WireConnection:
        wire = WireConnection(self.base_url, self.timeout[0], self.timeout[1], self._tls)
        wire.ready()  # NotSent if it cannot be opened
        with self._sessions_lock:
            self._wires.append(wire)
        return wire

    def _checkin(self, wire: WireConnection) -> None:
        with self._sessions_lock:
            if wire.is_open and not self._closed.is_set():
                self._idle_wires.append(wire)
            else:
                wire.close()
                if wire in self._wires:
                    self._wires.remove(wire)

    def prepare(self, method: str, path: str, *, group: Group, query: Query = (),
                json_body: dict | None = None, form: str | None = None, auth=None,
                priority: bool = False, idempotent: bool = False, client_id: str | None = None,
                wait: bool = True, fresh: bool = False) -> "PreparedCall | None":
        """Take ``group``'s slot, sign and serialise one call and take a lean connection,
        writing nothing: ``PreparedCall.write`` (any thread) or ``finish`` sends it.

        Raises what ``request`` raises before a byte is sent (``RateLimited``,
        ``VenueUnavailable`` "not sent"), the slot then released. Never retried. With
        ``wait=False`` (a caller that must not block: the strategy thread) it returns None
        instead of waiting for a slot or opening a connection, having taken neither.
        ``fresh`` opens a new connection for it (``warm``)."""
        query_string = f"?{wire_query(query)}" if query else ""
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate",
                   "Accept": "application/json", "Connection": "keep-alive"}
        data = _encode_body(headers, json_body, form)
        if wait:
            ticket = self._acquire(group, priority)  # may raise: nothing was sent
        else:
            try:
                ticket = self.limiter.acquire(group, priority, 0.0, self._closed)
            except WindowClosed:
                return None
        wire = None
        try:
            wire = self._open() if fresh else self._checkout(connect=wait)
            if wire is None:
                self.limiter.release(group, ticket)
                return None
            if auth is not None:  # the same signer as requests', on the same url and body
                auth(_Unsigned(self.base_url + path + query_string, data, headers))
            raw = build_request(method, wire.path_prefix + path + query_string, wire.host_header,
                                headers, data)
        except NotSent as exc:
            self.limiter.release(group, ticket)
            raise VenueUnavailable(self.venue, f"not sent: {exc}", "not_sent") from exc
        except BaseException:
            self.limiter.release(group, ticket)
            if wire is not None:
                self._checkin(wire)
            raise
        return PreparedCall(self, wire, method, group, ticket, raw, idempotent, client_id)

    def warm(self, path: str, query: Query = ()) -> None:
        """One public GET on every idle lean connection, and on a new one while there are
        fewer than ``WARM_MIN``, so orders find them open (``execution.keepalive_s`` re-warms
        them; the leg threads do it at once, so the first takes the idle ones). ``VenueError``."""
        if not self.lean:
            return
        with self._sessions_lock:
            idle, self._idle_wires = self._idle_wires, []
            fresh = max(0, WARM_MIN - len(self._wires) - self._opening)
            self._opening += fresh
        try:
            for wire in idle:
                self._checkin(wire)  # prepare() takes it back first (LIFO); a dead one is replaced
                self.prepare("GET", path, group=Group.PUBLIC, query=query, idempotent=True).finish()
            for _ in range(fresh):
                self.prepare("GET", path, group=Group.PUBLIC, query=query, idempotent=True,
                             fresh=True).finish()
        finally:
            with self._sessions_lock:
                self._opening -= fresh

    def _retryable(self, exc: VenueError) -> bool:
        # A 418 block: retrying only lengthens it. A refused wait: a retry would wait the same.
        if isinstance(exc, RateLimited):
            return exc.status != 418 and exc.code != WINDOW_CLOSED
        return not self._closed.is_set()

    def _acquire(self, group: Group, priority: bool):
        """A slot of ``group``, or ``RateLimited`` / ``VenueUnavailable``: nothing was sent."""
        bound = PRIORITY_MAX_WAIT_S if priority else MAX_WAIT_S
        window = self.limiter.windows[group].window_s + WINDOW_MARGIN_S
        try:
            return self.limiter.acquire(group, priority, max(bound, window), self._closed)
        except WindowClosed as exc:
            if self._closed.is_set():
                raise VenueUnavailable(self.venue, "not sent: transport closed", "not_sent") from exc
            raise RateLimited(self.venue, f"not sent: {group.value} {exc}, closed for "
                              f"{exc.retry_after_s:.1f}s", WINDOW_CLOSED, 0, exc.retry_after_s) from exc

    def _send_once(self, method, url, group, headers, data, auth, priority, idempotent,
                   client_id) -> Any:
        ticket = self._acquire(group, priority)  # may raise: nothing was sent
        # The slot counts from the answer: the venue counted the call before answering it.
        try:
            try:
                response = self.session.request(method, url, headers=headers, data=data, auth=auth,
                                                timeout=self.timeout, allow_redirects=False)
            except _TRANSPORT_ERRORS as exc:
                raise self._transport_error(exc, idempotent, client_id) from exc
            self.limiter.observe_headers(group, response.headers)
        finally:
            self.limiter.release(group, ticket)
        return self._answer(group, response.status_code, response.content, response.text,
                            response.headers, idempotent, client_id)

    def _answer(self, group: Group, status: int, content: bytes, text: str, headers,
                idempotent: bool, client_id: str | None) -> Any:
        """The decoded body of an answer, or raise the ``VenueError`` it means (both paths)."""
        try:
            body = orjson.loads(content) if content else None
        except orjson.JSONDecodeError:
            body = None
        error = self._error_of(self.venue, status, body, text, headers)
        if error is None and body is None:
            message = f"unreadable {status} body: {text[:120]!r}"
            error = (UnknownVenueError(self.venue, message, "bad_body", status)
                     if idempotent else OrderStateUnknown(self.venue, message, client_id))
        if isinstance(error, VenueUnavailable) and not idempotent and status >= 500 \
                and status != 503:
            # A 500/502/504 on an order may come after the venue applied it (a gateway timing
            # out on a slow backend): unknown, not "not placed". 503 is maintenance.
            error = OrderStateUnknown(self.venue, f"{status} on a write: {error}", client_id)
        if error is not None:
            if isinstance(error, RateLimited):
                self._rate_limited(group, error)
            raise error
        return body

    def _rate_limited(self, group: Group, error: RateLimited) -> None:
        if error.status == 418:
            block_s = self.limiter.ban(group, error.retry_after_s)
            self._log.error("{} BLOCKED our requests (HTTP 418: {}): every {} request group closed "
                            "for {:.0f}s (block {} since start); cancels, look-ups and orders fail "
                            "until then", self.venue.value, error.venue_message or error.code,
                            self.venue.value, block_s, self.limiter.ban_stats().bans)
            return
        self.limiter.penalise(group, error.retry_after_s)
        if error.retry_after_s is not None and error.retry_after_s > MAX_PAUSE_S:
            self._log.warning("{} asked Retry-After {:.0f}s on the {} group; closing it for {:.0f}s "
                              "only", self.venue.value, error.retry_after_s, group.value, MAX_PAUSE_S)

    def _transport_error(self, exc: Exception, idempotent: bool, client_id: str | None) -> VenueError:
        kind = type(exc).__name__
        if _not_sent(exc):
            return VenueUnavailable(self.venue, f"not sent: {kind}", "not_sent")
        if idempotent:
            return VenueUnavailable(self.venue, f"no answer: {kind}", "timeout")
        return OrderStateUnknown(self.venue, f"sent, no answer: {kind}", client_id)

    @staticmethod
    def _backoff(attempt: int) -> float:
        return min(BACKOFF_MAX_S, BACKOFF_BASE_S * (2 ** attempt))


class _Unsigned:
    """What a ``requests`` auth reads and writes of a prepared request (url, body, headers),
    so the lean path signs with the very same signers."""

    __slots__ = ("url", "body", "headers")

    def __init__(self, url: str, body: bytes | None, headers: dict[str, str]):
        self.url = url
        self.body = body
        self.headers = headers


class PreparedCall:
    """One call signed and serialised, its rate-limit slot held, not yet (or just) written.

    ``write`` may be called from any thread (a trade's last leg to be ready writes both legs'
    requests back to back) and writes at most once; ``finish`` belongs to the preparing
    thread: it writes if nobody has, reads the answer, releases the slot and returns the
    decoded body or raises the venue error, exactly as ``RestTransport.request`` would.
    ``close`` gives the slot back and forbids any later write (for a call never finished)."""

    def __init__(self, transport: RestTransport, wire: WireConnection, method: str, group: Group,
                 ticket: Ticket, data: bytes, idempotent: bool, client_id: str | None):
        self._transport = transport
        self._wire = wire
        self._method = method
        self._group = group
        self._ticket = ticket
        self._data = data
        self._idempotent = idempotent
        self._client_id = client_id
        self._lock = threading.Lock()
        self._written = self._released = self._answered = False
        self._failure: SentNoAnswer | None = None
        self.wire_ns = 0  # time.monotonic_ns() when the last byte was handed to the socket

    def write(self) -> None:
        with self._lock:
            if self._written:
                return
            self._written = True
            try:
                self.wire_ns = self._wire.write(self._data)
            except SentNoAnswer as exc:
                self._failure = exc
            except Exception as exc:  # whatever it was, part of the request may have gone
                self._wire.close()
                self._failure = SentNoAnswer(f"write failed: {type(exc).__name__}: {exc}")

    def finish(self) -> Any:
        transport = self._transport
        try:
            self.write()
            if self._failure is not None:
                raise self._failure
            answer = self._wire.read(self._method)
            self._answered = True
            transport.limiter.observe_headers(self._group, answer.headers)
        except SentNoAnswer as exc:
            if self._idempotent:
                raise VenueUnavailable(transport.venue, f"no answer: {exc}", "timeout") from exc
            raise OrderStateUnknown(transport.venue, f"sent, no answer: {exc}",
                                    self._client_id) from exc
        finally:
            self.close()
        return transport._answer(self._group, answer.status, answer.content, answer.text,
                                 answer.headers, self._idempotent, self._client_id)

    def close(self) -> None:
        with self._lock:
            unread = self._written and not self._answered  # an answer may still be coming
            self._written = True
            if self._released:
                return
            self._released = True
        self._transport.limiter.release(self._group, self._ticket)
        if unread:
            self._wire.close()
        self._transport._checkin(self._wire)


class PreparedOrder:
    """A placement ready to go (``VenueClient.prepare_order``): ``write`` may be called from
    any thread; ``send`` (the preparing thread) writes it if nobody has and returns what
    ``place_order`` returns, raising what it raises; ``close`` after a ``send`` is a no-op."""

    def __init__(self, call: PreparedCall, result: Callable[[Any], Any]):
        self._call = call
        self._result = result  # the client's reading of the placement answer

    @property
    def wire_ns(self) -> int:
        return self._call.wire_ns

    def write(self) -> None:
        self._call.write()

    def send(self):
        return self._result(self._call.finish())

    def close(self) -> None:
        self._call.close()
