"""A tiny WSGI app for testing the deploy files without the Sluice core.

Served by gunicorn with deploy/gunicorn.conf.py, behind nginx with deploy/nginx/sluice.conf:
``/echo`` answers what the worker saw (the proxy headers, the scheme, the environment the
config's hooks prepared); ``/stream/tick`` sends a few SSE events with pauses between them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any


def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes] | list[bytes]:
    path = environ.get("PATH_INFO", "")
    if path.startswith("/stream/tick"):
        start_response(
            "200 OK",
            [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")],
        )
        return _ticks()
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
