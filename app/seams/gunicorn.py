"""gunicorn's gevent worker as Sluice uses it: the one module of ours that knows its internals.

Two paths, chosen once per worker when the app first asks for its worker (`current_worker`),
and logged then:

- **worker class** (`app.process.worker.Worker`, deploy/gunicorn.conf.py's `worker_class`).
  The worker is its class's `current` from the moment it loads the app (found here among
  the subclasses of gunicorn's GeventWorker: gunicorn's master loads the class from its file,
  not as `app.process.worker`), and offers what the drain and the takeover need through
  gunicorn's own extension points: its `run` (it keeps its
  servers, stops them accepting, and waits for what the drain holds), `handle_exit` (SIGTERM),
  `timeout_ctx` (the wait for a connection's next request) and `is_already_handled` (a
  response the app wrote itself). gunicorn only has to call those as it does today: checked
  at start-up in the code of its keep-alive loop.
- **plain** (`gunicorn -k gevent wsgi:app`, no class of ours): the worker is found through
  its SIGTERM handler's `__self__`, its servers by walking the garbage collector's objects
  (short: the worker froze its start-up heap), the drain greenlet is put into a server's pool
  (gunicorn exits once its pools are empty), `timeout_ctx` is replaced on the instance, the
  start hook runs by wrapping the instance's `run`, and a taken-over connection is closed by
  raising StopIteration through the WSGI stack (gunicorn's own "close this connection").

Every use of the plain path counts one `sluice_fast_path_fallbacks_total{what}`:

    gunicorn_worker       a worker with no class of ours, found through its SIGTERM handler (at start)
    gunicorn_keepalive    timeout_ctx replaced on the instance, or not consulted by gunicorn (at start)
    gunicorn_start        the start hook run by wrapping the worker's run() (at start)
    gunicorn_servers      listeners found through the garbage collector (at each drain)
    gunicorn_hold         the drain held in a server's pool, or not held at all (at each drain)
    gunicorn_close        a taken-over connection closed by StopIteration (each stream)
    gunicorn_takeover     no taken-over streams: the worker is not gunicorn's async one (at start),
                          or its socket cannot be detached (each stream)
"""

from __future__ import annotations

import gc
import logging
import signal
import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import gevent
from gevent.pool import PoolFull
from gevent.server import BaseServer

from app.observability.metrics import fast_path_fallback

try:
    from gunicorn import SERVER
    from gunicorn.util import http_date
    from gunicorn.workers.base_async import AsyncWorker
    from gunicorn.workers.ggevent import GeventWorker
except ImportError:  # pragma: no cover - gunicorn is a dependency; then there is no worker to find
    AsyncWorker = GeventWorker = None

log = logging.getLogger("sluice.seams.gunicorn")

# What the worker class of ours offers (app.process.worker.Worker); checked at start-up.
OURS = ("sluice_seam", "servers", "stop_accepting", "serving", "hold", "on_sigterm", "exit_as_gunicorn",
        "keepalive_wait", "close_taken_over", "taken_over")

_checked: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()  # worker -> its path


def current_worker() -> Any | None:
    """The gunicorn worker this process is (checked, its path logged once); None outside gunicorn."""
    worker = _ours_running()
    if worker is None:
        worker = _by_sigterm_handler()
    if worker is not None:
        check(worker)
    return worker


def _ours_running() -> Any | None:
    """The worker of a class of ours that has loaded (or is loading) the app in this process."""
    classes = list(GeventWorker.__subclasses__()) if GeventWorker is not None else []
    while classes:
        cls = classes.pop()
        worker = getattr(cls, "current", None) if getattr(cls, "sluice_seam", None) else None
        if worker is not None:
            return worker
        classes.extend(cls.__subclasses__())
    return None


def _by_sigterm_handler() -> Any | None:
    handler = signal.getsignal(signal.SIGTERM)
    owner = getattr(handler, "__self__", None)
    if owner is not None and type(owner).__module__.startswith("gunicorn.workers") and hasattr(owner, "cfg"):
        return owner
    return None


def _uses(function: Any, name: str) -> bool:
    """gunicorn's `function` still refers to `name` (the extension point it calls)."""
    code = getattr(function, "__code__", None)
    return code is not None and name in code.co_names


