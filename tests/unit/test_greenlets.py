"""app.observability.greenlets: the caller's context, without Flask's (issue 19)."""

from __future__ import annotations

import contextvars
import gc
import weakref

import flask
from gevent.event import Event

from app.observability import greenlets

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("test_greenlets.mark", default="unset")


def seen(wait: Event | None = None) -> tuple[str, bool, bool]:
    if wait is not None:
        wait.wait(5)
    return MARK.get(), flask.has_request_context(), flask.has_app_context()


def test_a_greenlet_keeps_the_callers_context_but_not_flasks_request() -> None:
    app = flask.Flask(__name__)
    go = Event()
    with app.test_request_context("/stream?prompt=hi"):
        token = MARK.set("from the request")
        try:
            request = weakref.ref(flask.request._get_current_object())  # type: ignore[attr-defined]
            now = greenlets.spawn(seen, go)
            later = greenlets.spawn_later(0.01, seen, go)
        finally:
            MARK.reset(token)
    gc.collect()
    # The request is over, its greenlets are not: they must not keep it (a producer outlives
    # the request that started it by the whole answer).
    assert request() is None
    go.set()
    assert now.get(timeout=5) == ("from the request", False, False)
    assert later.get(timeout=5) == ("from the request", False, False)


def test_outside_flask_the_copy_is_the_callers_context() -> None:
    token = MARK.set("plain")
    try:
        assert greenlets.spawn(seen).get(timeout=5) == ("plain", False, False)
    finally:
        MARK.reset(token)
