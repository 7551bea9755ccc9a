"""Issue 9 under a real gunicorn -k gevent: no request freezes a worker, no client bloats it.

A reader far ahead of a generation, a reader that reads nothing, an answer larger than a
stream may hold, a JSON answer: each ends on time, within its documented bound in bytes.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, text_of, types, unread_get

pytestmark = pytest.mark.timeout(90)


def worker_pid(server: Gunicorn) -> int:
    """The one gunicorn worker of `server` (a child of its master)."""
    assert server.proc is not None
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_seq_beyond_a_running_generation_waits_then_ends(start_sluice: Callable[..., Gunicorn],
                                                            fresh: FakeUpstream) -> None:
    server = start_sluice()
    stream = open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=8 pace=0.05]"})
    stream.until("start")
    sid = stream.stream_id
    ahead = open_stream(f"{server.url}/streams/{sid}/events", headers={"Last-Event-ID": f"{sid}:99999"})
    assert ahead.response.status_code == 200, "a running generation: the response waits"
    assert types(stream.rest())[-2:] == ["done", "[DONE]"]
    t0 = time.monotonic()
    # Nothing will ever come after seq 99999: the response ends (no event), it does not spin.
    assert ahead.rest() == []
    assert time.monotonic() - t0 < 5
    t0 = time.monotonic()
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert time.monotonic() - t0 < 2, "the worker must still answer at once"
    # The browser reconnects with the same id: 204, it stops.
    again = requests.get(f"{server.url}/streams/{sid}/events", headers={"Last-Event-ID": f"{sid}:99999"}, timeout=5)
    assert again.status_code == 204


def read_raw_chunks(server: Gunicorn, path: str, limit_s: float = 30) -> list[int]:
    """GET `path` over a raw socket and return the size of each HTTP chunk of the body."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    raw = b""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        part = sock.recv(1 << 20)
        if not part:
            break
        raw += part
    sock.close()
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"200" in head.split(b"\r\n")[0], head
    sizes = []
    while body:
        line, body = body.split(b"\r\n", 1)
        size = int(line, 16)
        if size == 0:
            break
        sizes.append(size)
        body = body[size + 2 :]
    return sizes


def test_a_slow_reader_costs_at_most_the_stream_byte_cap(start_sluice: Callable[..., Gunicorn],
                                                         fresh: FakeUpstream) -> None:
    cap = 2 * 1024 * 1024
    server = start_sluice(SLUICE_MAX_STREAM_BYTES=str(cap), SLUICE_SEND_TIMEOUT="60")
    pid = worker_pid(server)
    requests.get(f"{server.url}/stream", params={"prompt": "warm [fake tokens=3]"}, timeout=10).close()
    before = rss_kib(pid)
    # 3000 fragments of 10 KB (30 MB) from a fast upstream, to a client that reads nothing.
    sock = unread_get(server.url, "/stream?max_tokens=4000&prompt=x+%5Bfake+tokens%3D3000+pad%3D10000%5D")
    try:
        assert fresh.wait_open(1, 5)
        assert fresh.wait_closed(30), "the generation must stop at the byte cap"
        grown_mb = (rss_kib(pid) - before) / 1024
        # The cap (2 MB) plus the SDK's buffers; without a cap it is 60 MB (each event kept twice).
        assert grown_mb < 25, f"the worker grew by {grown_mb:.0f} MB for one slow reader"
        stream_id = json.loads(sock.recv(65536).split(b"data: ", 1)[1].split(b"\n", 1)[0])["stream_id"]
    finally:
        sock.close()
    events = open_stream(f"{server.url}/streams/{stream_id}/events").rest()
    assert types(events)[-2:] == ["error", "[DONE]"]
    error = events[-2].json["error"]
    assert error["type"] == "internal" and error["retryable"] is False and "limit" in error["message"]
    sent = sum(len(e.data) for e in events)
    assert cap / 2 < sent <= cap, "the log holds up to the cap, and no more"
    assert requests.get(f"{server.url}/streams/{stream_id}", timeout=5).json()["state"] == "error"
    # A replay is written in bounded pieces (SLUICE_MAX_WRITE_BYTES), not as one 2 MB chunk.
    sizes = read_raw_chunks(server, f"/streams/{stream_id}/events")
    assert max(sizes) <= 64 * 1024 + 11000, max(sizes)
    assert sum(sizes) > cap / 2


