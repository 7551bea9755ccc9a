"""Taking a stream's connection over from gunicorn, once Flask has built the whole response.

The stream route offers its `WsgiBody` (`offer`) when the connection can be written from the
event loop: gunicorn's async worker, HTTP/1.x over plain TCP, not HEAD, a generation of this
worker (a feed with `listen`). The outermost WSGI layer (`DirectLayer`) then writes the status
line and every header Flask set itself, with `Connection: close` and gunicorn's framing (chunked
for HTTP/1.1; an HTTP/1.0 body ends with the connection), hands the socket (detached from
gevent's object) and the body's cursor to a `LoopWriter` (`app.delivery.loop_writer`), and tells
gunicorn to close its side: the connection greenlet ends, and with it its stack and gunicorn's
request objects. Anything else goes the ordinary way (gunicorn iterates the `WsgiBody`).

(A close-delimited HTTP/1.1 body was tried first: http.client, under `requests`, reads such a
body to EOF before handing anything out, so a Python client would see no event until the end.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from app.backends.base import Feed
from app.delivery.loop_writer import LoopWriter, LoopWriters
from app.delivery.wsgi_body import WsgiBody
from app.seams import gevent as gevent_seam
from app.seams import gunicorn

log = logging.getLogger("sluice.delivery")

_OFFERED = "sluice.direct"  # environ key: the WsgiBody offered by the route
_INSTALLED = "sluice.direct.layer"  # environ key: the layer is there to take the offer
# Framing is ours on this path: what the app may have set about it is not passed on.
_HOP = frozenset({"connection", "transfer-encoding", "content-length", "keep-alive"})
# What an access log line needs of the request (never the Authorization header or cookies).
_LOGGED = ("REMOTE_ADDR", "REQUEST_METHOD", "RAW_URI", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL",
           "HTTP_REFERER", "HTTP_USER_AGENT")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def offer(environ: dict[str, Any], body: WsgiBody, feed: Feed) -> None:
    """Mark `body` for direct delivery when this connection and feed allow it."""
    if (
        environ.get(_INSTALLED)
        and gunicorn.detachable(environ)  # not TLS: an SSL socket is not written this way
        and environ.get("SERVER_PROTOCOL") in ("HTTP/1.0", "HTTP/1.1")
        and environ.get("REQUEST_METHOD") != "HEAD"
        and hasattr(feed, "listen")  # a generation of this worker, not a Redis-followed one
    ):
        environ[_OFFERED] = body


class _Response:
    """What gunicorn's access log reads of a response."""

    __slots__ = ("status", "sent", "headers")

    def __init__(self, status: str, sent: int, headers: list[tuple[str, str]]) -> None:
        self.status, self.sent, self.headers = status, sent, headers


class DirectLayer:
    """The outermost WSGI layer: takes offered stream responses over (see the module doc)."""

    def __init__(self, app: WSGIApp, worker: Any, writers: LoopWriters) -> None:
        self.app = app
        self.worker = worker
        self.writers = writers
        self.limit = int(getattr(worker, "worker_connections", 1000))

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        # Taken-over streams leave gunicorn's pool: at most worker_connections of them, so that
        # past it a stream holds a pool slot again and the worker stops accepting, as before.
        if len(self.writers.writing()) + self.writers.deciding() >= self.limit:
            return self.app(environ, start_response)
        environ[_INSTALLED] = True
        with self.writers.considering():  # a request may switch greenlets before it is taken over, or not
            return self._call(environ, start_response)

    def _call(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
            if exc_info is not None or _OFFERED not in environ or not status.startswith("200") \
                    or not content_type.startswith("text/event-stream"):
                environ.pop(_OFFERED, None)  # an error response built after the offer: not ours
                return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)
            captured[:] = [status, headers]
            return _no_write

        app_iter = self.app(environ, capture)
        body: WsgiBody | None = environ.pop(_OFFERED, None)
        if body is None or not captured:
            return app_iter
        status, headers = captured
        try:
            raw = gevent_seam.plain_socket(gunicorn.detach(environ))
        except (OSError, ValueError):
            start_response(status, headers)  # closed already: the ordinary path ends it
            return app_iter
        self._take_over(environ, body, raw, status, headers)
        if hasattr(app_iter, "close"):
            app_iter.close()  # werkzeug's: the handed-over WsgiBody's close does nothing
        return gunicorn.handed_over(self.worker)  # gunicorn closes its side, writes nothing

    def _take_over(self, environ: dict[str, Any], body: WsgiBody, raw: Any, status: str,
                   headers: list[tuple[str, str]]) -> None:
        protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        chunked = protocol == "HTTP/1.1"  # as gunicorn frames it (an HTTP/1.0 body ends with the connection)
        lines = [f"{protocol} {status}", *gunicorn.head_fields(), "Connection: close"]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in _HOP]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        on_end = None
        logger = getattr(self.worker, "log", None)
        if logger is not None and getattr(logger, "access_log_enabled", False):
            on_end = _access_logger(logger, {k: environ[k] for k in _LOGGED if k in environ},
                                    status, headers, len(head))
        writer = LoopWriter(body.hand_over(), raw, send_timeout=body.send_timeout, chunked=chunked,
                            on_end=on_end, writers=self.writers)
        writer.start(head)


def _access_logger(logger: Any, environ: dict[str, str], status: str, headers: list[tuple[str, str]],
                   head: int) -> Callable[[LoopWriter], None]:
    """The line gunicorn would log at the end of this response (it logs no handed-over request)."""
    started = time.monotonic()

    def done(writer: LoopWriter) -> None:
        took = timedelta(seconds=time.monotonic() - started)
        logger.access(_Response(status, max(0, writer.sent - head), headers), [], environ, took)

    return done


def _no_write(data: bytes) -> None:
    raise RuntimeError("a handed-over response is not written through start_response")


def install(app: Any, worker: Any, writers: LoopWriters) -> None:
    """Make `DirectLayer` the outermost layer of `app` under gunicorn's async worker (`worker`:
    the gunicorn worker this process is, or None); the streams it takes over are `writers`'."""
    if not gunicorn.can_take_over(worker):
        return
    app.wsgi_app = DirectLayer(app.wsgi_app, worker, writers)
