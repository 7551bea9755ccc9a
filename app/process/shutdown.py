"""Stop and reload inside a gunicorn gevent worker: no stream cut, no request lost.

On SIGTERM (a stop, or the old workers of a HUP reload) gunicorn's gevent worker sets
`alive = False`, keeps accepting for up to a second more, closes its listener, waits up to
`graceful_timeout` for its connections to end, and then kills them (on a stop the master
SIGKILLs it after the same time). `install` chains that handler, whatever config started
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

gunicorn's worker exits as soon as its servers' pools hold no connection, whatever other
greenlets still do: so the drain greenlet is put into one of those pools, and counts as one.
"""

from __future__ import annotations

import contextvars
import gc
import logging
import signal
import time
import weakref
from types import TracebackType
from typing import Any

import gevent
from gevent.pool import PoolFull
from gevent.server import BaseServer

from app.lifecycle.registry import Registry, WrittenElsewhere
from app.process.handover import HANDOVER_MAX, Board

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


def gunicorn_worker() -> Any | None:
    """The gunicorn worker this process is, found through its SIGTERM handler; else None."""
    handler = signal.getsignal(signal.SIGTERM)
    owner = getattr(handler, "__self__", None)
    if owner is not None and type(owner).__module__.startswith("gunicorn.workers") and hasattr(owner, "cfg"):
        return owner
    return None


class _Wait:
    """One wait of a connection for its next request (see KeepAliveGate)."""

    __slots__ = ("gate", "glet", "between", "timeout")

    def __init__(self, gate: KeepAliveGate) -> None:
        self.gate = gate
        self.glet = gevent.getcurrent()
        count = gate.served.get(self.glet, 0) + 1
        gate.served[self.glet] = count
        self.between = count > 1  # the connection was used before: nginx retries on it
        self.timeout = gevent.Timeout(gate.keepalive, False)

    def __enter__(self) -> _Wait:
        if self.between and self.gate.draining:
            raise StopIteration  # a response ended while draining: close, keep nothing alive
        if self.between:
            self.gate.idle[self.glet] = self.timeout
        self.timeout.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        self.timeout.close()
        self.gate.idle.pop(self.glet, None)
        if exc is self.timeout:
            return True  # keep-alive expired (or ended by close_idle): gunicorn closes quietly
        if kind is None and self.between and self.gate.draining:
            # A request read after SIGTERM on a reused connection: close without an answer,
            # so that the client retries it on a new connection (a live worker).
            raise StopIteration
        return False


class KeepAliveGate:
    """Replaces the gevent worker's `timeout_ctx`: the wait between two requests of one connection.

    gunicorn raises StopIteration out of this wait to close a connection (its own signal for
    "no more requests"): the socket is closed and no response is written.
    """

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.keepalive = float(worker.cfg.keepalive)
        self.served: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self.idle: dict[Any, gevent.Timeout] = {}

    @property
    def draining(self) -> bool:
        return not self.worker.alive

    def __call__(self) -> _Wait:
        return _Wait(self)

    def close_idle(self) -> None:
        """End every keep-alive wait now, as if it had expired: those connections close."""
        for glet, timeout in list(self.idle.items()):
            glet.kill(timeout, block=False)


def _fileno(sock: Any) -> int:
    try:
        return int(sock.fileno())
    except (AttributeError, OSError, ValueError):
        return -1


def _stop_accepting(worker: Any) -> list[BaseServer]:
    """Stop this worker's servers from accepting (gunicorn closes them only a second later)."""
    mine = {_fileno(s) for s in getattr(worker, "sockets", ())} - {-1}
    stopped = []
    # The servers are locals of the worker's run(); the one place that reaches them is the
    # garbage collector's list (made after the app's gc.freeze(), so it is a short walk).
    # Matched by file descriptor: a server keeps the socket object underneath the worker's.
    for obj in gc.get_objects():
        if isinstance(obj, BaseServer) and _fileno(getattr(obj, "socket", None)) in mine:
            obj.stop_accepting()
            stopped.append(obj)
    return stopped


def _hold_worker(servers: list[BaseServer], glet: gevent.Greenlet) -> bool:
    """Count `glet` as a connection of one of `servers`: gunicorn's worker waits for it."""
    for server in servers:
        pool = getattr(server, "pool", None)
        if pool is None:
            continue
        try:
            pool.add(glet, blocking=False)
        except PoolFull:  # as many connections as worker_connections: the worker waits anyway
            continue
        return True
    return False


def _serving(servers: list[BaseServer], own: list[gevent.Greenlet]) -> int:
    """Connections of `servers` still being served (requests read before the worker stopped
    accepting); the greenlets in `own` (the drain's) not counted."""
    return sum(1 for server in servers for glet in list(getattr(server, "pool", None) or ()) if glet not in own)


def install(registry: Registry, configured_grace: float, elsewhere: WrittenElsewhere | None = None) -> Any | None:
    """Chain the gunicorn worker's SIGTERM handler; the worker, or None when not under gunicorn."""
    worker = gunicorn_worker()
    if worker is None:
        return None
    grace = drain_deadline(float(worker.cfg.graceful_timeout), configured_grace)
    limit = drain_limit(float(worker.cfg.graceful_timeout))
    gate = KeepAliveGate(worker)
    if float(worker.cfg.keepalive) > 0:
        worker.timeout_ctx = gate
    previous = signal.getsignal(signal.SIGTERM)
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
        if callable(previous):
            previous(signum, frame)  # gunicorn's: alive = False
        servers = _stop_accepting(worker)
        log.info("worker %s draining: stopped accepting on %d listener(s)", worker.pid, len(servers))
        # Signal handlers must not block: the rest runs in greenlets.
        # Both in a context of their own, empty: a signal handler runs in whichever greenlet was
        # running (a generation's producer, with its upstream span current), which is not theirs.
        idle = gevent.Greenlet(gate.close_idle)
        idle.gr_context = contextvars.Context()
        idle.start()
        own: list[gevent.Greenlet] = []  # the drain's greenlet, which `serving` leaves out
        drainer = gevent.Greenlet(registry.drain, grace, limit, lambda: _serving(servers, own), elsewhere)
        drainer.gr_context = contextvars.Context()
        own.append(drainer)
        if not _hold_worker(servers, drainer):
            log.warning("worker %s: could not hold the worker for its drain; it may exit before it ends", worker.pid)
        drainer.start()

    signal.signal(signal.SIGTERM, on_term)
    signal.siginterrupt(signal.SIGTERM, False)
    log.debug("shutdown: drain deadline %.1f s (gunicorn graceful_timeout %s s)", grace, worker.cfg.graceful_timeout)
    return worker
