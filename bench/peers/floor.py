"""The minimal floor: a gevent WSGI relay that reads the upstream's bytes itself (no SDK, no framework).

    python -m bench.peers.floor --port 8000

One plain socket to `ANTHROPIC_BASE_URL` (http only: it is a measuring device, not a product),
large reads, chunked decoding and SSE splitting on bytes, `jiter` for each event's JSON, and
one write per upstream read. No validation, limits, cancel, replay, retries or metrics: what
is left is the least a Python relay on gevent can cost.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402  (after the patch, as gevent requires)
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import parse_qs, urlsplit  # noqa: E402

import jiter  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from bench.chunked import Dechunker  # noqa: E402
from bench.peers import MAX_TOKENS, MODEL  # noqa: E402

_BASE = urlsplit(os.environ.get("ANTHROPIC_BASE_URL", "http://127.0.0.1:80"))
_KEY = os.environ.get("ANTHROPIC_API_KEY", "")
_DONE = b"data: [DONE]\n\n"


def _request(prompt: str, model: str, max_tokens: int) -> bytes:
    body = json.dumps(
        {"model": model, "max_tokens": max_tokens, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    ).encode()
    head = (
        f"POST {_BASE.path.rstrip('/')}/v1/messages HTTP/1.1\r\nHost: {_BASE.netloc}\r\n"
        f"x-api-key: {_KEY}\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def relay(prompt: str, model: str, max_tokens: int) -> Iterator[bytes]:
    """The upstream's answer as Sluice-format SSE bytes, one piece per upstream read."""
    sock = socket.create_connection((_BASE.hostname, _BASE.port or 80))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.sendall(_request(prompt, model, max_tokens))
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                yield _sse({"type": "error", "error": {"type": "connection", "message": "upstream closed"}}) + _DONE
                return
            head += data
        head, rest = head.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            yield _sse({"type": "error", "error": {"type": "upstream", "status": status}}) + _DONE
            return
        chunked, body, stop, done = Dechunker(), b"", None, False
        data = rest
        while not done:
            body += chunked.feed(data)
            out = []
            *events, body = body.split(b"\n\n")
            for event in events:
                at = event.find(b"data: ")
                if at < 0:
                    continue
                ev = jiter.from_json(event[at + 6 :])
                kind = ev["type"]
                if kind == "content_block_delta" and ev["delta"]["type"] == "text_delta":
                    out.append(b'data: {"type":"text","content":' + json.dumps(ev["delta"]["text"]).encode() + b"}\n\n")
                elif kind == "message_delta":
                    stop = ev["delta"].get("stop_reason")
                elif kind == "message_stop":
                    out.append(_sse({"type": "done", "stop_reason": stop}) + _DONE)
                    done = True
                elif kind == "error":
                    out.append(_sse({"type": "error", "error": ev["error"]}) + _DONE)
                    done = True
            if out:
                yield b"".join(out)
            if done:
                return
            data = b"" if chunked.eof else sock.recv(65536)
            if not data:
                yield _sse({"type": "error", "error": {"type": "connection", "message": "upstream closed"}}) + _DONE
                return
    finally:
        sock.close()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    path = environ["PATH_INFO"]
    if path == "/healthz":
        start_response("200 OK", [("Content-Type", "application/json")])
        return iter([b'{"status":"ok"}'])
    if path != "/stream":
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return iter([b'{"error":"not found"}'])
    query = parse_qs(environ.get("QUERY_STRING", ""))
    prompt = query.get("prompt", [""])[0]
    model = query.get("model", [MODEL])[0]
    max_tokens = int(query.get("max_tokens", [MAX_TOKENS])[0])
    start_response("200 OK", [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")])
    return relay(prompt, model, max_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.floor", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    WSGIServer(("127.0.0.1", args.port), app, log=None, backlog=2048).serve_forever()


if __name__ == "__main__":
    main()
