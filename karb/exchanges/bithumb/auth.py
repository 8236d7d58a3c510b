"""Bithumb request signing.

* API 2.0: Upbit's JWT plus a ``timestamp`` claim (Unix ms), signed HS256
  (apidocs.bithumb.com "인증 헤더 만들기"). Claim order: ``access_key``, ``nonce``,
  ``timestamp``, then ``query_hash`` / ``query_hash_alg`` when the request has parameters.
* Legacy: ``Api-Sign = base64(hex(HMAC-SHA512(secret, endpoint + "\\0" + form_body + "\\0" +
  nonce)))`` with ``Api-Key`` / ``Api-Nonce`` headers; ``nonce`` is Unix ms as a string and
  ``form_body`` the exact urlencoded body sent, which includes ``endpoint=<path>``.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

from requests.auth import AuthBase

from karb.exchanges.upbit.auth import UpbitAuth, new_nonce, sha512_hex


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class BithumbAuth(UpbitAuth):
    """Sign Bithumb 2.0 requests; ``nonce_factory`` and ``clock_ms`` are injected by tests."""

    def __init__(self, access_key: str, secret_key: str,
                 nonce_factory: Callable[[], str] = new_nonce, clock_ms: Callable[[], int] = now_ms):
        super().__init__(access_key, secret_key, nonce_factory, "HS256")
        self._clock_ms = clock_ms

    def claims(self, query: str | None) -> dict:
        claims = {"access_key": self.access_key, "nonce": self._nonce(),
                  "timestamp": int(self._clock_ms())}
        if query:
            claims["query_hash"] = sha512_hex(query)
            claims["query_hash_alg"] = "SHA512"
        return claims


def legacy_signature(secret_key: str, endpoint: str, form_body: str, nonce: str) -> str:
    message = f"{endpoint}\0{form_body}\0{nonce}".encode("utf-8")
    digest = hmac.new(secret_key.encode("utf-8"), message, hashlib.sha512).hexdigest()
    return base64.b64encode(digest.encode("ascii")).decode("ascii")


class MonotonicMsNonce:
    """Unix-ms nonces that never repeat or go backwards, even from many threads at once."""

    def __init__(self, clock_ms: Callable[[], int] = now_ms):
        self._clock_ms = clock_ms
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self._last = max(self._last + 1, int(self._clock_ms()))
            return str(self._last)


class BithumbLegacyAuth(AuthBase):
    """Add ``Api-Key`` / ``Api-Sign`` / ``Api-Nonce`` to a legacy form POST.

    The endpoint is the request's path and the signed body is the body actually sent.
    """

    def __init__(self, api_key: str, secret_key: str, nonce_factory: Callable[[], str] | None = None):
        self.api_key = api_key
        self._secret = secret_key
        self._nonce = nonce_factory or MonotonicMsNonce()

    def __call__(self, request):
        nonce = self._nonce()
        body = request.body.decode("ascii") if isinstance(request.body, bytes) else (request.body or "")
        endpoint = urlsplit(request.url).path
        request.headers["Api-Key"] = self.api_key
        request.headers["Api-Sign"] = legacy_signature(self._secret, endpoint, body, nonce)
        request.headers["Api-Nonce"] = nonce
        return request

    def __repr__(self) -> str:
        return "BithumbLegacyAuth()"
