"""Graceful shutdown under gunicorn: no stream is ever cut without a terminal event.

gunicorn's gevent worker, on SIGTERM (a stop, or the old workers of a HUP reload), stops
accepting, then waits up to `graceful_timeout` for open responses to end before it kills them.
We chain its SIGTERM handler to drain the registry: running generations get
SLUICE_SHUTDOWN_GRACE_SECONDS to finish, then end with `cancelled` (reason `shutdown`) and
`[DONE]`, their responses close, and the worker exits before gunicorn would cut anything.
The grace must stay below gunicorn's `graceful_timeout` (deploy/gunicorn.conf.py sets both).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import gevent

from app.lifecycle.registry import Registry

log = logging.getLogger("sluice.shutdown")


def _is_gunicorn_handler(handler: Any) -> bool:
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("gunicorn.workers")


def install(registry: Registry, grace: float) -> bool:
    """Chain the worker's SIGTERM handler (only inside a gunicorn worker); True if installed."""
    previous = signal.getsignal(signal.SIGTERM)
    if not _is_gunicorn_handler(previous):
        return False

    def on_term(signum: int, frame: Any) -> None:
        # Signal handlers must not block: the drain runs in its own greenlet.
        gevent.spawn(registry.drain, grace)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
    return True
