"""A real loopback HTTP/1.1 server (one thread per connection) speaking both providers' wire formats.

Plain threads, never gevent: the tests' own process is not monkey-patched. Every streaming
response is chunked and each event is written (and so flushed) on its own. While a response
waits (pace, first_delay, stall) it watches its socket for EOF, so a client that closes is
noticed at once: `open_connections` is how tests prove that a cancel closed the upstream.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from . import anthropic_wire, openai_wire, responses_wire
from .script import Script, plan_answer

_SECRET_HEADERS = ("x-api-key", "authorization", "api-key")


@dataclass
class RecordedRequest:
    """One API request as the fake received it (auth header values redacted)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    time: float = field(default_factory=time.time)
    # The client's (host, port): requests with the same one came over one (kept-alive) connection.
    peer: tuple[str, int] = ("", 0)


class ClientGone(Exception):
    """The client closed its end of the connection."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # benchmarks open hundreds of streams at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # a client that went away between requests: normal for a keep-alive pool
        super().handle_error(request, client_address)


class FakeUpstream:
    """The fake: `with FakeUpstream() as fake: ...` or `fake.start()` / `fake.stop()`."""

    handler_class: type[BaseHTTPRequestHandler] | None = None  # a subclass of _Handler (the benchmark's)

    def __init__(self, host: str = "127.0.0.1", port: int = 0, valid_keys: set[str] | None = None) -> None:
        self.host = host
        self.port = port
        self.valid_keys = frozenset(valid_keys) if valid_keys is not None else None
        self._cond = threading.Condition()
        self._open = 0
        self._requests: list[RecordedRequest] = []
        self._seen: dict[str, int] = {}  # directive -> requests that carried it (`times=N`)
        self._sockets: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        handler = type("Handler", (self.handler_class or _Handler,), {"fake": self})
        server = _Server((self.host, self.port), handler)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="fake-upstream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._cond:
            sockets = list(self._sockets)
        for sock in sockets:  # wake stalled responses so their threads end
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- introspection --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def open_connections(self) -> int:
        """Streaming responses in progress right now."""
        with self._cond:
            return self._open

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._cond:
            return len(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._cond:
            return self._requests[-1]

    def reset(self) -> None:
        """Forget recorded requests (open responses are left alone)."""
        with self._cond:
            self._requests.clear()
            self._seen.clear()

    def wait_for(self, predicate: Callable[[FakeUpstream], bool], timeout: float = 5.0) -> bool:
        """Wait until `predicate(fake)` holds; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def wait_open(self, n: int = 1, timeout: float = 5.0) -> bool:
        return self.wait_for(lambda f: f._open >= n, timeout)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        return self.wait_for(lambda f: f._open == 0, timeout)

    def wait_requests(self, n: int, timeout: float = 5.0) -> bool:
        return self.wait_for(lambda f: len(f._requests) >= n, timeout)

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"open_connections": self._open, "requests": len(self._requests)}

    # -- bookkeeping used by the handler --------------------------------------------------------

    def _count(self, key: str) -> int:
        """How many requests carried this directive since the last reset, this one included."""
        with self._cond:
            self._seen[key] = self._seen.get(key, 0) + 1
            return self._seen[key]

    def _record(self, req: RecordedRequest) -> None:
        with self._cond:
            self._requests.append(req)
            self._cond.notify_all()

    def _opened(self, sock: socket.socket) -> None:
        with self._cond:
            self._open += 1
            self._sockets.add(sock)
            self._cond.notify_all()

    def _closed(self, sock: socket.socket) -> None:
        with self._cond:
            self._open -= 1
            self._sockets.discard(sock)
            self._cond.notify_all()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as the providers' front ends (and nginx, uvicorn, gunicorn) set it. Without
    # it, on a reused keep-alive connection Nagle holds the first chunk until the client's
    # delayed ACK of the headers (40 ms on Linux): a wait no real provider adds.
    disable_nagle_algorithm = True
    fake: FakeUpstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plain responses ------------------------------------------------------------------------

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/_fake/stats":
            self._send_json(200, self.fake.stats())
        else:
            self._send_json(404, {"error": {"message": "not found", "type": "not_found_error"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path == "/_fake/reset":
            self.fake.reset()
            self._send_json(200, self.fake.stats())
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        headers = {k.lower(): ("REDACTED" if k.lower() in _SECRET_HEADERS else v) for k, v in self.headers.items()}
        path = self.path.split("?", 1)[0]
        wires = {w.PATH: w for w in (anthropic_wire, openai_wire, responses_wire)}
        if path not in wires:
            self._send_json(404, {"error": {"message": f"Unknown path {path}", "type": "not_found_error"}})
            return
        self.fake._record(RecordedRequest("POST", path, headers, body, peer=self.client_address[:2]))
        wire: Any = wires[path]
        real_headers = {k.lower(): v for k, v in self.headers.items()}
        rejected = wire.check_headers(real_headers, self.fake.valid_keys)
        if rejected is None and not isinstance(body, dict):
            rejected = 400, wire.error_body(400, "The request body is not valid JSON.")
        if rejected is None and wire is responses_wire and (problem := responses_wire.check_input(body)):
            rejected = 400, wire.error_body(400, problem)
        if rejected is not None:
            self._send_json(*rejected)
            return
        directive, tool_result, input_tokens = wire.inspect_body(body)
        try:
            script = Script.parse(directive)
        except ValueError as exc:
            self._send_json(400, wire.error_body(400, str(exc)))
            return
        if script.hang == (1 if tool_result is None else 2):
            self._hang()
            return
        failing = script.times is None or self.fake._count(path + directive) <= script.times
        if script.hangup and failing:
            self._hang_up()
            return
        if script.status is not None and failing:
            extra = {"retry-after": "1"} if script.status == 429 else {}
            if script.retry_after is not None:
                extra["retry-after"] = script.retry_after
            if script.retry_after_ms is not None:
                extra["retry-after-ms"] = script.retry_after_ms
            extra["request-id" if wire is anthropic_wire else "x-request-id"] = "req_" + uuid.uuid4().hex[:24]
            self._send_json(script.status, wire.error_body(script.status), extra)
            return
        rejected = anthropic_wire.check_body(body, script) if wire is anthropic_wire else None
        if rejected is not None:
            self._send_json(*rejected, {"x-should-retry": "false"})
            return
        max_tokens = body.get("max_tokens") if wire is anthropic_wire else wire.max_tokens_of(body)
        plan = plan_answer(script, tool_result, max_tokens)
        counter = [0]
        model = str(body.get("model", "fake-model"))
        if wire is responses_wire:
            # The response object stands in for the wire: its error event needs the sequence.
            stream = responses_wire.ResponseStream(plan, model, input_tokens, counter, body)
            self._stream(stream, script, iter(stream), counter)
            return
        if wire is anthropic_wire:
            thinking = (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")
            events = anthropic_wire.events(plan, model, input_tokens, counter, script, thinking)
        else:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = openai_wire.events(plan, model, input_tokens, counter, include_usage)
        self._stream(wire, script, events, counter)

    def _hang(self) -> None:
        """Send nothing, not even headers, until the client goes away (a model still loading)."""
        sock = self.connection
        self.fake._opened(sock)
        try:
            self._wait(3600.0, None, None)
        except ClientGone:
            pass
        finally:
            self.close_connection = True
            self.fake._closed(sock)

    # -- streaming ------------------------------------------------------------------------------

    def _stream(self, wire: Any, script: Script, events: Iterator[tuple[str, bytes]], counter: list[int]) -> None:
        sock = self.connection
        self.fake._opened(sock)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("request-id" if wire is anthropic_wire else "x-request-id", "req_" + uuid.uuid4().hex[:24])
            self.end_headers()
            self._play(wire, script, events, counter)
            self._write_raw(b"0\r\n\r\n")
        except ClientGone:
            self.close_connection = True
        finally:
            self.fake._closed(sock)

    def _play(self, wire: Any, script: Script, events: Iterator[tuple[str, bytes]], counter: list[int]) -> None:
        checked = -1
        for kind, data in events:
            if kind != "head":
                sent = counter[0]
                if sent != checked:  # directives due "after K tokens" act once, before what follows
                    checked = sent
                    if self._check_stall_or_drop(wire, script, sent):
                        return
                if kind == "token":
                    self._wait(script.first_delay if sent == 0 else script.pace, wire, script)
                    counter[0] += 1
            self._write_chunk(data)

    def _check_stall_or_drop(self, wire: Any, script: Script, sent: int) -> bool:
        """Act on a directive due after `sent` tokens; True when the stream must end here."""
        if script.stall_after == sent:
            self._stall(wire, script)
        if script.drop_after == sent:
            self._drop(script.drop_mode)
        if script.error_after == sent:
            self._write_chunk(wire.error_event(script))
            return True
        return False

    def _stall(self, wire: Any, script: Script) -> None:
        # Sends nothing (but pings) until the client goes away; never returns normally.
        while True:
            self._wait(script.ping_every or 3600.0, None, None)
            if script.ping_every and wire is anthropic_wire:
                self._write_chunk(anthropic_wire.ping())

    def _hang_up(self) -> None:
        """Close the connection with a reset, without any answer (a crashed or restarted server)."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.close()

    def _drop(self, mode: str) -> None:
        sock = self.connection
        if mode == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        raise ClientGone

    def _wait(self, seconds: float, wire: Any, script: Script | None) -> None:
        """Sleep, but raise ClientGone the moment the client closes; Anthropic pings if asked."""
        deadline = time.monotonic() + seconds
        every = script.ping_every if script is not None and wire is anthropic_wire else None
        next_ping = time.monotonic() + every if every else None
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            until = min(deadline, next_ping) if next_ping else deadline
            try:
                readable, _, _ = select.select([self.connection], [], [], max(until - now, 0))
            except (OSError, ValueError):
                raise ClientGone from None
            if readable:
                try:
                    peeked = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    raise ClientGone from None
                if not peeked:
                    raise ClientGone
                time.sleep(max(deadline - time.monotonic(), 0))  # a pipelined request: just sleep
                return
            if next_ping and time.monotonic() >= next_ping:
                self._write_chunk(anthropic_wire.ping())
                next_ping = time.monotonic() + (every or 0)

    def _write_chunk(self, data: bytes) -> None:
        self._write_raw(b"%x\r\n%s\r\n" % (len(data), data))

    def _write_raw(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            raise ClientGone from None
