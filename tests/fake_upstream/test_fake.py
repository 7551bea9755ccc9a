"""The fake itself, at the byte level (no SDK): framing, flushing, auth, directives, introspection."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fake_upstream import FakeUpstream, Script

pytestmark = pytest.mark.timeout(30)

A_HEADERS = {"x-api-key": "k-secret", "anthropic-version": "2023-06-01"}
O_HEADERS = {"Authorization": "Bearer sk-secret"}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake: FakeUpstream) -> None:
    assert fake.wait_closed(5)
    fake.reset()


def anthropic_body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-x",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


def openai_body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-x", "stream": True, "messages": [{"role": "user", "content": prompt}], **extra}


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event."""
    out = []
    for block in text.strip().split("\n\n"):
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        out.append((name, "\n".join(data)))
    return out


def test_anthropic_stream_shape(fake: FakeUpstream) -> None:
    resp = requests.post(
        fake.url + "/v1/messages", json=anthropic_body("a b c [fake tokens=3]"), headers=A_HEADERS, timeout=5
    )
    assert resp.status_code == 200
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert "Content-Length" not in resp.headers and resp.headers["request-id"].startswith("req_")
    events = sse_events(resp.text)
    names = [n for n, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for name, data in events:
        assert json.loads(data)["type"] == name
    start = json.loads(events[0][1])["message"]
    assert start["id"].startswith("msg_") and start["model"] == "claude-x"
    assert start["usage"]["input_tokens"] == 5  # words, directive included
    assert [json.loads(d)["delta"]["text"] for n, d in events if n == "content_block_delta"] == ["t0 ", "t1 ", "t2 "]
    delta = json.loads(events[-2][1])
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] == 3