def test_cancel_sends_coalesced_text_before_the_terminal_event(start_sluice: Callable[..., Gunicorn],
                                                               fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_COALESCE_MS="10000")
    stream = open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=50 stall_after=3]"})
    stream.until("start")
    sid = stream.stream_id
    deadline = time.monotonic() + 5
    while requests.get(f"{server.url}/streams/{sid}", timeout=5).json()["usage"]["output_tokens"] < 3:
        assert time.monotonic() < deadline, "the three tokens never arrived"
        time.sleep(0.05)
    resp = requests.post(f"{server.url}/cancel", json={"stream_id": sid}, timeout=5)
    assert resp.json()["status"] == "cancelled"
    events = stream.rest()
    assert types(events)[-2:] == ["cancelled", "[DONE]"]
    assert text_of(events) == "t0 t1 t2 ", "text held for coalescing is sent before the terminal event"


def grows(old: Any, new: Any) -> bool:
    """True when `new` extends `old`: strings by a suffix, lists and objects by more members."""
    if isinstance(old, str):
        return isinstance(new, str) and new.startswith(old)
    if isinstance(old, list):
        return (isinstance(new, list) and len(new) >= len(old)
                and all(grows(a, b) for a, b in zip(old, new, strict=False)))
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and grows(v, new[k]) for k, v in old.items())
    return bool(old == new)


def test_json_mode_sends_partial_values_that_only_grow_within_a_small_multiple(
    start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream
) -> None:
    server = start_sluice()
    body = {"prompt": "x [fake json=1 tokens=850]", "response_format": "json", "max_tokens": 4000}
    events = open_stream(f"{server.url}/stream", method="POST", json=body, timeout=30).rest()
    answer = text_of(events)
    assert len(answer) > 4000
    js = [e for e in events if e.type == "json"]
    final = js[-1].json
    assert final["complete"] is True and final["value"] == json.loads(answer)
    assert sum(1 for e in js if e.json["complete"]) == 1
    partial_bytes = sum(len(e.data) for e in js)
    # CONTRACT.md: "all json events together stay within ~5x the answer" (the envelopes included).
    assert partial_bytes < 5.5 * len(answer), f"{partial_bytes} bytes of json events for a {len(answer)} B answer"
    assert len(js) >= 3, "partial values are still sent while the answer grows"
    for old, new in zip(js, js[1:], strict=False):
        assert grows(old.json["value"], new.json["value"]), (old.data[:200], new.data[:200])
    assert types(events)[-2:] == ["done", "[DONE]"]


def test_json_mode_partial_numbers_never_shrink(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream) -> None:
    server = start_sluice()
    # `{"a": 1` then `{"a": 1.` then `{"a": 1.5`: a number is sent once it is complete.
    text = json.dumps({"a": 1.5, "b": [10, 20.25, 3e5], "c": "done " * 40})
    say = requests.utils.quote(text.replace(" ", ""), safe="")
    events = open_stream(f"{server.url}/stream", method="POST",
                         json={"prompt": f"x [fake say={say}]", "response_format": "json"}).rest()
    js = [e.json for e in events if e.type == "json"]
    for old, new in zip(js, js[1:], strict=False):
        assert grows(old["value"], new["value"]), (old, new)
    assert js[-1]["value"] == json.loads(text.replace(" ", ""))


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_json_mode_a_short_object_gets_several_partial_values(
    start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream, provider: str
) -> None:
    """Issue 20: a form filled field by field. The first partial comes as soon as there is a
    value, the next whenever it has grown by about a quarter; the text events carry every
    fragment of the JSON text itself."""
    server = start_sluice()
    text = '{"title": "Sluice", "tags": ["a", "b"], "score": 7}'
    say = requests.utils.quote(text, safe="")
    body = {"prompt": f"x [fake say={say} parts=15]", "response_format": "json", "provider": provider}
    events = open_stream(f"{server.url}/stream", method="POST", json=body).rest()
    assert types(events)[-2:] == ["done", "[DONE]"]
    assert text_of(events) == text, "the text events are the JSON text, fragment by fragment"
    assert sum(1 for e in events if e.type == "text") == 15
    js = [e.json for e in events if e.type == "json"]
    partial = [j["value"] for j in js if not j["complete"]]
    assert len(partial) >= 3, partial
    assert partial[0] and len(json.dumps(partial[0])) < len(text) / 2, "the first value comes early"
    for old, new in zip(partial, partial[1:], strict=False):
        assert grows(old, new) and old != new, (old, new)
    assert "score" not in partial[-1] or partial[-1]["score"] == 7
    assert js[-1] == {"type": "json", "value": json.loads(text), "complete": True}
    values = sum(len(json.dumps(j["value"], separators=(",", ":"))) for j in js)
    assert values <= 5 * len(text), "the values together stay within ~5x the answer"
