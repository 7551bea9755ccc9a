"""Greenlets that run in the context they were started from.

A new greenlet starts with an empty `contextvars` context, so whatever the starting greenlet
had current (the OpenTelemetry span, above all) is lost in it: the Anthropic SDK's span of an
API call made there began a trace of its own. These start each greenlet in a copy of the
caller's context instead; an OpenTelemetry attach/detach inside it then stays in that one
context, so its detach always finds its token ("Failed to detach context" is never logged).

The copy leaves out Flask's request and app contexts. A generation's producer is started from
the request that created it and outlives it by the whole answer; Flask's request context in its
copy would keep that request alive as long: the Flask and werkzeug request objects, the WSGI
environ and, through it, the WSGI server's request, its body reader and buffers (about a tenth
of an open stream's memory, measured in a gunicorn worker). Nothing these greenlets run reads
Flask's context (only `app.web` imports Flask).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from gevent import Greenlet

_FLASK = "flask."  # Flask's context variables: flask.app_ctx, flask.request_ctx


def spawn(run: Callable[..., Any], *args: Any, cls: type[Greenlet] = Greenlet) -> Greenlet:
    """`gevent.spawn(run, *args)`, running in a copy of the caller's context (`cls`: a subclass)."""
    greenlet = cls(run, *args)
    greenlet.gr_context = _context()
    greenlet.start()
    return greenlet


def spawn_later(seconds: float, run: Callable[..., Any], *args: Any) -> Greenlet:
    """`gevent.spawn_later(seconds, run, *args)`, running in a copy of the caller's context."""
    greenlet = Greenlet(run, *args)
    greenlet.gr_context = _context()
    greenlet.start_later(seconds)
    return greenlet


def _context() -> contextvars.Context:
    """A copy of the caller's context, without Flask's request and app contexts."""
    current = contextvars.copy_context()
    kept = [(var, value) for var, value in current.items() if not var.name.startswith(_FLASK)]
    if len(kept) == len(current):
        return current
    context = contextvars.Context()
    context.run(_set_all, kept)
    return context


def _set_all(pairs: list[tuple[contextvars.ContextVar[Any], Any]]) -> None:
    for var, value in pairs:
        var.set(value)
