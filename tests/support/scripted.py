"""A scripted upstream for provider tests: a loopback HTTP/1.1 server that answers each request
with a function of the test's, and the fixture that points the SDKs at it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.providers.conftest import ANTHROPIC_KEY, OPENAI_KEY
from tests.support.listening import close_listener

Answer = Callable[[socket.socket], None]


class ScriptedUpstream:
    """A loopback HTTP/1.1 server: each request on any connection gets `answer(sock)`."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = 0
        self.requests = 0
        self.closed = threading.Event()  # the client closed a connection
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        self.closed.set()
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                self.requests += 1
                self.answer(conn)
        except OSError:
            self.closed.set()
        finally:
            conn.close()

    def close(self) -> None:
        close_listener(self.listener, self.acceptor)


def scripted_upstreams(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Answer], ScriptedUpstream]]:
    """The body of a `scripted` fixture: `start(answer)` runs one, the SDKs' env points at it."""
    servers: list[ScriptedUpstream] = []

    def start(answer: Answer) -> ScriptedUpstream:
        server = ScriptedUpstream(answer)
        servers.append(server)
        monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
        return server

    yield start
    for server in servers:
        server.close()
