"""Can this process tell that it is one of several gunicorn workers? (for a loud warning)

Without SLUICE_REDIS_URL each worker only knows its own generations: a `POST /cancel` or a
reconnect that the kernel hands to a sibling worker finds nothing. deploy/gunicorn.conf.py
warns at start-up; this lets the app warn too when it runs under another configuration.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("sluice.backend")


def sibling_workers() -> int:
    """How many worker processes share this one's gunicorn master (0 when it cannot tell)."""
    ppid = os.getppid()
    try:
        with open(f"/proc/{ppid}/cmdline", "rb") as f:
            if b"gunicorn" not in f.read():
                return 0
        with open(f"/proc/{ppid}/task/{ppid}/children") as f:
            return len(f.read().split())
    except OSError:
        return 0


def warn_if_unshared() -> None:
    """Log loudly when several workers run with the in-process backend."""
    workers = sibling_workers()
    if workers > 1:
        log.warning(
            "%d gunicorn workers run WITHOUT SLUICE_REDIS_URL: POST /cancel, reconnects and "
            "GET /streams/<id> only work when they reach the worker that runs the generation. "
            "Set SLUICE_REDIS_URL, or run one worker.",
            workers,
        )
