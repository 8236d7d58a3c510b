"""The lean order path: one HTTP/1.1 request as exact bytes on this thread's warm connection.

``requests`` spends about a millisecond of CPU on every call before a byte moves (session
merging, hooks, URL and header preparation, the urllib3 pool), all of it holding the GIL, so a
leg that signs and sends through it delays the other leg by as much. An order placement is
instead built here as the bytes it is on the wire (``build_request``), written with one
``sendall`` to a keep-alive connection that belongs to the calling thread (``WireConnection``),
and its answer read with ``http.client``'s own response parser. Everything else stays on
``requests`` (``karb.exchanges.http``).

What is certain about "sent", which the caller turns into "not placed" or "state unknown":

* ``NotSent``: nothing of this request was written. A connection the venue closed while idle
  is noticed before writing (it reads as ready with nothing asked; what urllib3 checks too) and
  replaced by a fresh one; a failure to connect or to complete the TLS handshake is ``NotSent``.
* ``SentNoAnswer``: from the first ``sendall`` on, any failure (a reset, a timeout, a closed
  connection, an unreadable answer) may come after the venue read the whole request.

TLS is verified as ``requests`` verifies it by default: the certifi CA bundle, the host name
checked, TLS 1.2 or later. A connection serves one request at a time, on one thread.
"""
from __future__ import annotations

import gzip
import select
import socket
import ssl
import time
import zlib
from dataclasses import dataclass
from http.client import HTTPException, HTTPMessage, HTTPResponse
from urllib.parse import urlsplit

import certifi


class NotSent(Exception):
    """Nothing of the request was written: it may be sent again."""


class SentNoAnswer(Exception):
    """The request was (maybe partly) written and no complete answer came: it may have been
    applied."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: HTTPMessage  # case-insensitive ``.get``, as ``RateLimiter.observe_headers`` reads
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def default_tls_context() -> ssl.SSLContext:
    """What ``requests`` verifies by default: certifi's CAs, host names, TLS 1.2+."""
    context = ssl.create_default_context(cafile=certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


def build_request(method: str, target: str, host: str, headers: dict[str, str],
                  body: bytes | None) -> bytes:
    """The request's exact bytes: request line, headers, blank line, body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


class WireConnection:
    """One keep-alive connection to ``base_url``'s host, used by one thread at a time."""

    def __init__(self, base_url: str, connect_timeout_s: float, read_timeout_s: float,
                 tls: ssl.SSLContext | None = None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.https = parts.scheme == "https"
        self.hostname = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        default_port = self.port == (443 if self.https else 80)
        self.host_header = self.hostname if default_port else f"{self.hostname}:{self.port}"
        self.path_prefix = parts.path.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._tls = tls if tls is not None or not self.https else default_tls_context()
        self._sock: socket.socket | None = None
        self.connects = 0  # fresh connections opened (tests and the bench read it)

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def alive(self) -> bool:
        """Open, and not closed by the venue while idle (it reads as ready with nothing asked:
        EOF, a reset, or bytes nobody asked for; what urllib3 checks too)."""
        return self._sock is not None and not _readable(self._sock)

    def ready(self) -> None:
        """Have an open connection the venue has not closed; ``NotSent`` if none can be had."""
        if self._sock is not None and not self.alive():
            self.close()  # nothing of ours was written to it
        if self._sock is None:
            self._connect()

    def _connect(self) -> None:
        try:
            sock = socket.create_connection((self.hostname, self.port), self.connect_timeout_s)
        except OSError as exc:
            raise NotSent(f"connect to {self.host_header}: {type(exc).__name__}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.hostname)
        except (OSError, ssl.SSLError) as exc:  # certificate, handshake: nothing of ours sent
            sock.close()
            raise NotSent(f"TLS with {self.host_header}: {type(exc).__name__}: {exc}") from exc
        self._sock = sock
        self.connects += 1

    def write(self, data: bytes) -> int:
        """Hand ``data`` to the socket; return ``time.monotonic_ns()`` when ``sendall``
        returned. ``SentNoAnswer`` on any failure (part of it may have gone)."""
        sock = self._sock
        if sock is None:
            raise NotSent("no connection")
        try:
            sock.settimeout(self.read_timeout_s)
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise SentNoAnswer(f"write failed: {type(exc).__name__}: {exc}") from exc
        return time.monotonic_ns()

    def read(self, method: str) -> Answer:
        """The answer to the request just written; ``SentNoAnswer`` if none complete comes."""
        sock = self._sock
        if sock is None:
            raise SentNoAnswer("connection closed before the answer")
        response = HTTPResponse(sock, method=method)
        try:
            response.begin()
            content = response.read()
        except (OSError, ValueError, EOFError, HTTPException) as exc:  # timeout, reset,
            self.close()  # RemoteDisconnected, IncompleteRead, a malformed status line or header
            raise SentNoAnswer(f"no answer: {type(exc).__name__}: {exc}") from exc
        finally:
            response.close()
        if response.will_close:
            self.close()
        encoding = (response.headers.get("Content-Encoding") or "").lower()
        try:
            if encoding == "gzip":
                content = gzip.decompress(content)
            elif encoding == "deflate":
                content = zlib.decompress(content)
        except (OSError, zlib.error, EOFError) as exc:
            raise SentNoAnswer(f"undecodable {encoding} answer: {exc}") from exc
        return Answer(response.status, response.headers, content)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _readable(sock: socket.socket) -> bool:
    # an idle keep-alive connection with something to read was closed (EOF) or reset by the
    # venue, or carries bytes nobody asked for: either way it is not fit for a request
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    try:
        return bool(poller.poll(0))
    except OSError:
        return True
