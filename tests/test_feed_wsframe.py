"""FrameReader: RFC 6455 server frames cut out of a socket buffer (feeds/wsframe.py)."""
from __future__ import annotations

import os
import socket

import pytest
import websocket

import feeds.wsframe as wsframe
from feeds.wsframe import FrameReader


def frame(payload: bytes, opcode: int = 0x2, fin: bool = True, rsv: int = 0,
          mask: bool = False) -> bytes:
    n = len(payload)
    b1 = (0x80 if fin else 0) | rsv | opcode
    masked = 0x80 if mask else 0
    if n < 126:
        head = bytes((b1, masked | n))
    elif n < 1 << 16:
        head = bytes((b1, masked | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b1, masked | 127)) + n.to_bytes(8, "big")
    return head + (b"\0\0\0\0" if mask else b"") + payload


class FakeWs:
    """What FrameReader uses of a websocket-client connection: its socket, pong, send_close."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pongs: list[bytes] = []
        self.closes = 0

    def pong(self, payload: bytes) -> None:
        self.pongs.append(payload)

    def send_close(self) -> None:
        self.closes += 1


@pytest.fixture
def pair():
    ours, venue = socket.socketpair()
    ours.settimeout(0.05)
    yield FakeWs(ours), venue
    ours.close()
    venue.close()


def test_frames_of_every_length_encoding_come_back_whole_and_in_order(pair):
    ws, venue = pair
    payloads = [b"", b"x" * 125, b"y" * 126, os.urandom(70_000), b'{"type":"orderbook"}']
    venue.sendall(b"".join(frame(p, 0x1 if i % 2 else 0x2) for i, p in enumerate(payloads)))
    reader = FrameReader(ws)
    got = [reader.read() for _ in payloads]
    assert got == [(0x1 if i % 2 else 0x2, p) for i, p in enumerate(payloads)]
    assert reader.read() is None  # nothing more within the socket's timeout


def test_a_frame_trickling_in_byte_by_byte_is_returned_once_complete(pair, monkeypatch):
    monkeypatch.setattr(wsframe, "_INITIAL_BUFFER", 8)  # forces moving and growing the buffer
    ws, venue = pair
    ws.sock.settimeout(0.001)  # each read waits for a byte that never comes
    reader = FrameReader(ws)
    wire = frame(b"a" * 300) + frame(b"b" * 5)
    got = []
    for byte in wire[:-1]:
        venue.sendall(bytes((byte,)))
        message = reader.read()
        if message is not None:
            got.append(message)
    assert got == [(0x2, b"a" * 300)]
    venue.sendall(wire[-1:])
    assert reader.read() == (0x2, b"b" * 5)


def test_fragments_are_joined_and_a_ping_between_them_is_answered(pair):
    ws, venue = pair
    venue.sendall(frame(b"part1-", 0x1, fin=False) + frame(b"hello", 0x9)
                  + frame(b"part2-", 0x0, fin=False) + frame(b"end", 0x0)
                  + frame(b"pong?", 0xA) + frame(b"next"))
    reader = FrameReader(ws)
    assert reader.read() == (0x1, b"part1-part2-end")
    assert ws.pongs == [b"hello"]
    assert reader.read() == (0x2, b"next")  # the pong was skipped


def test_close_is_answered_with_a_close_and_returned(pair):
    ws, venue = pair
    venue.sendall(frame(b"\x03\xe8bye", 0x8))
    assert FrameReader(ws).read() == (0x8, b"\x03\xe8bye")
    assert ws.closes == 1


def test_peer_hanging_up_raises_connection_closed(pair):
    ws, venue = pair
    venue.sendall(frame(b"last"))
    venue.shutdown(socket.SHUT_WR)
    reader = FrameReader(ws)
    assert reader.read() == (0x2, b"last")
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        reader.read()


@pytest.mark.parametrize("wire, why", [
    (frame(b"x", mask=True), "masked"),
    (frame(b"x", rsv=0x40), "RSV"),
    (frame(b"x", 0x3), "reserved opcode"),
    (frame(b"x", 0x0), "continuation without"),
    (frame(b"a", 0x1, fin=False) + frame(b"b", 0x1), "inside a fragmented"),
    (frame(b"p", 0x9, fin=False), "control frame"),
    (frame(b"p" * 126, 0x9), "control frame"),
])
def test_protocol_breaches_raise_a_protocol_error(pair, wire, why):
    ws, venue = pair
    venue.sendall(wire)
    with pytest.raises(websocket.WebSocketProtocolException, match=why):
        FrameReader(ws).read()
    assert ws.pongs == []
