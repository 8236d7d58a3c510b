"""A tiny loopback WebSocket server for feed tests (websockets' synchronous server).

The test pushes frames with ``send`` (to every open connection), reads what clients sent
(``subscriptions``), and breaks connections with ``drop`` (no close frame). ``on_connect`` may
be set to frames sent to each new connection right after its first client message.
"""
from __future__ import annotations

import socket
import threading

from websockets.sync.server import serve


class StubWsServer:
    def __init__(self, on_connect: list[bytes | str] | None = None) -> None:
        self.on_connect = list(on_connect or [])
        self.subscriptions: list[str] = []
        self.connections_made = 0
        self._open: list = []
        self._lock = threading.Lock()
        self._server = serve(self._handle, "127.0.0.1", 0, compression=None)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-ws-server",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/websocket/v1"

    def __enter__(self) -> "StubWsServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.drop()
        self._server.shutdown()
        self._thread.join(5.0)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def send(self, frame: bytes | str) -> None:
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            try:
                connection.send(frame)
            except Exception:  # a connection closing under us: the test looks at the client
                pass

    def ping(self) -> list[threading.Event]:
        """Ping every open connection; each Event is set when that client's pong arrives."""
        with self._lock:
            connections = list(self._open)
        return [connection.ping() for connection in connections]

    def close_all(self) -> None:
        """End every connection with a close frame (a venue's orderly goodbye)."""
        with self._lock:
            connections, self._open = self._open, []
        for connection in connections:
            connection.close()

    def drop(self) -> None:
        """Cut every connection at the TCP level, as a venue or a network would."""
        with self._lock:
            connections, self._open = self._open, []
        for connection in connections:
            try:
                connection.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _handle(self, connection) -> None:
        try:
            first = connection.recv()
        except Exception:
            return
        with self._lock:
            self.subscriptions.append(first if isinstance(first, str) else first.decode())
            self.connections_made += 1
        for frame in self.on_connect:
            connection.send(frame)
        with self._lock:
            self._open.append(connection)
        try:
            for _ in connection:  # keep reading (pings are answered by websockets itself)
                pass
        except Exception:
            pass
        finally:
            with self._lock:
                if connection in self._open:
                    self._open.remove(connection)
