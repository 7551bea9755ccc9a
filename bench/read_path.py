"""CPU of a provider's read path per token, one event per network read, without the noise of a load.

    .venv/bin/python -m bench.read_path [--tokens 20000] [--streams 300] [--gevent]

One process, one thread doing the measured work: a tiny server thread only accepts the SDK's
request and answers its headers (chunked SSE, as the APIs do); then this thread writes one
Anthropic `content_block_delta` event as one chunk, and pulls the provider's generator until
it yields the `TextDelta` — so every token is one `send` and one `recv`, as at a model's pace.
`time.process_time()` over `--tokens` tokens, minus the same sends with one bare `recv` each
(a loopback TCP connection), ÷ tokens: the read path's own CPU per token (SDK wrappers, HTTP
client, chunked decoding, SSE split, JSON, translate), free of the scheduling noise of a loaded
machine. Then `--streams` streams of one token each, opened and finished one after the other:
the CPU of opening and ending a stream (request building, pool, connection; the server
thread's share included).
"""

from __future__ import annotations

import argparse
import sys

if "--gevent" in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import os  # noqa: E402
import queue  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nrequest-id: req_bench\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


START = _chunk(
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
    b'"role":"assistant","model":"m","content":[],"stop_reason":null,"usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
)
DELTA = _chunk(
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"token "}}\n\n'
)
END = (
    _chunk(
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":9}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    + b"0\r\n\r\n"
)


class Server:
    """Accepts connections; for each request, answers the headers and hands over the socket."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.ready: queue.Queue[socket.socket] = queue.Queue()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            while len(buf) < length:
                buf += conn.recv(65536)
            buf = buf[length:]
            done = threading.Event()
            self.ready.put((conn, done))  # type: ignore[arg-type]
            done.wait()


def bare_socket(tokens: int) -> float:
    """CPU of the same sends and one recv each, with nothing reading the bytes: the baseline."""
    listener = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(listener.getsockname())
    b, _ = listener.accept()
    listener.close()
    for s in (a, b):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.process_time()
    for _ in range(tokens):
        a.sendall(DELTA)
        b.recv(65536)
    spent = time.process_time() - t0
    a.close()
    b.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.read_path", description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20000)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--gevent", action="store_true", help="monkey-patch first, as the worker is")
    args = parser.parse_args()
    server = Server()
    os.environ.update(ANTHROPIC_API_KEY="sk-bench", ANTHROPIC_BASE_URL=f"http://127.0.0.1:{server.port}")
    from app.providers.anthropic import AnthropicProvider
    from app.providers.base import Message, ProviderRequest, TextDelta

    provider = AnthropicProvider()
    request = ProviderRequest(model="m", messages=(Message("user", "hi"),), max_tokens=10)

    def one_stream(tokens: int) -> float:
        events = provider.stream(request)
        box: list[Any] = []

        def opened() -> None:
            conn, done = server.ready.get()
            box[:] = [conn, done]
            conn.sendall(HEAD + START)

        opener = threading.Thread(target=opened)
        opener.start()
        first = next(events)  # the open: request, headers, message_start's Usage
        opener.join()
        conn, done = box
        assert not isinstance(first, TextDelta)
        t0 = time.process_time()  # not per token: on a VM, reading the CPU clock costs ~10 us
        for _ in range(tokens):
            conn.sendall(DELTA)
            event = next(events)
            while type(event) is not TextDelta:
                event = next(events)
        spent = time.process_time() - t0
        conn.sendall(END)
        for _ in events:
            pass
        done.set()
        return spent

    one_stream(200)  # warm-up: imports, client, pool
    spent = one_stream(args.tokens)
    bare = bare_socket(args.tokens)
    print(
        f"read path: {1e6 * (spent - bare) / args.tokens:.1f} us/token above a bare send + recv "
        f"({1e6 * spent / args.tokens:.1f} with it; {args.tokens} tokens, one event per read)"
    )
    t0 = time.process_time()
    for _ in range(args.streams):
        one_stream(1)
    per = (time.process_time() - t0) / args.streams
    print(f"open + end of a stream (1 token; server thread included): {1e6 * per:.0f} us")
    pool = provider._get_client()._client._transport._pool
    print(f"connections in the pool after {args.streams + 2} streams: {len(pool.connections)}")


if __name__ == "__main__":
    main()
