"""Server-side verification of the venues' request signatures (spec/exchanges.md §1).

* Upbit: ``Authorization: Bearer <JWT>``, HS256 or HS512, claims ``access_key``, ``nonce``
  (never reused), and ``query_hash`` = SHA-512 hex of the unencoded query string (for JSON
  bodies, the body fields rendered ``k=v&k[]=v``) whenever the request has parameters.
* Bithumb 2.0: the same plus a ``timestamp`` claim (ms) within ``window_ms`` of now; HS256.
* Bithumb legacy: ``Api-Key``, ``Api-Nonce``, ``Api-Sign`` = base64(hex(HMAC-SHA512(secret,
  path + "\\0" + form body + "\\0" + nonce))); nonces must increase per key.

Failures raise ``AuthFailure(kind, message)``; each REST layer renders the venue's body.
Thread-safe: the nonce books take their own lock.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
from collections import deque
from typing import Callable
from urllib.parse import unquote

import orjson

from karb.sim.orders import Account

_HASHES = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}
_NONCE_MEMORY = 200_000


class AuthFailure(Exception):
    """``kind``: missing | malformed | bad_key | bad_signature | nonce_used | bad_query_hash |
    expired."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


class NonceBook:
    """Remembers recently used nonces per access key (bounded memory)."""

    def __init__(self, memory: int = _NONCE_MEMORY):
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()
        self._order: deque[tuple[str, str]] = deque()
        self._memory = memory
        self._last_int: dict[str, int] = {}

    def use(self, access_key: str, nonce: str) -> bool:
        """Record ``nonce``; False if this key already used it."""
        key = (access_key, nonce)
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            self._order.append(key)
            if len(self._order) > self._memory:
                self._seen.discard(self._order.popleft())
            return True

    def increasing(self, access_key: str, nonce: int) -> bool:
        """Record an integer nonce; False unless it is above this key's last one."""
        with self._lock:
            if nonce <= self._last_int.get(access_key, -1):
                return False
            self._last_int[access_key] = nonce
            return True


def hash_input_from_query(raw_query: str) -> list[str]:
    """Candidate strings a client may have hashed for a URL query (unencoded first)."""
    unquoted = unquote(raw_query)
    return [unquoted] if unquoted == raw_query else [unquoted, raw_query]


def hash_input_from_body(body: dict) -> str:
    """Render a JSON body as Upbit's query string: ``k=v`` joined by ``&``, lists as ``k[]=v``."""
    parts = []
    for key, value in body.items():
        if isinstance(value, list):
            parts.extend(f"{key}[]={_scalar(item)}" for item in value)
        elif value is not None:
            parts.append(f"{key}={_scalar(value)}")
    return "&".join(parts)


def _scalar(value: object) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def verify_jwt(authorization: str | None, lookup: Callable[[str], Account | None], hash_inputs: list[str],
               nonces: NonceBook, algs: tuple[str, ...], now_ms: int | None = None,
               window_ms: int | None = None) -> Account:
    """Check one Bearer JWT; return the account. ``now_ms``/``window_ms`` = Bithumb timestamp."""
    if not authorization:
        raise AuthFailure("missing", "Authorization header is missing.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        raise AuthFailure("malformed", "Jwt 토큰 검증에 실패했습니다.")
    head_b64, body_b64, sig_b64 = token.split(".")
    try:
        header = orjson.loads(_b64decode(head_b64))
        claims = orjson.loads(_b64decode(body_b64))
        signature = _b64decode(sig_b64)
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise AuthFailure("malformed", "Jwt 토큰 검증에 실패했습니다.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise AuthFailure("malformed", "Jwt 토큰 검증에 실패했습니다.")
    alg = header.get("alg")
    if alg not in algs:
        raise AuthFailure("malformed", f"Jwt 토큰 검증에 실패했습니다. (alg {alg})")
    account = lookup(str(claims.get("access_key", "")))
    if account is None:
        raise AuthFailure("bad_key", "잘못된 엑세스 키입니다.")
    expected = hmac.new(account.secret_key.encode(), f"{head_b64}.{body_b64}".encode(), _HASHES[alg]).digest()
    if not hmac.compare_digest(expected, signature):
        raise AuthFailure("bad_signature", "Jwt 토큰 검증에 실패했습니다.")
    if window_ms is not None:
        ts = claims.get("timestamp")
        if not isinstance(ts, int) or isinstance(ts, bool) or now_ms is None or abs(now_ms - ts) > window_ms:
            raise AuthFailure("expired", "timestamp is missing or outside the allowed window.")
    _check_query_hash(claims, hash_inputs)
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise AuthFailure("bad_query_hash", "nonce is missing.")
    if not nonces.use(account.access_key, nonce):
        raise AuthFailure("nonce_used", "이미 요청한 nonce값이 다시 사용되었습니다.")
    return account


def _check_query_hash(claims: dict, hash_inputs: list[str]) -> None:
    given = claims.get("query_hash")
    if not hash_inputs or hash_inputs == [""]:
        return
    if not isinstance(given, str):
        raise AuthFailure("bad_query_hash", "query_hash is missing.")
    if claims.get("query_hash_alg", "SHA512") != "SHA512":
        raise AuthFailure("bad_query_hash", "query_hash_alg must be SHA512.")
    for text in hash_inputs:
        if hmac.compare_digest(hashlib.sha512(text.encode()).hexdigest(), given.lower()):
            return
    raise AuthFailure("bad_query_hash", "query_hash does not match the request parameters.")


def verify_legacy(headers, path: str, body: bytes, lookup: Callable[[str], Account | None],
                  nonces: NonceBook) -> Account:
    """Check Bithumb legacy ``Api-Key`` / ``Api-Sign`` / ``Api-Nonce`` headers."""
    key, sign, nonce = headers.get("Api-Key"), headers.get("Api-Sign"), headers.get("Api-Nonce")
    if not key or not sign or not nonce:
        raise AuthFailure("missing", "Bad Request.(Auth Data)")
    account = lookup(key)
    if account is None:
        raise AuthFailure("bad_key", "Invalid Apikey")
    message = path.encode() + b"\x00" + body + b"\x00" + nonce.encode()
    digest = hmac.new(account.secret_key.encode(), message, hashlib.sha512).hexdigest()
    expected = base64.b64encode(digest.encode()).decode()
    if not hmac.compare_digest(expected, sign):
        raise AuthFailure("bad_signature", "Invalid Api-Sign")
    if not nonce.isdigit() or not nonces.increasing(key, int(nonce)):
        raise AuthFailure("nonce_used", "Invalid Api-Nonce")
    return account


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
