"""Lifecycle under a real gunicorn -k gevent: cancel, disconnect, reconnect, timeouts, shutdown.

Every test checks what the user (and the bill) would notice: the terminal event the client
gets, and whether the fake upstream saw its connection closed.
"""

from __future__ import annotations

import secrets
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, text_of, types, unread_get

pytestmark = pytest.mark.timeout(60)


def new_id() -> str:
    return secrets.token_urlsafe(16)


def cancel(server: Gunicorn, stream_id: str, how: str = "json") -> requests.Response:
    if how == "json":
        return requests.post(f"{server.url}/cancel", json={"stream_id": stream_id}, timeout=5)
    if how == "form":
        return requests.post(f"{server.url}/cancel", data={"stream_id": stream_id}, timeout=5)
    return requests.post(f"{server.url}/cancel", params={"stream_id": stream_id}, timeout=5)


@pytest.mark.parametrize("how", ["json", "form", "query"])
def test_cancel_during_a_stall_closes_the_upstream(sluice: Gunicorn, fresh: FakeUpstream, how: str) -> None:
    stream = open_stream(f"{sluice.url}/stream", params={"prompt": "x [fake tokens=50 stall_after=2]"})
    stream.until(lambda e: e.type == "text" and e.json["content"] == "t1 ")
    assert fresh.wait_open(1, 2)
    t0 = time.monotonic()
    resp = cancel(sluice, stream.stream_id, how)
    assert resp.status_code == 200 and resp.json() == {"stream_id": stream.stream_id, "status": "cancelled"}
    rest = stream.rest()
    assert time.monotonic() - t0 < 2
    assert types(rest)[-2:] == ["cancelled", "[DONE]"]
    end = rest[-2].json
    assert end["reason"] == "user"
    # Input from the provider's first event; output counted, marked estimated.
    assert end["usage"]["input_tokens"] == 4 and end["usage"]["output_tokens"] == 2
    assert end["usage"]["estimated"] is True
    assert fresh.wait_closed(1), "the upstream connection must be closed by the cancel"


