"""Streams written from the event loop (app.delivery.takeover), under a real gunicorn -k gevent.

What the client sees of that path: `Connection: close` on a stream response (gunicorn would say
keep-alive), the same chunked framing and every header Flask set, and the connection closed
after the last chunk. The
rest of tests/server (cancel, disconnect, resume, slow readers, shutdown) runs on this path
too, since it is the default; `SLUICE_TEST_DIRECT_WRITE=0` runs those on the fallback instead.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.deploy.conftest import GUNICORN_CONF
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import dechunk, open_stream, types, unread_get
from tests.support.wait import wait_for

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(os.environ.get("SLUICE_TEST_DIRECT_WRITE") == "0", reason="the fallback is asked for"),
]


def request(server: Gunicorn, head: str, body: bytes = b"") -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head.encode() + b"\r\n" + body)
    return sock


def read_to_eof(sock: socket.socket, limit: float = 20) -> tuple[bytes, bytes]:
    """The response head and body, read until the server closes the connection."""
    data = b""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    else:
        raise AssertionError("the server did not close the connection")
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def event_types(body: bytes) -> list[str]:
    out = []
    for data in re.findall(rb"^data: (.*)$", body, re.M):
        out.append("[DONE]" if data == b"[DONE]" else json.loads(data)["type"])
    return out


def assert_direct(head: bytes) -> None:
    lower = head.lower()
    assert lower.startswith(b"http/1.1 200 ok\r\n")
    assert b"\r\nconnection: close" in lower and b"\r\ntransfer-encoding: chunked" in lower
    assert b"content-length" not in lower
    # What Flask and the app's hooks set is all there.
    for header in (b"content-type: text/event-stream", b"cache-control: no-cache", b"x-accel-buffering: no",
                   b"\r\ndate: "):
        assert header in lower, header


def test_get_stream_is_written_directly(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    sock = request(sluice, "GET /stream?prompt=x+%5Bfake+tokens%3D5%5D HTTP/1.1\r\nHost: localhost\r\n")
    head, body = read_to_eof(sock)
    assert_direct(head)
    payload = dechunk(body)
    assert payload.startswith(b"retry: 3000\nid: ")
    assert event_types(payload) == ["start"] + ["text"] * 5 + ["done", "[DONE]"]
    assert payload.endswith(b"data: [DONE]\n\n")


def test_post_stream_and_resume_are_written_directly(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    payload = json.dumps({"prompt": "x [fake tokens=4]"}).encode()
    sock = request(sluice, "POST /stream HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(payload)}\r\n", payload)
    head, chunked = read_to_eof(sock)
    assert_direct(head)
    body = dechunk(chunked)
    assert event_types(body) == ["start"] + ["text"] * 4 + ["done", "[DONE]"]
    first_id = re.search(rb"^id: (\S+)$", body, re.M)
    assert first_id is not None
    stream_id = first_id.group(1).decode().rpartition(":")[0]
    # The resume route: everything after event 2, replayed from the journal.
    sock = request(sluice, f"GET /streams/{stream_id}/events HTTP/1.1\r\nHost: localhost\r\n"
                           f"Last-Event-ID: {stream_id}:2\r\n")
    head, replay = read_to_eof(sock)
    assert_direct(head)
    assert event_types(dechunk(replay)) == ["text"] * 3 + ["done", "[DONE]"]


def test_errors_keep_gunicorns_framing(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    resp = requests.get(f"{sluice.url}/stream", params={"prompt": "x", "max_tokens": "-1"}, timeout=5)
    assert resp.status_code == 400 and resp.headers.get("Connection") != "close"
    assert fresh.request_count == 0


def test_fallback_when_turned_off(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_DIRECT_WRITE="0")
    sock = request(server, "GET /stream?prompt=x+%5Bfake+tokens%3D3%5D HTTP/1.1\r\nHost: localhost\r\n"
                           "Connection: close\r\n")
    head, body = read_to_eof(sock)
    # gunicorn writes it: its own Connection header follows the request's.
    assert b"transfer-encoding: chunked" in head.lower()
    assert event_types(dechunk(body)) == ["start"] + ["text"] * 3 + ["done", "[DONE]"]
    resp = requests.get(f"{server.url}/stream", params={"prompt": "x [fake tokens=1]"}, stream=True, timeout=5)
    assert resp.headers["Connection"] == "keep-alive"
    resp.close()


def active_subscribers(server: Gunicorn) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    match = re.search(r"^sluice_active_subscribers (\S+)$", text, re.M)
    assert match is not None
    return float(match.group(1))


def test_a_client_that_stops_reading_is_cut_after_the_send_timeout(
    start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream
) -> None:
    # A long disconnect grace: the generation goes on, only this response is cut.
    server = start_sluice(SLUICE_SEND_TIMEOUT="1", SLUICE_DISCONNECT_GRACE_SECONDS="30", SLUICE_MAX_TOKENS="100000",
                          SLUICE_MAX_STREAM_BYTES=str(1 << 30))
    # ~6 MB of events, more than the socket buffers hold, then an upstream that stays open.
    prompt = "x+%5Bfake+tokens%3D700+pad%3D10000+stall_after%3D600%5D"
    sock = unread_get(server.url, f"/stream?max_tokens=1000&prompt={prompt}")
    try:
        assert fresh.wait_open(1, 3)
        assert wait_for(lambda: active_subscribers(server) == 1, 5)
        t0 = time.monotonic()
        assert wait_for(lambda: active_subscribers(server) == 0, 15), "a client that stopped reading is cut"
        assert time.monotonic() - t0 < 12
        # What it gets when it reads again: what had been written, then the end of the connection.
        sock.settimeout(5)
        received = b""
        while piece := sock.recv(1 << 20):
            received += piece
        assert b"data: [DONE]" not in received and not received.endswith(b"\r\n0\r\n\r\n")
        # Bounded: the socket buffers and at most one write of SLUICE_MAX_WRITE_BYTES, not the journal.
        assert len(received) < 3 * 1024 * 1024
    finally:
        sock.close()
    # The generation itself goes on (within its disconnect grace): the client can resume.
    status = requests.get(f"{server.url}/streams/{open_id(received)}", timeout=5).json()
    assert status["state"] == "running"


def open_id(body: bytes) -> str:
    match = re.search(rb"^id: (\S+):\d+$", body, re.M)
    assert match is not None
    return match.group(1).decode()


def test_cancel_ends_a_direct_stream_with_one_terminal_event(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    stream = open_stream(f"{sluice.url}/stream", params={"prompt": "x [fake tokens=3000 pace=0.002]"})
    assert stream.response.headers.get("Connection") == "close"
    stream.until(lambda e: e.type == "text" and e.json["content"] == "t20 ")
    requests.post(f"{sluice.url}/cancel", json={"stream_id": stream.stream_id}, timeout=5)
    events = stream.rest()
    assert types(events)[-2:] == ["cancelled", "[DONE]"]
    assert sum(1 for e in events if e.type in ("done", "error", "cancelled")) == 1
    assert fresh.wait_closed(1)


def test_a_closed_connection_is_noticed_and_the_upstream_closed(
    start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream
) -> None:
    server = start_sluice(SLUICE_DISCONNECT_GRACE_SECONDS="0.5")
    sock = request(server, "GET /stream?prompt=x+%5Bfake+stall_after%3D1%5D HTTP/1.1\r\nHost: localhost\r\n")
    received = b""
    while b'"type":"text"' not in received:
        received += sock.recv(65536)
    assert b"connection: close" in received.lower()
    assert fresh.wait_open(1, 2)
    sock.close()
    assert fresh.wait_closed(3), "the upstream is closed once the grace after the disconnect is over"
    assert wait_for(lambda: active_subscribers(server) == 0, 2)


@pytest.mark.parametrize("config", [None, GUNICORN_CONF], ids=["plain-gevent-worker", "worker-class"])
def test_the_access_log_has_one_line_per_direct_stream(upstream: FakeUpstream, fresh: FakeUpstream,
                                                       config: Path | None) -> None:
    from tests.conftest import sluice_env

    # gunicorn logs no request it was told is handled: the app writes the line at the stream's end.
    # Under plain `-k gevent` the app closes gunicorn's side through its internals; with the
    # config's worker class, through its is_already_handled (app.seams.gunicorn).
    with Gunicorn(sluice_env(upstream), config=config, args=("--access-logfile", "-")) as server:
        sock = request(server, "GET /stream?prompt=x+%5Bfake+tokens%3D2%5D HTTP/1.1\r\nHost: localhost\r\n"
                               "User-Agent: direct-test\r\n")
        head, _ = read_to_eof(sock)
        assert_direct(head)
        assert wait_for(lambda: '"GET /stream' in server.log(), 5)
        lines = [line for line in server.log().splitlines() if '"GET /stream' in line]  # the config logs no query
        assert len(lines) == 1 and " 200 " in lines[0] and "direct-test" in lines[0]
        assert ("Sluice's worker class" in server.log()) == (config is not None)


def test_past_worker_connections_direct_streams_a_stream_takes_the_ordinary_path(
    upstream: FakeUpstream, fresh: FakeUpstream
) -> None:
    from tests.conftest import sluice_env

    with Gunicorn(sluice_env(upstream), args=("--worker-connections", "3")) as server:
        socks = [request(server, "GET /stream?prompt=x+%5Bfake+stall_after%3D1%5D HTTP/1.1\r\nHost: localhost\r\n")
                 for _ in range(4)]
        heads = []
        for sock in socks:
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
            heads.append(received.partition(b"\r\n\r\n")[0].lower())
        closing = [b"\r\nconnection: close" in head for head in heads]
        assert sorted(closing) == [False, True, True, True], heads
        assert active_subscribers(server) == 4
        for sock in socks:
            sock.close()


def test_an_http_1_0_client_gets_a_body_that_ends_with_the_connection(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    sock = request(sluice, "GET /stream?prompt=x+%5Bfake+tokens%3D2%5D HTTP/1.0\r\nHost: localhost\r\n")
    head, body = read_to_eof(sock)
    lower = head.lower()
    assert lower.startswith(b"http/1.0 200 ok\r\n") and b"\r\nconnection: close" in lower
    assert b"transfer-encoding" not in lower
    assert event_types(body) == ["start", "text", "text", "done", "[DONE]"]
    assert body.endswith(b"data: [DONE]\n\n")
