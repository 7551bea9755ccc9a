"""The small body bound: routes that need no more than an id read at most 4 KiB (contract).

`POST /cancel` names one id, `POST /session` and `DELETE /session` need no body at all: a
bigger body there is 413 before anything reads it, so that no request makes a worker parse a
megabyte of form fields (~0.5 s of its event loop, every other stream of the worker waiting).
The other routes take up to MAX_CONTENT_LENGTH (1 MiB), and their JSON at most
MAX_JSON_MEMBERS members (app.validation).
"""

from __future__ import annotations

import io

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge

SMALL_BODY_BYTES = 4 * 1024
SMALL_BODY_ENDPOINTS = frozenset({"streams.cancel", "session.create", "session.end"})


def limit_small_bodies() -> None:
    """413 for a body over SMALL_BODY_BYTES on the routes that need no more."""
    if request.endpoint not in SMALL_BODY_ENDPOINTS:
        return
    request.max_content_length = SMALL_BODY_BYTES
    if request.content_length is not None:
        if request.content_length > SMALL_BODY_BYTES:
            raise RequestEntityTooLarge()
        return
    # Chunked (no Content-Length). Trap: werkzeug's limit would hand on the first 4 KiB of a
    # longer body as if it were all of it. So one byte more is read here, and a body within the
    # bound is handed on with its length.
    environ = request.environ
    if not environ.get("wsgi.input_terminated"):
        return  # no length and not chunked: werkzeug reads no body at all
    body = environ["wsgi.input"].read(SMALL_BODY_BYTES + 1)
    if len(body) > SMALL_BODY_BYTES:
        raise RequestEntityTooLarge()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))


def init_app(app: Flask) -> None:
    """Check the body's size before any other check reads it."""
    app.before_request(limit_small_bodies)
