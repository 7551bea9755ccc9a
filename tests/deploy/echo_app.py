"""A tiny WSGI app for testing the deploy files without the Sluice core.

Served by gunicorn with deploy/gunicorn.conf.py, behind nginx with deploy/nginx/sluice.conf:
``/echo`` answers what the worker saw (the proxy headers, the scheme, the environment the
config's hooks prepared); ``/stream/tick`` sends a few SSE events with pauses between them;
``/stream/lockstep?key=K`` sends event i+1 only once ``/ack?key=K&i=i`` has arrived (so a proxy
that buffers is caught by its ending ``no ack``, however slow the machine).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

ACK_WAIT = 10.0  # seconds the lockstep stream waits for an acknowledgement before it gives up
_acks: dict[str, int] = {}  # key -> the last event index acknowledged (one worker serves both)


def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes] | list[bytes]:
    path = environ.get("PATH_INFO", "")
    if path.startswith("/stream/tick"):
        start_response(
            "200 OK",
            [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")],
        )
        return _ticks()
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path.startswith("/stream/lockstep"):
        start_response("200 OK", [("Content-Type", "text/event-stream; charset=utf-8")])
        return _lockstep(query["key"])
    if path == "/ack":
        _acks[query["key"]] = int(query["i"])
        start_response("204 No Content", [])
        return []
    body = json.dumps(
        {
            "path": path,
            "pid": os.getpid(),
            "scheme": environ.get("wsgi.url_scheme"),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "headers": {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")},
            "env": {
                k: os.environ.get(k)
                for k in ("SLUICE_SHUTDOWN_GRACE_SECONDS", "PROMETHEUS_MULTIPROC_DIR", "SLUICE_REDIS_URL")
            },
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _ticks() -> Iterator[bytes]:
    for i in range(5):
        yield f"data: {i}\n\n".encode()
        time.sleep(0.3)  # gevent-patched in the worker
    yield b"data: [DONE]\n\n"


def _lockstep(key: str) -> Iterator[bytes]:
    for i in range(3):
        yield f"data: {i}\n\n".encode()
        deadline = time.monotonic() + ACK_WAIT
        while _acks.get(key, -1) < i:  # polled: the ack arrives on another request's greenlet
            if time.monotonic() > deadline:
                yield b"data: no ack\n\n"
                return
            time.sleep(0.01)
    yield b"data: [DONE]\n\n"
