"""Greenlets that run in the context they were started from.

A new greenlet starts with an empty `contextvars` context, so whatever the starting greenlet
had current (the OpenTelemetry span, above all) is lost in it: the Anthropic SDK's span of an
API call made there began a trace of its own. These start each greenlet in a copy of the
caller's context instead; an OpenTelemetry attach/detach inside it then stays in that one
context, so its detach always finds its token ("Failed to detach context" is never logged).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from gevent import Greenlet


def spawn(run: Callable[..., Any], *args: Any, cls: type[Greenlet] = Greenlet) -> Greenlet:
    """`gevent.spawn(run, *args)`, running in a copy of the caller's context (`cls`: a subclass)."""
    greenlet = cls(run, *args)
    greenlet.gr_context = contextvars.copy_context()
    greenlet.start()
    return greenlet


def spawn_later(seconds: float, run: Callable[..., Any], *args: Any) -> Greenlet:
    """`gevent.spawn_later(seconds, run, *args)`, running in a copy of the caller's context."""
    greenlet = Greenlet(run, *args)
    greenlet.gr_context = contextvars.copy_context()
    greenlet.start_later(seconds)
    return greenlet
