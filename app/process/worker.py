"""Sluice's gunicorn worker: gunicorn's gevent worker, with what a drain needs as methods.

deploy/gunicorn.conf.py makes it the `worker_class`. Everything here is one of gunicorn's
extension points of a worker class:

- `load_wsgi` (worker start): makes the worker `Worker.current` before the app loads (where
  `app.seams.gunicorn` finds it), and once the app is loaded freezes the heap it left
  (`freeze_heap`);
- `run`: gunicorn's gevent loop, keeping its servers (`stop_accepting`, `serving`) and
  waiting, after SIGTERM, for its connections AND for what the app `hold`s (the drain);
- `handle_exit` (SIGTERM): the app's reaction when it has set one (`on_sigterm`), else
  gunicorn's (`exit_as_gunicorn`);
- `timeout_ctx` (the wait for a connection's next request): the app's keep-alive gate;
- `is_already_handled`: a response the app wrote itself (`TAKEN_OVER`) closes the connection.

Plain `gunicorn -k gevent wsgi:app` works too: `app.seams.gunicorn` then reaches the same
things through gunicorn's internals (and counts it).

Loaded by gunicorn's master from this file (deploy/gunicorn.conf.py), not as part of the `app`
package: importing that in the master would load Flask and the SDKs before gevent patches the
workers. So no app imports here at all: the worker serves any WSGI app (the deploy tests' echo
app boots as fast as under plain `-k gevent`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer
from gunicorn.sock import ssl_context
from gunicorn.workers.ggevent import GeventWorker


def freeze_heap() -> None:
    """At worker start, once the app is loaded: freeze what exists now.

    The SDKs leave ~200k long-lived objects; a full collection walking them pauses every stream
    of the worker for 100+ ms (docs/benchmarks.md).
    """
    gc.collect()
    gc.freeze()


class Worker(GeventWorker):  # type: ignore[misc]  # gunicorn has no type information
    """gunicorn's gevent worker with the drain's extension points (see the module doc)."""

    sluice_seam = 1  # what app.seams.gunicorn looks for (with the methods below)
    current: ClassVar[Worker | None] = None  # the worker this process is, once it loads the app
    taken_over: ClassVar[object] = object()  # what the app returns for a response it wrote itself

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.servers: list[StreamServer] = []
        self.held: list[gevent.Greenlet] = []  # greenlets the worker waits for before it exits
        self.on_sigterm: Callable[[int, Any], None] | None = None
        self.keepalive_wait: Callable[[], Any] | None = None
        self.close_taken_over = True  # is_already_handled closes a taken-over connection

    # -- worker start --

    def load_wsgi(self) -> None:
        # In the worker process (__init__ runs in the master, before the fork).
        type(self).current = self
        super().load_wsgi()
        freeze_heap()  # before run(): the servers and every connection stay young

    # -- the loop: as gunicorn's GeventWorker.run (27.0.1, server_class None), keeping its
    # servers; `run` is the method gunicorn's Worker asks a worker class to provide --

    def run(self) -> None:
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        for s in self.sockets:
            s.setblocking(1)
            server = StreamServer(s, handle=partial(self.handle, s), spawn=Pool(self.worker_connections), **ssl_args)
            if self.cfg.workers > 1:
                server.max_accept = 1
            server.start()
            self.servers.append(server)

        while self.alive:
            self.notify()
            gevent.sleep(1.0)

        try:
            for server in self.servers:
                server.close()  # stop accepting (already done if the app drains)
            # Serve the connections there are, and wait for what the app holds, until
            # graceful_timeout; gunicorn's master kills the worker then.
            started = time.time()
            while time.time() - started <= self.cfg.graceful_timeout:
                if not self.serving() and not any(not glet.dead for glet in self.held):
                    return
                self.notify()
                gevent.sleep(1.0)
            self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
            for server in self.servers:
                server.stop(timeout=1)
        except Exception:  # as gunicorn's: the worker exits either way
            pass

    def stop_accepting(self) -> int:
        """Stop every server accepting now (the shared listeners: the other workers accept)."""
        for server in self.servers:
            server.stop_accepting()
        return len(self.servers)

    def serving(self) -> int:
        """Connections being served."""
        return sum(len(server.pool) for server in self.servers)

    def hold(self, glet: gevent.Greenlet) -> None:
        """Do not exit before `glet` has ended (at most until graceful_timeout)."""
        self.held.append(glet)

    # -- signals --

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.on_sigterm is not None:
            self.on_sigterm(sig, frame)
        else:
            self.exit_as_gunicorn(sig, frame)

    def exit_as_gunicorn(self, sig: int, frame: Any) -> None:
        """gunicorn's SIGTERM: `alive = False`, the loop stops serving once its connections end."""
        super().handle_exit(sig, frame)

    # -- connections --

    def timeout_ctx(self) -> Any:
        if self.keepalive_wait is not None:
            return self.keepalive_wait()
        return super().timeout_ctx()

    def is_already_handled(self, respiter: Any) -> bool:
        # gunicorn's comment on this method: "some workers will need to overload this function
        # to raise a StopIteration" -- the keep-alive loop would otherwise read the next request
        # off a socket the app has taken.
        if respiter is self.taken_over:
            raise StopIteration("the stream is written from the event loop")
        return bool(super().is_already_handled(respiter))
