"""Black-box acceptance tests, written from CONTRACT.md and the issues only.

They drive Sluice over HTTP (and Chromium where the contract speaks of the page) with real
gunicorn in front of the wire-level fake upstream, and assert what a client would notice.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import Event, Stream, open_stream

ID_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")
TERMINAL = ("done", "error", "cancelled")


def expected(n: int) -> str:
    """The fake's answer of n tokens."""
    return "".join(f"t{i} " for i in range(n))


def post_stream(server: Gunicorn, body: dict[str, Any], timeout: float = 20.0, **kw: Any) -> Stream:
    """POST /stream with a JSON body, read as SSE."""
    return open_stream(server.url + "/stream", method="POST", json=body, timeout=timeout, **kw)


def get_stream(server: Gunicorn, timeout: float = 20.0, **params: Any) -> Stream:
    """GET /stream?prompt=... read as SSE."""
    return open_stream(server.url + "/stream", params=params, timeout=timeout)


def create(server: Gunicorn, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """POST /streams: a generation not streamed; its 201 JSON."""
    resp = requests.post(server.url + "/streams", json=body, timeout=10, **kw)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def attach(server: Gunicorn, stream_id: str, last: str | None = None, timeout: float = 20.0, **kw: Any) -> Stream:
    """GET /streams/<id>/events, optionally with a Last-Event-ID."""
    headers = dict(kw.pop("headers", {}))
    if last is not None:
        headers["Last-Event-ID"] = last
    return open_stream(f"{server.url}/streams/{stream_id}/events", headers=headers, timeout=timeout, **kw)


def cancel(server: Gunicorn, stream_id: str, **kw: Any) -> requests.Response:
    return requests.post(server.url + "/cancel", json={"stream_id": stream_id}, timeout=10, **kw)


def check_well_formed(events: list[Event], stream_id: str | None = None) -> list[Event]:
    """The contract's framing: ids `<stream_id>:<seq>` gapless from 1, unnamed events, `start`
    first, exactly one terminal event, then `data: [DONE]` last. Returns the events."""
    assert events, "no event at all"
    sid = stream_id or events[0].id.rsplit(":", 1)[0]
    assert len(sid) >= 16 and ID_CHARS.match(sid), sid
    for i, ev in enumerate(events, start=1):
        assert ev.event == "message", f"events are unnamed: {ev.event!r}"
        assert ev.id == f"{sid}:{i}", f"event {i} has id {ev.id!r}: {[e.id for e in events]}"
    kinds = [e.type for e in events]
    assert kinds[0] == "start", kinds
    assert kinds[-1] == "[DONE]", kinds
    terminals = [k for k in kinds if k in TERMINAL]
    assert len(terminals) == 1 and kinds[-2] in TERMINAL, kinds
    return events


def kinds(events: list[Event]) -> list[str]:
    return [e.type for e in events]


def of(events: list[Event], kind: str) -> list[dict[str, Any]]:
    """The JSON of every event of this type."""
    return [e.json for e in events if e.data != "[DONE]" and e.json.get("type") == kind]


def text(events: list[Event]) -> str:
    return "".join(d["content"] for d in of(events, "text"))


def reasoning(events: list[Event]) -> str:
    return "".join(d["content"] for d in of(events, "reasoning"))


def terminal(events: list[Event]) -> dict[str, Any]:
    found = [e.json for e in events if e.data != "[DONE]" and e.json.get("type") in TERMINAL]
    assert len(found) == 1, [e.data for e in events]
    return found[0]


def assert_rejected(resp: requests.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """A plain JSON error before any stream: the status, `{"error": {"type", "message"}}`."""
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    assert "text/event-stream" not in resp.headers.get("Content-Type", "")
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    err = resp.json()["error"]
    assert isinstance(err.get("type"), str) and isinstance(err.get("message"), str) and err["message"], err
    if status == 400:
        assert err["type"] == "invalid_request", err
    if field is not None:
        assert err.get("field") == field, err
    return dict(err)


def no_upstream_call(fake: FakeUpstream, settle: float = 0.3, marker: str | None = None) -> None:
    """Nothing reached the provider (checked again a moment later: a call could be async).

    With `marker`, only calls carrying it count: a generation wrongly started by an earlier
    test may reach the fake late, and must not fail this one."""

    def calls() -> list[Any]:
        found = [r.json for r in fake.requests]
        return [c for c in found if marker in json.dumps(c)] if marker else found

    assert not calls(), calls()
    time.sleep(settle)
    assert not calls(), calls()


def rest_within(stream: Stream, seconds: float) -> list[Event]:
    """Read a stream to its end, failing if that takes longer than `seconds` (heartbeats keep
    a hung stream's reads alive, so a read timeout alone would never fire)."""
    deadline = time.monotonic() + seconds
    for chunk in stream._iter:  # raw chunks, so that a `: ping` wakes this loop too
        stream.events.extend(stream.parser.feed(chunk))
        if time.monotonic() > deadline:
            stream.close()
            raise AssertionError(f"the stream did not end within {seconds}s: {[e.data for e in stream.events]}")
    return stream.events


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s")
        time.sleep(every)


def status_of(server: Gunicorn, stream_id: str, **kw: Any) -> requests.Response:
    return requests.get(f"{server.url}/streams/{stream_id}", timeout=10, **kw)


def log_lines(server: Gunicorn) -> list[dict[str, Any]]:
    """Every JSON object logged by the server (one per line)."""
    out = []
    for line in server.log().splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            value = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