def check(worker: Any) -> str:
    """Which path `worker` takes ("worker class" or "plain"): checked, logged and counted once."""
    path = _checked.get(worker)
    if path is not None:
        return path
    if all(hasattr(worker, name) for name in OURS):
        path = "worker class"
        log.info("gunicorn: Sluice's worker class (app.process.worker.%s): drain and takeover "
                 "through gunicorn's extension points", type(worker).__name__)
        handle = getattr(AsyncWorker, "handle", None)
        if not _uses(handle, "timeout_ctx"):
            fast_path_fallback("gunicorn_keepalive")
            log.warning("gunicorn: its keep-alive loop no longer calls timeout_ctx: idle connections "
                        "are not closed on a drain")
        if not _uses(getattr(AsyncWorker, "handle_request", None), "is_already_handled"):
            worker.close_taken_over = False  # raise StopIteration as the plain worker does
            log.warning("gunicorn: handle_request no longer calls is_already_handled: taken-over "
                        "connections are closed by StopIteration")
    else:
        path = "plain"
        fast_path_fallback("gunicorn_worker")
        log.info("gunicorn: plain worker %s (no worker class of Sluice's): drain and takeover "
                 "through gunicorn's internals", type(worker).__name__)
        missing = [name for name in ("sockets", "alive", "timeout_ctx", "run") if not hasattr(worker, name)]
        if not hasattr(BaseServer, "stop_accepting"):
            missing.append("gevent's BaseServer.stop_accepting")
        if missing:
            log.warning("gunicorn: the worker's drain may fail: no %s", ", ".join(missing))
    _checked[worker] = path
    return path


def _ours(worker: Any) -> bool:
    return check(worker) == "worker class"


# -- worker start --------------------------------------------------------------------------------


def at_plain_start(worker: Any, start: Callable[[], None]) -> None:
    """Run `start` where the worker class of ours runs its own start (after the app and
    post_worker_init, before serving): for a plain worker, by wrapping its run(). Nothing for ours."""
    if _ours(worker):
        return
    run = worker.run
    fast_path_fallback("gunicorn_start")

    def started_then_run() -> Any:
        start()
        return run()

    worker.run = started_then_run


# -- signals -------------------------------------------------------------------------------------


def on_sigterm(worker: Any, handler: Callable[[int, Any], None]) -> Callable[[int, Any], None]:
    """Make `handler(signum, frame)` the worker's reaction to SIGTERM; return gunicorn's own
    (`alive = False`: it stops serving within a second, once its connections have ended)."""
    if _ours(worker):
        worker.on_sigterm = handler
        return worker.exit_as_gunicorn  # type: ignore[no-any-return]
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, handler)
    signal.siginterrupt(signal.SIGTERM, False)
    return previous if callable(previous) else (lambda signum, frame: None)


# -- keep-alive ----------------------------------------------------------------------------------


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
        if self.between and self.gate.draining():
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
        if kind is None and self.between and self.gate.draining():
            # A request read after SIGTERM on a reused connection: close without an answer,
            # so that the client retries it on a new connection (a live worker).
            raise StopIteration
        return False


class KeepAliveGate:
    """The gevent worker's `timeout_ctx`: the wait between two requests of one connection.

    While `draining()`, a connection that was used before is closed rather than kept: gunicorn
    closes the socket, without writing a response, when StopIteration leaves this wait.
    """

    def __init__(self, keepalive: float, draining: Callable[[], bool]) -> None:
        self.keepalive = keepalive
        self.draining = draining
        self.served: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self.idle: dict[Any, gevent.Timeout] = {}

    def __call__(self) -> _Wait:
        return _Wait(self)

    def close_idle(self) -> None:
        """End every keep-alive wait now, as if it had expired: those connections close."""
        for glet, timeout in list(self.idle.items()):
            glet.kill(timeout, block=False)


def gate_keepalive(worker: Any) -> KeepAliveGate | None:
    """Put a KeepAliveGate between the requests of each connection (none with keepalive 0);
    it sees the worker draining once gunicorn's `alive` is False."""
    keepalive = float(worker.cfg.keepalive)
    if keepalive <= 0:
        return None
    gate = KeepAliveGate(keepalive, lambda: not worker.alive)
    if _ours(worker):
        worker.keepalive_wait = gate
    else:
        fast_path_fallback("gunicorn_keepalive")
        worker.timeout_ctx = gate
    return gate


# -- drain ---------------------------------------------------------------------------------------


def _fileno(sock: Any) -> int:
    try:
        return int(sock.fileno())
    except (AttributeError, OSError, ValueError):
        return -1


