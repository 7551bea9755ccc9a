"""Stream routes: thin — validate, look up, choose a status, build the `Response`.

Headers cannot change once the body has started, so everything that can fail is decided here,
before the `WsgiBody` is handed to the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from app import sse
from app.backends.base import Feed
from app.delivery import takeover
from app.delivery.cursor import Cursor
from app.delivery.wsgi_body import WsgiBody
from app.errors import RequestError
from app.lifecycle.registry import Registry
from app.lifecycle.slots import Slot
from app.lifecycle.spec import GenerationSpec
from app.seams import gunicorn
from app.validation import (
    QUERY_EXTRAS,
    bad,
    check_stream_id,
    is_stream_id,
    load_json,
    parse_event_id,
    parse_spec,
)
from app.web.security import client_key, principal, settings

bp = Blueprint("streams", __name__)


def registry() -> Registry:
    """This worker's registry."""
    reg: Registry = current_app.extensions["sluice"]
    reg.ensure_started()
    return reg


def _json_body() -> dict[str, Any]:
    if request.mimetype != "application/json":
        raise RequestError(415, "The body must be JSON (Content-Type: application/json)")
    body = load_json(request.get_data(cache=True))
    if not isinstance(body, dict):
        raise bad("The body must be a JSON object")
    return body


def _query() -> dict[str, Any]:
    # Decoded strictly here: werkzeug's `request.args` keeps bytes that are not UTF-8 (a lone
    # surrogate's %ED%A0%80) as literal "%ED%A0%80" text, which would reach the model altered.
    try:
        pairs = parse_qsl(request.query_string.decode("latin-1"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise bad("The query string must be valid UTF-8 text") from None
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise bad(f"{key} is given more than once", key)
        out[key] = value
    return out


def _sse_response(feed: Feed, after_seq: int, slot: Slot, *, attached: bool = False) -> Response:
    """The event-stream response; its cursor owns `slot` (the client's place, `_open`) from here on."""
    cfg = settings()
    try:
        cursor = Cursor(
            feed,
            after_seq,
            heartbeat=cfg.heartbeat_seconds,
            max_write=cfg.max_write_bytes,
            attached=attached,
            slot=slot,
        )
        body = WsgiBody(cursor, client_socket=gunicorn.client_socket(request.environ), send_timeout=cfg.send_timeout)
        if cfg.direct_write:
            takeover.offer(request.environ, body, feed)
        return Response(body, status=200, headers=sse.HEADERS)
    except BaseException:
        slot.release()  # no body will close: give the place back (a second release is a no-op)
        raise


def _open() -> Slot:
    """A place for one more open response of this client, or 429 (SLUICE_MAX_RESPONSES_PER_CLIENT)."""
    return registry().open_response(client_key())


def _last_event_id() -> str | None:
    value = request.headers.get("Last-Event-ID")
    if value is None:
        value = request.args.get("last_event_id")
    return value if value else None


def _unknown_stream() -> RequestError:
    # A malformed id in a path names no resource: 404, like any unknown id.
    return RequestError(404, "No such stream (it never existed, or its replay has expired)", type="not_found")


RETRY_LATER_MS = 1000


def _cannot_tell() -> bool:
    """The shared backend cannot tell whether a stream not found here runs elsewhere (Redis down,
    or back and not yet resynced)."""
    backend = registry().backend
    return backend.shared and not backend.ready()[0]


def _come_back_later() -> Response | None:
    """For a stream not found while the shared backend cannot tell: it may well run elsewhere.
    204, 404 or 503 would make EventSource give up; an empty 200 makes it come back after
    `retry`. None when the backend can tell."""
    if _cannot_tell():
        return Response(sse.retry(RETRY_LATER_MS), headers=sse.HEADERS)
    return None


def _no_content() -> Response:
    # 204 tells EventSource to stop reconnecting.
    return Response(status=204, headers={"Cache-Control": "no-cache"})


def _resume(stream_id: str | None, seq: int, unknown: Callable[[], Response] = _no_content) -> Response:
    """Replay everything after `seq` and follow; 204 if unknown or the client has it all.

    A feed that cannot replay every event after `seq` (Redis trimmed some) is answered with
    `unknown()`, as for an unknown id: never a jump in seq.
    """
    feed = registry().feed(stream_id, principal()) if stream_id else None
    if feed is None:
        later = _come_back_later()
        return later if later is not None else unknown()
    ready = feed.wait_after(seq, 0)
    if feed.lost:
        return unknown()
    if feed.closed and not ready:
        return _no_content()
    return _sse_response(feed, seq, _open())


def _unknown_attach() -> Response:
    raise _unknown_stream()


def _resume_from_header() -> Response | None:
    """A request with Last-Event-ID never starts a generation (contract)."""
    value = _last_event_id()
    if value is None:
        return None
    parsed = parse_event_id(value)
    if parsed is None:
        return _no_content()
    return _resume(*parsed)


def _start(spec: GenerationSpec) -> Response:
    reg = registry()
    slot = _open()  # before the generation: a response refused here starts nothing
    try:
        if spec.stream_id is not None:
            feed = reg.feed(spec.stream_id, principal())
            if feed is not None:
                # The same client-chosen id again (a reload, a retried request): attach, never rerun.
                return _sse_response(feed, 0, slot)
        gen = reg.create(
            spec, owner=principal(), client=client_key(), attached=True, trace_headers=dict(request.headers)
        )
    except BaseException:
        slot.release()
        raise
    return _sse_response(gen.feed, 0, slot, attached=True)


@bp.get("/stream")
def stream_get() -> Response:
    """EventSource: start a generation from query parameters and stream it."""
    resumed = _resume_from_header()
    if resumed is not None:
        return resumed
    spec = parse_spec(_query(), settings(), text=True, extras=QUERY_EXTRAS)
    if request.method == "HEAD":
        # Flask answers HEAD with the GET view: the same checks, but no generation started (and
        # billed). A body-less iterable, so that no `Content-Length: 0` claims the GET's length.
        return Response(iter(()), status=200, headers=sse.HEADERS)
    return _start(spec)


@bp.post("/stream")
def stream_post() -> Response:
    """fetch + ReadableStream: start a generation from a JSON body and stream it."""
    resumed = _resume_from_header()
    if resumed is not None:
        return resumed
    return _start(parse_spec(_json_body(), settings()))


@bp.post("/streams")
def streams_create() -> tuple[Response, int, dict[str, str]]:
    """Create a generation without streaming it; the client attaches to `events_url`.

    A retried create with the same client-chosen `stream_id` gets the same generation (200),
    never a second one.
    """
    spec = parse_spec(_json_body(), settings())
    reg = registry()
    status = 201
    if spec.stream_id is not None and reg.feed(spec.stream_id, principal()) is not None:
        stream_id, status = spec.stream_id, 200
    else:
        gen = reg.create(spec, owner=principal(), client=client_key(), trace_headers=dict(request.headers))
        stream_id = gen.id
    body = {
        "stream_id": stream_id,
        "events_url": url_for("streams.stream_events", stream_id=stream_id),
        "cancel_url": url_for("streams.cancel"),
        "status_url": url_for("streams.stream_status", stream_id=stream_id),
    }
    return jsonify(body), status, {"Location": body["status_url"]}


@bp.get("/streams/<stream_id>/events")
def stream_events(stream_id: str) -> Response:
    """Attach to a generation, live or finished: replay from Last-Event-ID (or the start), follow."""
    seq = 0
    value = _last_event_id()
    if value is not None:
        parsed = parse_event_id(value)
        if parsed is None or parsed[0] != stream_id:
            return _no_content()
        seq = parsed[1]
    if not is_stream_id(stream_id):
        raise _unknown_stream()
    if registry().feed(stream_id, principal()) is None:
        later = _come_back_later()
        if later is not None:
            return later
        if value is not None:
            return _no_content()
        raise _unknown_stream()
    return _resume(stream_id, seq, _no_content if value is not None else _unknown_attach)


@bp.get("/streams/<stream_id>")
def stream_status(stream_id: str) -> Response:
    """JSON status of a generation."""
    status = registry().status(stream_id, principal()) if is_stream_id(stream_id) else None
    if status is None:
        if is_stream_id(stream_id) and _cannot_tell():
            # Not "no such stream": it may run on another worker. A script asks again.
            raise RequestError(503, "The shared backend cannot tell right now; try again in a moment",
                               type="overloaded", headers={"Retry-After": "1"})
        raise _unknown_stream()
    return jsonify(status)


@bp.post("/cancel")
def cancel() -> tuple[Response, int]:
    """Stop a generation wherever it runs; `stream_id` from JSON, a form field or the query."""
    named: list[object] = []
    if request.mimetype not in ("application/x-www-form-urlencoded", "multipart/form-data") and request.get_data():
        # JSON, also when sent as text/plain (a `fetch` or `sendBeacon` that avoids a preflight).
        body = load_json(request.get_data(cache=True))
        if not isinstance(body, dict):
            raise bad("The body must be a JSON object with stream_id")
        named.append(body.get("stream_id"))
    named += request.form.getlist("stream_id") + request.args.getlist("stream_id")
    # Every place that names an id must name the same, valid one: a malformed id is never a
    # reason to look elsewhere (and two different ids are not a cancel of either).
    ids = {check_stream_id(value) for value in named if value is not None}
    if not ids:
        raise bad("stream_id is required", "stream_id")
    if len(ids) > 1:
        raise bad("stream_id is given more than once, with different values", "stream_id")
    stream_id = ids.pop()
    status, body = registry().cancel(stream_id, principal())
    return jsonify(body), status
