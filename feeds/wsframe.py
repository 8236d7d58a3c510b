"""Reading server frames off an open websocket-client connection, a socket buffer at a time.

websocket-client's ``recv_data`` makes three ``recv`` calls per frame (header, extended length,
payload), each a poll plus a read on a socket with a timeout, then builds an ``ABNF`` object and
runs its fragment bookkeeping: measured on loopback (``tools/bench_feed.py``, ``frame_read``)
that is ~10-20 us per frame against ~1 us for raw reads of the same bytes. ``FrameReader``
reads whatever the socket holds into one reused buffer (one ``recv_into`` for many frames
under load) and cuts frames out of it.

RFC 6455 as a client sees it: server frames are never masked; no extension is negotiated, so
the RSV bits are zero; control frames (close, ping, pong) are final, at most 125 bytes, and may
arrive between the fragments of a message; a continuation needs a message in progress and a
new message needs none. A breach raises ``websocket.WebSocketProtocolException`` (the feed
reconnects, as it did when websocket-client raised it). A ping is answered with a pong carrying
its payload; a close is answered with a close and returned. Text frames are not UTF-8 checked
(the feed asked websocket-client for ``skip_utf8_validation`` too): a bad frame fails to decode
as JSON and is counted.

The handshake stays websocket-client's; it reads the upgrade response byte by byte, so no
frame byte is left in its buffers when the reader takes over. Not thread-safe: the feed
thread alone reads (``WebSocket.abort`` from another thread still wakes it).
"""
from __future__ import annotations

import websocket

_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_INITIAL_BUFFER = 1 << 18  # grows to hold a bigger frame


class FrameReader:
    """``read()`` -> ``(opcode, payload)`` of the next message or close, or ``None`` when the
    socket's timeout passed with no complete message. Called from the feed thread only."""

    __slots__ = ("_ws", "_sock", "_buf", "_view", "_start", "_end", "_parts", "_parts_opcode")

    def __init__(self, ws: websocket.WebSocket) -> None:
        self._ws = ws
        self._sock = ws.sock
        self._buf = bytearray(_INITIAL_BUFFER)
        self._view = memoryview(self._buf)
        self._start = self._end = 0  # unread bytes are _buf[_start:_end]
        self._parts: list[bytes] | None = None  # fragments of a message in progress
        self._parts_opcode = 0

    def read(self) -> tuple[int, bytes] | None:
        while True:
            buf = self._buf
            start, end = self._start, self._end
            avail = end - start
            need = 2
            if avail >= 2:
                b1, length = buf[start], buf[start + 1]
                if length & 0x80 or b1 & 0x70:
                    raise websocket.WebSocketProtocolException(
                        "masked server frame" if length & 0x80 else "RSV bits set")
                head = 2
                if length == 126:
                    head = 4
                    if avail >= 4:
                        length = buf[start + 2] << 8 | buf[start + 3]
                elif length == 127:
                    head = 10
                    if avail >= 10:
                        length = int.from_bytes(buf[start + 2:start + 10], "big")
                need = head + length if avail >= head else head
                if avail >= need:
                    self._start = start + need
                    message = self._frame(b1, bytes(self._view[start + head:start + need]))
                    if message is not None:
                        return message
                    continue
            if not self._fill(need):
                return None

    def _fill(self, need: int) -> bool:
        # Read more bytes, at least one; False on the socket's timeout.
        start, end = self._start, self._end
        if start == end:
            start = end = 0
        elif len(self._buf) - start < need or end == len(self._buf):
            kept = end - start  # move the partial frame to the front (grow if it cannot fit)
            if need > len(self._buf):
                self._view.release()
                self._buf = bytearray(self._buf[start:end]) + bytearray(need - kept)
                self._view = memoryview(self._buf)
            else:
                self._buf[:kept] = self._buf[start:end]
            start, end = 0, kept
        self._start, self._end = start, end
        try:
            got = self._sock.recv_into(self._view[end:])
        except TimeoutError:
            return False
        if not got:
            raise websocket.WebSocketConnectionClosedException("connection closed by the peer")
        self._end = end + got
        return True

    def _frame(self, b1: int, payload: bytes) -> tuple[int, bytes] | None:
        # One whole frame: a message or close to return, or None (control frame handled,
        # or a fragment kept).
        opcode, fin = b1 & 0x0F, b1 & 0x80
        if opcode == _TEXT or opcode == _BINARY:
            if self._parts is not None:
                raise websocket.WebSocketProtocolException("new message inside a fragmented one")
            if fin:
                return opcode, payload
            self._parts, self._parts_opcode = [payload], opcode
            return None
        if opcode == _CONT:
            if self._parts is None:
                raise websocket.WebSocketProtocolException("continuation without a message")
            self._parts.append(payload)
            if not fin:
                return None
            message = b"".join(self._parts)
            self._parts = None
            return self._parts_opcode, message
        if opcode not in (_CLOSE, _PING, _PONG):
            raise websocket.WebSocketProtocolException(f"reserved opcode {opcode:#x}")
        if not fin or len(payload) > 125:
            raise websocket.WebSocketProtocolException("fragmented or oversized control frame")
        if opcode == _PING:
            self._ws.pong(payload)
            return None
        if opcode == _CLOSE:
            self._ws.send_close()
            return opcode, payload
        return None  # a pong
