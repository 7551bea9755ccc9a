"""The fake's Anthropic additions at the byte level (no SDK): thinking blocks with signatures,
cache usage, failures that happen N times, a hang-up, and the API's 400s it reproduces."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.fake_upstream.anthropic_wire import PREFILL_MESSAGE, REDACTED_DATA, signature
from tests.fake_upstream.test_fake import A_HEADERS, anthropic_body, sse_events

pytestmark = pytest.mark.timeout(30)

THINKING = {"type": "enabled", "budget_tokens": 1024}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake: FakeUpstream) -> None:
    assert fake.wait_closed(5)
    fake.reset()


def post(fake: FakeUpstream, body: dict[str, Any]) -> requests.Response:
    return requests.post(fake.url + "/v1/messages", json=body, headers=A_HEADERS, timeout=5)


def test_thinking_block_shape(fake: FakeUpstream) -> None:
    resp = post(fake, anthropic_body("x [fake tokens=2 think=2 redacted=1]", max_tokens=2000, thinking=THINKING))
    events = [(n, json.loads(d)) for n, d in sse_events(resp.text)]
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts == [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "redacted_thinking", "data": REDACTED_DATA},
        {"type": "text", "text": ""},
    ]
    deltas = [(d["index"], d["delta"]) for n, d in events if n == "content_block_delta"]
    assert deltas[:3] == [
        (0, {"type": "thinking_delta", "thinking": "r0 "}),
        (0, {"type": "thinking_delta", "thinking": "r1 "}),
        (0, {"type": "signature_delta", "signature": signature("r0 r1 ")}),
    ]
    assert [i for i, _ in deltas[3:]] == [2, 2]
    usage = [d for n, d in events if n == "message_delta"][0]["usage"]
    assert usage == {"output_tokens": 4, "output_tokens_details": {"thinking_tokens": 2}}


def test_no_thinking_without_the_request_asking(fake: FakeUpstream) -> None:
    events = sse_events(post(fake, anthropic_body("x [fake tokens=1 think=5]")).text)
    assert "thinking" not in "".join(d for _, d in events)


def test_cache_usage_fields_in_message_start(fake: FakeUpstream) -> None:
    events = sse_events(post(fake, anthropic_body("a [fake tokens=1 cache_read=7 cache_write=2]")).text)
    usage = json.loads(events[0][1])["message"]["usage"]
    assert usage == {
        "input_tokens": 5,
        "cache_creation_input_tokens": 2,
        "cache_read_input_tokens": 7,
        "output_tokens": 1,
    }


def test_times_fails_only_the_first_requests(fake: FakeUpstream) -> None:
    body = anthropic_body("x [fake tokens=1 status=529 times=2]")
    assert [post(fake, body).status_code for _ in range(3)] == [529, 529, 200]
    fake.reset()
    assert post(fake, body).status_code == 529  # a reset starts the count again


def test_retry_after_headers(fake: FakeUpstream) -> None:
    resp = post(fake, anthropic_body("x [fake status=429 retry_after=3 retry_after_ms=2500]"))
    assert (resp.headers["retry-after"], resp.headers["retry-after-ms"]) == ("3", "2500")
    assert post(fake, anthropic_body("x [fake status=429]")).headers["retry-after"] == "1"


def test_hangup_answers_nothing(fake: FakeUpstream) -> None:
    payload = json.dumps(anthropic_body("x [fake hangup=1]")).encode()
    with socket.create_connection((fake.host, fake.port), timeout=5) as sock:
        head = (
            f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-api-key: k\r\n"
            f"anthropic-version: 2023-06-01\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        sock.sendall(head.encode() + payload)
        try:
            got = sock.recv(100)
        except ConnectionResetError:
            got = b""
    assert got == b""


def test_prefill_rejected_when_asked(fake: FakeUpstream) -> None:
    messages = [{"role": "user", "content": "q [fake prefill=reject]"}, {"role": "assistant", "content": "partial"}]
    resp = post(fake, anthropic_body("", messages=messages))
    assert resp.status_code == 400
    assert resp.json()["error"] == {"type": "invalid_request_error", "message": PREFILL_MESSAGE}
    assert resp.headers["x-should-retry"] == "false"
    assert post(fake, anthropic_body("", messages=messages, model="claude-no-prefill-1")).status_code == 400
    messages[0]["content"] = "q [fake tokens=1]"
    assert post(fake, anthropic_body("", messages=messages)).status_code == 200


def tool_turns(first: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": 'q [fake tool=calc args={"a":1}]'},
        {"role": "assistant", "content": [*first, {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "1"}]},
    ]


@pytest.mark.parametrize(
    ("first", "status", "fragment"),
    [
        ([{"type": "thinking", "thinking": "r0 ", "signature": signature("r0 ")}], 200, ""),
        ([{"type": "redacted_thinking", "data": REDACTED_DATA}], 200, ""),
        ([], 400, "must start with a thinking block"),
        ([{"type": "text", "text": "hm"}], 400, "Expected `thinking` or `redacted_thinking`, but found `text`"),
        ([{"type": "thinking", "thinking": "r0 !", "signature": signature("r0 ")}], 400, "Invalid `signature`"),
        ([{"type": "redacted_thinking", "data": "x" + REDACTED_DATA}], 400, "Invalid `data`"),
    ],
)
def test_tool_round_thinking_rules(fake: FakeUpstream, first: list[dict[str, Any]], status: int, fragment: str) -> None:
    body = anthropic_body("", messages=tool_turns(first), max_tokens=2000, thinking=THINKING)
    resp = post(fake, body)
    assert resp.status_code == status
    if fragment:
        assert fragment in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"max_tokens": 1024}, "`max_tokens` must be greater than `thinking.budget_tokens`"),
        ({"thinking": {"type": "enabled", "budget_tokens": 100}}, "greater than or equal to 1024"),
        ({"temperature": 0.5}, "`temperature` may only be set to 1"),
    ],
)
def test_thinking_request_rules(fake: FakeUpstream, extra: dict[str, Any], fragment: str) -> None:
    body = anthropic_body("x [fake tokens=1]", **{"max_tokens": 4000, "thinking": THINKING, **extra})
    resp = post(fake, body)
    assert resp.status_code == 400 and fragment in resp.json()["error"]["message"]