def test_anthropic_tool_use_shape(fake: FakeUpstream) -> None:
    body = anthropic_body('x [fake tool=get_time args={"timezone":"Europe/Paris"}]')
    events = sse_events(requests.post(fake.url + "/v1/messages", json=body, headers=A_HEADERS, timeout=5).text)
    block = json.loads(events[1][1])["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "get_time" and block["id"].startswith("toolu_")
    pieces = [json.loads(d)["delta"] for n, d in events if n == "content_block_delta"]
    assert all(p["type"] == "input_json_delta" for p in pieces) and len(pieces) > 1
    assert json.loads("".join(p["partial_json"] for p in pieces)) == {"timezone": "Europe/Paris"}
    assert json.loads(events[-2][1])["delta"]["stop_reason"] == "tool_use"


def test_openai_stream_shape(fake: FakeUpstream) -> None:
    body = openai_body("a b [fake tokens=2]", stream_options={"include_usage": True})
    resp = requests.post(fake.url + "/v1/chat/completions", json=body, headers=O_HEADERS, timeout=5)
    assert resp.headers["Transfer-Encoding"] == "chunked"
    events = sse_events(resp.text)
    assert all(name is None for name, _ in events)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["t0 ", "t1 "]
    assert chunks[3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[4]["choices"] == [] and chunks[4]["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 2,
        "total_tokens": 6,
        # As OpenAI sends them (compatible servers often leave them out).
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def test_openai_without_include_usage_has_no_usage_chunk(fake: FakeUpstream) -> None:
    resp = requests.post(
        fake.url + "/v1/chat/completions", json=openai_body("[fake tokens=1]"), headers=O_HEADERS, timeout=5
    )
    chunks = [json.loads(d) for _, d in sse_events(resp.text)[:-1]]
    assert all(c["choices"] for c in chunks) and all("usage" not in c for c in chunks)


def test_openai_tool_call_and_length(fake: FakeUpstream) -> None:
    body = openai_body('x [fake tool=calculate args={"expression":"1+2"}]')
    chunks = [
        json.loads(d)
        for _, d in sse_events(
            requests.post(fake.url + "/v1/chat/completions", json=body, headers=O_HEADERS, timeout=5).text
        )[:-1]
    ]
    first = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["index"] == 0 and first["id"].startswith("call_") and first["function"]["name"] == "calculate"
    args = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-1])
    assert json.loads(args) == {"expression": "1+2"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    body = openai_body("x [fake tokens=9]", max_completion_tokens=4)
    chunks = [
        json.loads(d)
        for _, d in sse_events(
            requests.post(fake.url + "/v1/chat/completions", json=body, headers=O_HEADERS, timeout=5).text
        )[:-1]
    ]
    assert len([c for c in chunks if c["choices"][0]["delta"].get("content")]) == 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("path", "headers", "status", "fragment"),
    [
        ("/v1/messages", {}, 401, "authentication_error"),
        ("/v1/messages", {"x-api-key": "k"}, 400, "anthropic-version"),
        ("/v1/messages", {"Authorization": "Bearer k", "anthropic-version": "2023-06-01"}, 200, "message_start"),
        ("/v1/chat/completions", {}, 401, "API key"),
        ("/v1/chat/completions", {"x-api-key": "k"}, 401, "API key"),
    ],
)
def test_auth_checks(fake: FakeUpstream, path: str, headers: dict[str, str], status: int, fragment: str) -> None:
    resp = requests.post(fake.url + path, json=anthropic_body("[fake tokens=1]"), headers=headers, timeout=5)
    assert resp.status_code == status
    assert fragment in resp.text


def test_status_bodies_are_the_providers(fake: FakeUpstream) -> None:
    resp = requests.post(
        fake.url + "/v1/messages", json=anthropic_body("[fake status=429]"), headers=A_HEADERS, timeout=5
    )
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "rate_limit_error"
    resp = requests.post(
        fake.url + "/v1/messages", json=anthropic_body("[fake status=529]"), headers=A_HEADERS, timeout=5
    )
    assert resp.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    resp = requests.post(
        fake.url + "/v1/chat/completions", json=openai_body("[fake status=503]"), headers=O_HEADERS, timeout=5
    )
    assert resp.status_code == 503 and set(resp.json()["error"]) == {"message", "type", "param", "code"}


def test_midstream_error_events(fake: FakeUpstream) -> None:
    text = requests.post(
        fake.url + "/v1/messages", json=anthropic_body("[fake error_after=1]"), headers=A_HEADERS, timeout=5
    ).text
    name, data = sse_events(text)[-1]
    assert name == "error" and json.loads(data) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    text = requests.post(
        fake.url + "/v1/chat/completions", json=openai_body("[fake error_after=1]"), headers=O_HEADERS, timeout=5
    ).text
    assert json.loads(sse_events(text)[-1][1])["error"]["type"] == "server_error"


def test_requests_are_recorded_with_auth_redacted(fake: FakeUpstream) -> None:
    requests.post(
        fake.url + "/v1/messages",
        json=anthropic_body("one [fake tokens=1]", system="sys", temperature=0.5),
        headers=A_HEADERS,
        timeout=5,
    )
    requests.post(
        fake.url + "/v1/chat/completions", json=openai_body("two [fake tokens=1]"), headers=O_HEADERS, timeout=5
    )
    assert fake.request_count == 2
    first, second = fake.requests
    assert first.path == "/v1/messages" and first.json["system"] == "sys" and first.json["temperature"] == 0.5
    assert first.headers["x-api-key"] == "REDACTED" and second.headers["authorization"] == "REDACTED"
    assert "secret" not in json.dumps([first.headers, second.headers])
    assert first.time <= second.time
    fake.reset()
    assert fake.request_count == 0


def test_stats_endpoint(fake: FakeUpstream) -> None:
    requests.post(fake.url + "/v1/messages", json=anthropic_body("[fake tokens=1]"), headers=A_HEADERS, timeout=5)
    assert requests.get(fake.url + "/_fake/stats", timeout=5).json() == {"open_connections": 0, "requests": 1}
    assert requests.post(fake.url + "/_fake/reset", timeout=5).json()["requests"] == 0


def test_events_are_flushed_one_by_one(fake: FakeUpstream) -> None:
    started = time.monotonic()
    with requests.post(
        fake.url + "/v1/messages",
        json=anthropic_body("[fake tokens=4 pace=0.3]"),
        headers=A_HEADERS,
        timeout=5,
        stream=True,
    ) as resp:
        arrivals = [time.monotonic() - started for line in resp.iter_lines() if b"text_delta" in line]
    assert len(arrivals) == 4
    assert arrivals[-1] - arrivals[0] > 0.6  # three paces apart: each event was sent as it was made


def test_first_delay(fake: FakeUpstream) -> None:
    started = time.monotonic()
    requests.post(
        fake.url + "/v1/chat/completions",
        json=openai_body("[fake tokens=1 first_delay=0.3]"),
        headers=O_HEADERS,
        timeout=5,
    )
    assert time.monotonic() - started >= 0.3


def raw_post(fake: FakeUpstream, prompt: str) -> socket.socket:
    body = json.dumps(anthropic_body(prompt)).encode()
    sock = socket.create_connection((fake.host, fake.port))
    head = (
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\nanthropic-version: 1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def read_until(sock: socket.socket, marker: bytes, count: int = 1) -> bytes:
    data = b""
    sock.settimeout(5)
    while data.count(marker) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_stalled_response_notices_client_close(fake: FakeUpstream) -> None:
    sock = raw_post(fake, "[fake tokens=10 stall_after=2]")
    assert b"t1 " in read_until(sock, b"text_delta", 2)
    assert fake.wait_open(1, 1) and fake.open_connections == 1
    time.sleep(0.2)
    assert fake.open_connections == 1  # stalled, not finished
    sock.close()
    assert fake.wait_closed(1.0)


def test_stall_pings(fake: FakeUpstream) -> None:
    sock = raw_post(fake, "[fake stall_after=0 ping_every=0.05]")
    data = read_until(sock, b"event: ping", 4)
    assert data.count(b"event: ping") >= 4 and b"text_delta" not in data
    sock.close()
    assert fake.wait_closed(1.0)


def test_drop_cuts_the_chunked_body(fake: FakeUpstream) -> None:
    conn = http.client.HTTPConnection(fake.host, fake.port, timeout=5)
    conn.request("POST", "/v1/messages", json.dumps(anthropic_body("[fake tokens=9 drop_after=2]")), A_HEADERS)
    resp = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    assert b"t1 " in info.value.partial and b"message_stop" not in info.value.partial
    assert fake.wait_closed(1.0)


def test_keep_alive_serves_several_requests(fake: FakeUpstream) -> None:
    conn = http.client.HTTPConnection(fake.host, fake.port, timeout=5)
    for _ in range(3):
        conn.request("POST", "/v1/messages", json.dumps(anthropic_body("[fake tokens=2]")), A_HEADERS)
        assert b"message_stop" in conn.getresponse().read()
    assert fake.request_count == 3


def test_bad_directive_is_a_400(fake: FakeUpstream) -> None:
    resp = requests.post(
        fake.url + "/v1/messages", json=anthropic_body("[fake nonsense=1]"), headers=A_HEADERS, timeout=5
    )
    assert resp.status_code == 400 and "nonsense" in resp.json()["error"]["message"]


def test_directive_parsing() -> None:
    script = Script.parse('hi [fake tokens=3 pace=0.5 tool=t args={"a":1} stop=length json=1]')
    assert (script.tokens, script.pace, script.tool, script.args, script.stop, script.json) == (
        3,
        0.5,
        "t",
        {"a": 1},
        "max_tokens",
        True,
    )
    assert Script.parse("no directive") == Script()


def test_runs_standalone() -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream", "--port", "0"], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(url + "/_fake/stats", timeout=5).json() == {"open_connections": 0, "requests": 0}
    finally:
        proc.terminate()
        proc.wait(5)
