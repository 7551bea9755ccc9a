"""Stop and reload inside a gunicorn gevent worker: no stream cut, no request lost.

What the drain does; how it reaches gunicorn is `app.seams.gunicorn`'s (through the worker
class of ours, `app.process.worker.Worker`, or, under plain `gunicorn -k gevent`, through
gunicorn's internals).

On SIGTERM (a stop, or the old workers of a HUP reload) gunicorn's gevent worker sets
`alive = False`, keeps accepting for up to a second more, closes its listener, waits up to
`graceful_timeout` for its connections to end, and then kills them (on a stop the master
SIGKILLs it after the same time). `install` takes over that reaction, whatever config started
gunicorn, and on SIGTERM:

0. on a reload's old worker (deploy/gunicorn.conf.py shares `app.process.handover`'s board
   with the workers), first goes on accepting until a worker of the new generation has booted;
1. stops accepting at once. The listening socket is shared with the other workers (the new
   ones, on a reload), so new connections go to them;
2. closes its idle keep-alive connections now, and every other one as its response ends, and
   closes without an answer a request that still arrives on a reused connection. nginx (and
   browsers) retry a request that fails on a reused keep-alive connection, on a fresh one that
   a live worker accepts; a 503 "restarting" they would pass on to the client;
3. lets running generations finish until the drain deadline, then ends them with `cancelled`
   (reason `shutdown`) and `[DONE]`. The deadline comes from the worker itself:
   `graceful_timeout` minus a margin for writing those endings, or
   SLUICE_SHUTDOWN_GRACE_SECONDS when that is shorter;
4. keeps the worker alive until the backend has published every ending (a Redis that was down
   when a stream ended, and comes back), and every stream written from the event loop
   (`app.delivery.loop_writer`: no connection of gunicorn's) has written its own, at most until
   just before `graceful_timeout`.

gunicorn's worker exits as soon as it serves no connection, whatever other greenlets still do:
so the drain greenlet is held by the worker (`Listeners.hold`), and counts as a connection.

`install` also runs the worker-start step (`app.process.worker.freeze_heap`) under a plain
gevent worker, which has no `load_wsgi` of ours to run it.
"""

from __future__ import annotations

import contextvars
import logging
import signal
import time
from typing import Any

import gevent

from app.lifecycle.registry import Registry, WrittenElsewhere
from app.process.handover import HANDOVER_MAX, Board
from app.process.worker import freeze_heap
from app.seams import gunicorn

log = logging.getLogger("sluice.shutdown")

MARGIN_SHARE = 0.25  # of graceful_timeout, kept for the endings to be written and flushed
MARGIN_MIN = 1.0
MARGIN_MAX = 5.0
# Seconds before graceful_timeout by which the drain has returned (at most a sixth of it):
# closing the backend takes a moment, and gunicorn looks at its pools once a second.
EXIT_MARGIN = 2.5


def drain_deadline(graceful_timeout: float, configured: float) -> float:
    """Seconds running generations may go on after SIGTERM, inside gunicorn's own limit."""
    if graceful_timeout >= 2 * MARGIN_MIN:
        limit = graceful_timeout - min(MARGIN_MAX, max(MARGIN_MIN, graceful_timeout * MARGIN_SHARE))
    else:
        limit = graceful_timeout / 2
    return max(0.0, min(configured, limit))


def drain_limit(graceful_timeout: float) -> float:
    """Seconds after SIGTERM by which the drain, mirror flush included, has returned."""
    return max(0.0, graceful_timeout - min(EXIT_MARGIN, graceful_timeout / 6))


def _serving(servers: gunicorn.Listeners, own: list[gevent.Greenlet]) -> int:
    """Connections of `servers` still being served (requests read before the worker stopped
    accepting); the greenlets in `own` (the drain's) not counted."""
    return servers.serving(own)


def install(registry: Registry, configured_grace: float, elsewhere: WrittenElsewhere | None = None) -> Any | None:
    """Take over the gunicorn worker's SIGTERM; the worker, or None when not under gunicorn.

    `elsewhere`: the responses written from the event loop (the drain waits for them too)."""
    worker = gunicorn.current_worker()
    if worker is None:
        return None
    gunicorn.at_plain_start(worker, freeze_heap)  # the worker class of ours does it in load_wsgi
    grace = drain_deadline(float(worker.cfg.graceful_timeout), configured_grace)
    limit = drain_limit(float(worker.cfg.graceful_timeout))
    gate = gunicorn.gate_keepalive(worker)
    board: Board | None = getattr(worker, "sluice_board", None)  # deploy/gunicorn.conf.py's
    state = {"handover": False, "draining": False}

    def on_term(signum: int, frame: Any) -> None:
        if board is not None and not state["handover"] and board.replacing(int(worker.age)):
            # Old generation of a reload: accept until a new worker has booted (a second
            # SIGTERM meanwhile drains at once).
            state["handover"] = True
            cap = min(HANDOVER_MAX, float(worker.cfg.graceful_timeout) / 2)
            log.info("worker %s: reload; accepting until a new worker has booted (at most %.0f s)", worker.pid, cap)
            gevent.spawn(hand_over, board, cap)
            return
        drain(signum, frame)

    def hand_over(board: Board, cap: float) -> None:
        deadline = time.monotonic() + cap
        while board.replacing(int(worker.age)) and not state["draining"] and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if board.replacing(int(worker.age)):
            log.warning("worker %s: no new worker booted in %.0f s; draining anyway", worker.pid, cap)
        drain(signal.SIGTERM, None)

    def drain(signum: int, frame: Any) -> None:
        if state["draining"]:
            return
        state["draining"] = True
        previous(signum, frame)  # gunicorn's: alive = False
        servers = gunicorn.stop_accepting(worker)
        log.info("worker %s draining: stopped accepting on %d listener(s)", worker.pid, servers.count)
        # Signal handlers must not block: the rest runs in greenlets.
        # Both in a context of their own, empty: a signal handler runs in whichever greenlet was
        # running (a generation's producer, with its upstream span current), which is not theirs.
        if gate is not None:
            idle = gevent.Greenlet(gate.close_idle)
            idle.gr_context = contextvars.Context()
            idle.start()
        own: list[gevent.Greenlet] = []  # the drain's greenlet, which `serving` leaves out
        drainer = gevent.Greenlet(registry.drain, grace, limit, lambda: _serving(servers, own), elsewhere)
        drainer.gr_context = contextvars.Context()
        own.append(drainer)
        if not servers.hold(drainer):
            log.warning("worker %s: could not hold the worker for its drain; it may exit before it ends", worker.pid)
        drainer.start()

    previous = gunicorn.on_sigterm(worker, on_term)
    log.debug("shutdown: drain deadline %.1f s (gunicorn graceful_timeout %s s)", grace, worker.cfg.graceful_timeout)
    return worker