class Listeners:
    """A worker's servers, no longer accepting: the connections they still serve, and a way
    to keep the worker alive for a greenlet of ours."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.count = 0

    def serving(self, own: Iterable[gevent.Greenlet] = ()) -> int:
        """Connections still being served (requests read before the worker stopped accepting);
        greenlets of `own` that `hold` put among them not counted."""
        return int(self.worker.serving())

    def hold(self, glet: gevent.Greenlet) -> bool:
        """The worker does not exit before `glet` has ended (at most until graceful_timeout)."""
        self.worker.hold(glet)
        return True


class _PlainListeners(Listeners):
    def __init__(self, worker: Any, servers: list[BaseServer]) -> None:
        super().__init__(worker)
        self.servers = servers
        self.count = len(servers)

    def serving(self, own: Iterable[gevent.Greenlet] = ()) -> int:
        own = list(own)
        return sum(1 for server in self.servers for glet in list(getattr(server, "pool", None) or ())
                   if glet not in own)

    def hold(self, glet: gevent.Greenlet) -> bool:
        # gunicorn's gevent worker exits as soon as its servers' pools hold no connection,
        # whatever other greenlets still do: so the greenlet goes into one of those pools.
        fast_path_fallback("gunicorn_hold")
        for server in self.servers:
            pool = getattr(server, "pool", None)
            if pool is None:
                continue
            try:
                pool.add(glet, blocking=False)
            except PoolFull:  # as many connections as worker_connections: the worker waits anyway
                continue
            return True
        return False


def stop_accepting(worker: Any) -> Listeners:
    """Stop this worker's servers from accepting now (gunicorn's own loop would a second later)."""
    if _ours(worker):
        listeners = Listeners(worker)
        listeners.count = int(worker.stop_accepting())
        return listeners
    fast_path_fallback("gunicorn_servers")
    mine = {_fileno(s) for s in getattr(worker, "sockets", ())} - {-1}
    stopped = []
    # The servers are locals of the worker's run(); the one place that reaches them is the
    # garbage collector's list (made after the worker froze its start-up heap, so a short
    # walk). Matched by file descriptor: a server keeps the socket object under the worker's.
    for obj in gc.get_objects():
        if isinstance(obj, BaseServer) and _fileno(getattr(obj, "socket", None)) in mine:
            obj.stop_accepting()
            stopped.append(obj)
    return _PlainListeners(worker, stopped)


# -- takeover (app.delivery.takeover) ------------------------------------------------------------


def can_take_over(worker: Any) -> bool:
    """`worker` is gunicorn's async worker, whose connections the app may take over."""
    if AsyncWorker is not None and isinstance(worker, AsyncWorker):
        return True
    if worker is not None:
        fast_path_fallback("gunicorn_takeover")
        log.info("gunicorn: %s is not an async worker: gunicorn writes every stream", type(worker).__name__)
    return False


def client_socket(environ: dict[str, Any]) -> Any | None:
    """The client connection's socket gunicorn puts in the environ (None under another server)."""
    return environ.get("gunicorn.socket")


def detachable(environ: dict[str, Any]) -> bool:
    """This request's connection is a plain TCP socket of gunicorn's (not TLS)."""
    sock = environ.get("gunicorn.socket")
    if sock is None or hasattr(sock, "getpeercert"):
        return False
    if not hasattr(sock, "detach"):
        fast_path_fallback("gunicorn_takeover")  # gunicorn writes this stream
        return False
    return True


def detach(environ: dict[str, Any]) -> int:
    """Take this request's socket from gunicorn: its file descriptor (OSError, ValueError: closed).

    Detached, not dup()ed: gunicorn's close of its object then leaves the descriptor open, and
    the event loop never sees a closed number whose connection lives on.
    """
    return int(environ["gunicorn.socket"].detach())


def head_fields() -> list[str]:
    """The header lines gunicorn puts on every response of its own: Server, Date."""
    return [f"Server: {SERVER}", f"Date: {http_date()}"]


def handed_over(worker: Any) -> Iterable[bytes]:
    """What the outermost WSGI layer gives gunicorn for a response it wrote itself (the socket
    detached): gunicorn closes its side of the connection, reads no next request off it, and
    writes and logs nothing."""
    if _ours(worker) and worker.close_taken_over:
        return worker.taken_over  # type: ignore[no-any-return]  # its is_already_handled closes
    # gunicorn's keep-alive loop ignores handle_request's "already handled" and would read the
    # next request off the socket: StopIteration is its own "close this connection".
    fast_path_fallback("gunicorn_close")
    raise StopIteration("the stream is written from the event loop")
