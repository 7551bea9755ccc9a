"""Other libraries' internals, each used in exactly one module here, named for the library.

Each module checks at start-up that the shapes it relies on are there, logs once which path is
in use, and counts every fallback to the slow path in `sluice_fast_path_fallbacks_total{what}`:

    httpcore.py    httpx2 / httpcore2 / h11: a streamed body read off the socket   what="httpcore", "h11"
    anthropic.py   the Anthropic SDK: its thinking-models list, its traced body    what="anthropic"
    gevent.py      the real socket under gevent's                                   what="gevent"
    prometheus.py  prometheus_client's storage, chosen again in a worker           what="prometheus"

    gunicorn.py    gunicorn's worker, servers, pool, keep-alive wait, socket       what="gunicorn_*"
                   (under plain `-k gevent`; app.process.worker.Worker needs none)

`prometheus.py` imports nothing of Sluice's: the metrics module itself uses it.
"""

from __future__ import annotations

import logging

log = logging.getLogger("sluice.seams")

_warned: set[str] = set()


def fell_back(what: str, why: object) -> None:
    """Count one use of the slow path (`what`: the metric's label); log the first one's cause."""
    from app.observability import metrics  # here: metrics imports a module of this package

    metrics.fast_path_fallback(what)
    if what not in _warned:
        _warned.add(what)
        log.warning(
            "seams: %s: %s; fell back to the slower path, counted in"
            ' sluice_fast_path_fallbacks_total{what="%s"} (logged once)',
            what, why, what,
        )
