"""The fake's OpenAI wires at the byte level: the Responses API event sequence, and the 2026
Chat Completions fields. Every event must validate against the installed SDK's own types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from tests.fake_upstream import FakeUpstream
from tests.fake_upstream.test_fake import O_HEADERS, openai_body, sse_events

pytestmark = pytest.mark.timeout(30)

EVENT = TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


def responses(fake: FakeUpstream, prompt: str, **extra: Any) -> list[dict[str, Any]]:
    body = {"model": "gpt-x", "stream": True, "input": [{"role": "user", "content": prompt}], **extra}
    resp = requests.post(fake.url + "/v1/responses", json=body, headers=O_HEADERS, timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    out = []
    for name, data in sse_events(resp.text):
        event = json.loads(data)
        assert name == event["type"], "the event line names the data's type"
        EVENT.validate_python(event)  # the SDK's own model, strictly: every required field is there
        out.append(event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


def test_text_sequence(fake: FakeUpstream) -> None:
    events = responses(fake, "a b [fake tokens=2]")
    assert kinds(events) == [
        "created", "in_progress", "output_item.added", "content_part.added",
        "output_text.delta", "output_text.delta", "output_text.done", "content_part.done",
        "output_item.done", "completed",
    ]
    completed = events[-1]["response"]
    assert completed["status"] == "completed"
    assert completed["output"][0]["content"][0]["text"] == "t0 t1 "
    assert completed["usage"]["input_tokens"] == 4 and completed["usage"]["output_tokens"] == 2


def test_reasoning_summary_then_text(fake: FakeUpstream) -> None:
    events = responses(fake, "[fake tokens=1 think=2 cache_read=1]", reasoning={"effort": "low", "summary": "auto"})
    assert kinds(events)[2:9] == [
        "output_item.added", "reasoning_summary_part.added", "reasoning_summary_text.delta",
        "reasoning_summary_text.delta", "reasoning_summary_text.done", "reasoning_summary_part.done",
        "output_item.done",
    ]
    reasoning = events[8]["item"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"] == [{"type": "summary_text", "text": "r0 r1 "}]
    usage = events[-1]["response"]["usage"]
    assert usage["output_tokens_details"] == {"reasoning_tokens": 2}
    assert usage["input_tokens_details"]["cached_tokens"] == 1


def test_parallel_function_calls(fake: FakeUpstream) -> None:
    events = responses(fake, 'x [fake tool=calculate args={"expression":"1+2"} calls=2]')
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    assert [i["type"] for i in added] == ["function_call", "function_call"]
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [json.loads(e["arguments"]) for e in done] == [{"expression": "1+2"}] * 2
    assert events[-1]["type"] == "response.completed"


@pytest.mark.parametrize(
    ("prompt", "extra", "reason"),
    [
        ("[fake tokens=5]", {"max_output_tokens": 2}, "max_output_tokens"),
        ("[fake stop=content_filter]", {}, "content_filter"),
    ],
)
def test_incomplete(fake: FakeUpstream, prompt: str, extra: dict[str, Any], reason: str) -> None:
    last = responses(fake, prompt, **extra)[-1]
    assert last["type"] == "response.incomplete" and last["response"]["incomplete_details"] == {"reason": reason}


@pytest.mark.parametrize(("mode", "last"), [("error", "error"), ("failed", "response.failed")])
def test_midstream_failure_keeps_the_sequence(fake: FakeUpstream, mode: str, last: str) -> None:
    events = responses(fake, f"[fake tokens=5 error_after=1 error_as={mode}]")
    assert events[-1]["type"] == last and kinds(events).count("output_text.delta") == 1


def test_output_without_its_call_is_a_400(fake: FakeUpstream) -> None:
    orphan = {"type": "function_call_output", "call_id": "call_x", "output": "1"}
    body = {"model": "m", "stream": True, "input": [orphan]}
    resp = requests.post(fake.url + "/v1/responses", json=body, headers=O_HEADERS, timeout=5)
    assert resp.status_code == 400 and "call_x" in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    ("directive", "field"),
    [("think=2", "reasoning_content"), ("think=2 think_as=reasoning", "reasoning"), ("stop=refusal", "refusal")],
)
def test_chat_chunks_with_2026_fields(fake: FakeUpstream, directive: str, field: str) -> None:
    body = openai_body(f"[fake tokens=2 cache_read=1 {directive}]", stream_options={"include_usage": True})
    resp = requests.post(fake.url + "/v1/chat/completions", json=body, headers=O_HEADERS, timeout=5)
    chunks = [json.loads(d) for _, d in sse_events(resp.text)[:-1]]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get(field)) == 2
    assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 1
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finish == ["stop"]
