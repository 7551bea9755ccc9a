"""A loopback TCP proxy that can cut every open connection: a network drop, on demand."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support.listening import close_listener
from tests.support.servers import free_port


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to `target`; `cut()` resets every connection open right now."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.connections = 0
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open |= {client, upstream}
                self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    chunk = 65536  # bytes read at once

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(self.chunk):
                if not self._forward(src, dst, data):
                    return
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _forward(self, src: socket.socket, dst: socket.socket, data: bytes) -> bool:
        """Pass one read on (subclasses look at it first); False drops the connection."""
        dst.sendall(data)
        return True

    def cut(self) -> None:
        """Drop every connection open now (both sides see it closed)."""
        with self._lock:
            victims, self._open = self._open, set()
        for s in victims:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        close_listener(self._listener, self._acceptor)
        self.cut()


class HoldingProxy(CuttableProxy):
    """A `CuttableProxy` that holds back the first client->server write containing `marker`
    until `release()`: a request stopped at a chosen point of its exchange with the server.

    `held` is set once that write is held; `closed_while_held` once the client closed the
    connection that carried it before the release (the held bytes are then dropped).
    """

    def __init__(self, target_port: int, marker: bytes) -> None:
        self.marker = marker
        self.held = threading.Event()
        self.closed_while_held = threading.Event()
        self._release = threading.Event()
        super().__init__(target_port)

    def release(self) -> None:
        self._release.set()

    def _forward(self, src: socket.socket, dst: socket.socket, data: bytes) -> bool:
        if self.marker in data and not self.held.is_set():
            self.held.set()
            while not self._release.wait(0.02):
                if self._peer_closed(src):
                    self.closed_while_held.set()
                    return False
        return super()._forward(src, dst, data)

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
