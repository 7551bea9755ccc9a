"""Does this process share its clients with sibling workers? (for a loud warning)

Without SLUICE_REDIS_URL each worker only knows its own generations: a `POST /cancel` or a
reconnect that the kernel hands to a sibling worker finds nothing. deploy/gunicorn.conf.py
warns at start-up; this lets the app warn too whatever started it. It asks what the server
itself says, never counts processes (the siblings may not exist yet when a worker starts):
the gunicorn worker's own `cfg.workers` when the app loads, else WSGI's `wsgi.multiprocess`
on the first request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("sluice.backend")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def warn_if_unshared(workers: int | None) -> bool:
    """Log loudly when several worker processes run with the in-process backend."""
    if workers is not None and workers <= 1:
        return False
    count = f"{workers} worker processes" if workers else "Several worker processes (wsgi.multiprocess)"
    log.warning(
        "%s run WITHOUT SLUICE_REDIS_URL: POST /cancel, reconnects and GET /streams/<id> only "
        "work when they reach the worker that runs the generation. Set SLUICE_REDIS_URL, or run "
        "one worker.",
        count,
    )
    return True


class MultiprocessCheck:
    """WSGI middleware: warn once, on the first request, if the server runs several processes."""

    def __init__(self, wsgi_app: WSGIApp) -> None:
        self.wsgi_app = wsgi_app
        self.checked = False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not self.checked:
            self.checked = True
            if environ.get("wsgi.multiprocess"):
                warn_if_unshared(None)
        return self.wsgi_app(environ, start_response)