def test_cancel_before_the_first_token(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    stream = open_stream(f"{sluice.url}/stream", params={"prompt": "x [fake first_delay=30]"})
    stream.until("start")
    assert fresh.wait_open(1, 2)
    assert cancel(sluice, stream.stream_id).json()["status"] == "cancelled"
    assert types(stream.rest()) == ["start", "cancelled", "[DONE]"]
    assert fresh.wait_closed(1)


def test_cancel_during_fast_streaming(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    stream = open_stream(f"{sluice.url}/stream", params={"prompt": "x [fake tokens=3000 pace=0.002]"})
    stream.until(lambda e: e.type == "text" and e.json["content"] == "t20 ")
    cancel(sluice, stream.stream_id)
    events = stream.rest()
    assert types(events)[-2:] == ["cancelled", "[DONE]"]
    assert sum(1 for e in events if e.type in ("done", "error", "cancelled")) == 1
    text = text_of(events)
    assert text == "".join(f"t{i} " for i in range(len(text.split())))  # in order, no gap
    assert fresh.wait_closed(1)


def test_cancel_before_start_is_remembered(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    stream_id = new_id()
    resp = cancel(sluice, stream_id)
    assert resp.status_code == 202 and resp.json()["status"] == "pending"
    events = open_stream(f"{sluice.url}/stream", params={"prompt": "x", "stream_id": stream_id}).rest()
    assert types(events) == ["start", "cancelled", "[DONE]"]
    assert events[1].json["reason"] == "user"
    assert fresh.request_count == 0, "a tombstoned id must make no upstream call"


def test_cancel_twice_and_after_the_end(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    stream = open_stream(f"{sluice.url}/stream", params={"prompt": "x [fake stall_after=1]"})
    stream.until("text")
    assert cancel(sluice, stream.stream_id).json()["status"] == "cancelled"
    again = cancel(sluice, stream.stream_id)
    assert again.status_code == 200 and again.json()["status"] == "finished"
    stream.rest()
    done = open_stream(f"{sluice.url}/stream", params={"prompt": "x [fake tokens=2]"})
    done.rest()
    resp = cancel(sluice, done.stream_id)
    assert resp.status_code == 200 and resp.json()["status"] == "finished"
    status = requests.get(f"{sluice.url}/streams/{done.stream_id}", timeout=5).json()
    assert status["state"] == "done"


@pytest.mark.parametrize("bad", ["short", "x" * 65, "has spaces in it here", "semi;colon;injection!!", ""])
def test_cancel_with_a_malformed_id_is_400(sluice: Gunicorn, bad: str) -> None:
    resp = requests.post(f"{sluice.url}/cancel", json={"stream_id": bad}, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request"
    assert requests.post(f"{sluice.url}/cancel", json={}, timeout=5).status_code == 400
    assert requests.post(f"{sluice.url}/cancel", json={"stream_id": 12345678901234567}, timeout=5).status_code == 400


def raw_get(server: Gunicorn, path: str) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


def test_client_closing_the_socket_closes_the_upstream(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    stream_id = new_id()
    sock = raw_get(sluice, f"/stream?prompt=x+%5Bfake+stall_after%3D1%5D&stream_id={stream_id}")
    seen = b""
    while b"t0 " not in seen:  # the first text event (socket timeout: 5 s)
        chunk = sock.recv(65536)
        assert chunk, f"the stream ended before its first text event: {seen!r}"
        seen += chunk
    assert fresh.wait_open(1, 2)
    t0 = time.monotonic()
    sock.close()
    # SLUICE_DISCONNECT_GRACE_SECONDS=1 in these tests: closed within grace + 1 s.
    assert fresh.wait_closed(2.0), "the upstream must be closed after the grace period"
    assert time.monotonic() - t0 > 0.8, "not before the grace period"
    status = requests.get(f"{sluice.url}/streams/{stream_id}", timeout=5).json()
    assert status["state"] == "cancelled"


def test_a_reconnect_within_the_grace_keeps_the_generation(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    stream = open_stream(f"{sluice.url}/stream", params={"prompt": "x [fake tokens=30 pace=0.05]"})
    stream.until(lambda e: e.type == "text" and e.json["content"] == "t4 ")
    last = stream.events[-1].id
    stream.close()
    time.sleep(0.3)
    resumed = open_stream(f"{sluice.url}/stream", params={"prompt": "ignored"}, headers={"Last-Event-ID": last})
    events = resumed.rest()
    assert events[0].seq == stream.events[-1].seq + 1, "replay starts right after the last event seen"
    seqs = [e.seq for e in stream.events + events]
    assert seqs == list(range(1, len(seqs) + 1)), "no gap, no duplicate"
    assert text_of(stream.events + events) == "".join(f"t{i} " for i in range(30))
    assert types(events)[-2:] == ["done", "[DONE]"]
    assert fresh.request_count == 1, "a reconnect never starts a second generation"


def test_reconnect_after_the_end_or_for_an_unknown_stream_is_204(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    stream = open_stream(f"{sluice.url}/stream", params={"prompt": "x [fake tokens=2]"})
    events = stream.rest()
    for path in ("/stream?prompt=x", f"/streams/{stream.stream_id}/events"):
        resp = requests.get(sluice.url + path, headers={"Last-Event-ID": events[-1].id}, timeout=5)
        assert resp.status_code == 204
    for value in (f"{new_id()}:3", "garbage", f"{stream.stream_id}:notanumber"):
        resp = requests.get(f"{sluice.url}/stream?prompt=x", headers={"Last-Event-ID": value}, timeout=5)
        assert resp.status_code == 204
    # A client that missed the end gets just that.
    tail = open_stream(f"{sluice.url}/stream?prompt=x", headers={"Last-Event-ID": events[-3].id}).rest()
    assert types(tail) == ["done", "[DONE]"]
    assert fresh.request_count == 1


def test_post_streams_then_two_subscribers_get_every_event(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    resp = requests.post(f"{sluice.url}/streams", json={"prompt": "x [fake tokens=20 pace=0.03]"}, timeout=5)
    assert resp.status_code == 201
    created = resp.json()
    assert set(created) == {"stream_id", "events_url", "cancel_url", "status_url"}
    sid = created["stream_id"]
    assert created["events_url"] == f"/streams/{sid}/events" and created["status_url"] == f"/streams/{sid}"

    def follow(_: int) -> list[str]:
        return [e.data for e in open_stream(sluice.url + created["events_url"]).rest()]

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(follow, range(2))
    assert a == b and a[-1] == "[DONE]" and len(a) == 23
    status = requests.get(sluice.url + created["status_url"], timeout=5).json()
    assert status["state"] == "done" and status["stop_reason"] == "end_turn" and status["events"] == 23
    assert status["usage"]["output_tokens"] == 20
    assert set(status) >= {"stream_id", "state", "provider", "model", "created_at", "events", "usage", "stop_reason"}
    assert fresh.request_count == 1


def test_status_while_running(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    stream = open_stream(f"{sluice.url}/stream", params={"prompt": "x [fake stall_after=3]"})
    stream.until(lambda e: e.type == "text" and e.json["content"] == "t2 ")
    status = requests.get(f"{sluice.url}/streams/{stream.stream_id}", timeout=5).json()
    assert status["state"] == "running" and status["events"] == 4 and status["provider"] == "anthropic"
    cancel(sluice, stream.stream_id)
    stream.rest()
    assert requests.get(f"{sluice.url}/streams/{stream.stream_id}", timeout=5).json()["state"] == "cancelled"


@pytest.mark.parametrize(
    ("env", "directive", "words"),
    [
        ({"SLUICE_FIRST_TOKEN_TIMEOUT": "1"}, "first_delay=10", "first token"),
        ({"SLUICE_IDLE_TIMEOUT": "1"}, "stall_after=3", "silent"),
        ({"SLUICE_MAX_DURATION": "1.5"}, "tokens=1000 pace=0.05", "too long"),
    ],
)
def test_timeouts_end_with_a_timeout_error_and_close_the_upstream(
    start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream, env: dict[str, str], directive: str, words: str
) -> None:
    server = start_sluice(**env)
    t0 = time.monotonic()
    events = open_stream(f"{server.url}/stream", params={"prompt": f"x [fake {directive}]"}).rest()
    assert time.monotonic() - t0 < 5
    assert types(events)[-2:] == ["error", "[DONE]"]
    error = events[-2].json["error"]
    assert error["type"] == "timeout" and error["retryable"] is True and words in error["message"]
    assert fresh.wait_closed(1)


def test_heartbeats_while_the_model_is_silent(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_HEARTBEAT_SECONDS="0.3")
    stream = open_stream(f"{server.url}/stream", params={"prompt": "x [fake stall_after=1]"})
    stream.until("text")
    time.sleep(1.2)
    cancel(server, stream.stream_id)
    stream.rest()
    assert stream.parser.comments.count("ping") >= 2


def test_sigterm_ends_every_stream_with_a_terminal_event(
    start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream
) -> None:
    server = start_sluice(SLUICE_SHUTDOWN_GRACE_SECONDS="1.5")
    stalled = [open_stream(f"{server.url}/stream", params={"prompt": f"s{i} [fake stall_after=1]"}) for i in range(4)]
    quick = open_stream(f"{server.url}/stream", params={"prompt": "q [fake tokens=10 pace=0.1]"})
    for s in stalled:
        s.until("text")
    quick.until("text")
    t0 = time.monotonic()
    server.signal(signal.SIGTERM)
    for s in stalled:
        events = s.rest()
        assert types(events)[-2:] == ["cancelled", "[DONE]"]
        assert events[-2].json["reason"] == "shutdown"
    q = quick.rest()
    assert types(q)[-2:] == ["done", "[DONE]"], "a stream that can finish within the grace finishes"
    assert time.monotonic() - t0 < 6
    assert fresh.wait_closed(2)
    assert server.proc is not None and server.proc.wait(10) == 0


def test_same_client_chosen_id_attaches_instead_of_starting_again(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    stream_id = new_id()
    params = {"prompt": "x [fake tokens=10 pace=0.05]", "stream_id": stream_id}
    first = open_stream(f"{sluice.url}/stream", params=params)
    first.until("text")
    second = open_stream(f"{sluice.url}/stream", params=params)
    a, b = first.rest(), second.rest()
    assert [e.data for e in a] == [e.data for e in b]
    assert fresh.request_count == 1


def test_raw_wire_bytes_start_at_once(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    sock = raw_get(sluice, "/stream?prompt=x+%5Bfake+first_delay%3D2%5D")
    t0 = time.monotonic()
    received = b""
    while b'"type":"start"' not in received and time.monotonic() - t0 < 1.5:
        received += sock.recv(65536)
    assert time.monotonic() - t0 < 0.5, "headers and the start event must not wait for the first token"
    sock.close()
    assert received.startswith(b"HTTP/1.1 200")
    head, body = received.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head.lower() and b"content-length" not in head.lower()
    # The first chunk carries retry and the start event together.
    assert b"retry: 3000\nid: " in body and b'"type":"start"' in body


def test_cancel_body_sent_as_text_plain(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    stream = open_stream(f"{sluice.url}/stream", params={"prompt": "x [fake stall_after=1]"})
    stream.until("text")
    resp = requests.post(f"{sluice.url}/cancel", data=f'{{"stream_id": "{stream.stream_id}"}}',
                         headers={"Content-Type": "text/plain"}, timeout=5)
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert types(stream.rest())[-2:] == ["cancelled", "[DONE]"]
    assert requests.post(f"{sluice.url}/cancel", data="not json", headers={"Content-Type": "text/plain"},
                         timeout=5).status_code == 400


def test_a_client_that_stops_reading_is_dropped(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream) -> None:
    import os

    send_timeout = os.environ.get("SLUICE_TEST_SEND_TIMEOUT", "1")  # set it high to see this test fail
    # The byte bound is set out of the way: this test is about the send timeout alone.
    server = start_sluice(SLUICE_SEND_TIMEOUT=send_timeout, SLUICE_DISCONNECT_GRACE_SECONDS="0.5",
                          SLUICE_MAX_TOKENS="100000", SLUICE_MAX_STREAM_BYTES=str(1 << 30))
    # ~6 MB of events (600 fragments of 10 KB: quick to produce), more than the socket buffers
    # hold, then an upstream that stays open.
    prompt = "x+%5Bfake+tokens%3D700+pad%3D10000+stall_after%3D600%5D"
    sock = unread_get(server.url, f"/stream?max_tokens=1000&prompt={prompt}")
    assert fresh.wait_open(1, 3)
    # Never read: the server's writes block, time out, and the generation is cancelled.
    try:
        assert fresh.wait_closed(20), "a client that stopped reading must not keep the model running"
    finally:
        sock.close()


def test_finished_generations_expire_after_the_replay_ttl(start_sluice: Callable[..., Gunicorn],
                                                          fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_REPLAY_TTL_SECONDS="1")
    stream = open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=2]"})
    events = stream.rest()
    assert requests.get(f"{server.url}/streams/{stream.stream_id}", timeout=5).status_code == 200
    time.sleep(1.5)
    assert requests.get(f"{server.url}/streams/{stream.stream_id}", timeout=5).status_code == 404
    resp = requests.get(f"{server.url}/stream?prompt=x", headers={"Last-Event-ID": events[1].id}, timeout=5)
    assert resp.status_code == 204
