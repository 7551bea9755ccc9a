"""The OpenAI Responses API provider through the real SDK against the fake's Responses wire.

(The shared provider tests — text, usage, stop reasons, errors, drops, cancel — also run it:
it is the `openai-responses` parameter of the `provider` fixture.)
"""

from __future__ import annotations

import pytest

from app.errors import UpstreamError
from app.providers.base import (
    Finish,
    Message,
    Opaque,
    ProviderEvent,
    ReasoningDelta,
    ToolCall,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    Usage,
)
from app.providers.openai_responses import OpenAIResponsesProvider
from tests.fake_upstream import FakeUpstream, answer_tokens
from tests.providers.conftest import make_request, text_of
from tests.providers.test_streaming import CALC

pytestmark = pytest.mark.timeout(30)


def reasoning_of(events: list[ProviderEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ReasoningDelta))


def run(prompt: str = "", **kwargs: object) -> list[ProviderEvent]:
    return list(OpenAIResponsesProvider().stream(make_request(prompt, **kwargs)))


def test_text_usage_and_request_shape(upstream_env: FakeUpstream) -> None:
    prompt = "one two [fake tokens=4 cache_read=2]"
    events = run(prompt, system="Be terse.", temperature=0.2, model="gpt-x", max_tokens=50)
    assert text_of(events) == "".join(answer_tokens(4))
    assert events[-2:] == [
        Usage(input_tokens=7, output_tokens=4, cache_read_input_tokens=2, reasoning_tokens=0),  # 5 + 2 words
        Finish("end_turn"),
    ]
    request = upstream_env.last_request
    assert request.path == "/v1/responses"
    body = request.json
    assert body["input"] == [{"role": "user", "content": prompt}]
    assert (body["model"], body["instructions"], body["temperature"], body["max_output_tokens"]) == (
        "gpt-x", "Be terse.", 0.2, 50
    )
    assert body["stream"] is True and "reasoning" not in body and "tools" not in body


def test_reasoning_summary_is_reasoning_and_its_item_comes_back(upstream_env: FakeUpstream) -> None:
    events = run("x [fake tokens=2 think=3]", reasoning="medium", max_tokens=100)
    assert reasoning_of(events) == "r0 r1 r2 "
    assert text_of(events) == "t0 t1 "
    assert events[-2] == Usage(input_tokens=4, output_tokens=5, cache_read_input_tokens=0, reasoning_tokens=3)
    opaque = [e.block for e in events if isinstance(e, Opaque)]
    assert len(opaque) == 1 and opaque[0].provider == "openai"
    assert opaque[0].data["type"] == "reasoning" and opaque[0].data["encrypted_content"]
    body = upstream_env.last_request.json
    assert body["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert body["max_output_tokens"] == 100 + 4096


def test_reasoning_text_deltas_are_reasoning(upstream_env: FakeUpstream) -> None:
    events = run("x [fake tokens=1 think=2 think_as=reasoning_text]", reasoning="low")
    assert reasoning_of(events) == "r0 r1 " and text_of(events) == "t0 "


def test_refusal(upstream_env: FakeUpstream) -> None:
    events = run("x [fake stop=refusal say=No.]")
    assert text_of(events) == "No." and events[-1] == Finish("refusal")


def test_parallel_function_calls(upstream_env: FakeUpstream) -> None:
    events = run('x [fake tool=calculate args={"expression":"6*7"} calls=2]', tools=(CALC,))
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(starts) == 2 and [(c.id, c.name) for c in calls] == [(s.id, s.name) for s in starts]
    assert all(c.arguments == {"expression": "6*7"} for c in calls) and len({c.id for c in calls}) == 2
    assert events[-1] == Finish("tool_use")
    assert upstream_env.last_request.json["tools"] == [
        {"type": "function", "name": "calculate", "description": CALC.description, "parameters": CALC.input_schema}
    ]


def test_tool_round_sends_reasoning_and_calls_back_verbatim(upstream_env: FakeUpstream) -> None:
    prompt = 'what is 6*7? [fake tool=calculate args={"expression":"6*7"} think=2 tokens=2]'
    first = run(prompt, tools=(CALC,), reasoning="high")
    calls = [e for e in first if isinstance(e, ToolCall)]
    opaque = tuple(e.block for e in first if isinstance(e, Opaque))
    assert reasoning_of(first) == "r0 r1 " and len(calls) == 1
    assert [b.data["type"] for b in opaque] == ["reasoning", "function_call"]

    turns = (
        Message("user", prompt),
        Message("assistant", tool_calls=(ToolCallPart(calls[0].id, "calculate", calls[0].arguments),), opaque=opaque),
        Message("user", tool_results=(ToolResultPart(calls[0].id, "calculate", "42"),)),
    )
    second = run(messages=turns, tools=(CALC,), reasoning="high")
    assert text_of(second) == "result: 42 t0 t1 " and second[-1] == Finish("end_turn")
    sent = upstream_env.last_request.json["input"]
    assert sent[0] == {"role": "user", "content": prompt}
    assert sent[1:3] == [b.data for b in opaque]  # exactly as received, ids and encrypted content
    assert sent[3] == {"type": "function_call_output", "call_id": calls[0].id, "output": "42"}


def test_tool_round_from_plain_calls(upstream_env: FakeUpstream) -> None:
    # A round without opaque items (e.g. begun by another provider): the calls are rebuilt.
    turns = (
        Message("user", "q [fake tokens=1]"),
        Message("assistant", "let me", tool_calls=(ToolCallPart("call_1", "calculate", {"expression": "1+1"}),)),
        Message("user", tool_results=(ToolResultPart("call_1", "calculate", "bad", is_error=True),)),
    )
    events = run(messages=turns, tools=(CALC,))
    assert text_of(events) == "result: Error: bad t0 "
    assert upstream_env.last_request.json["input"][1:] == [
        {"role": "assistant", "content": "let me"},
        {"type": "function_call", "call_id": "call_1", "name": "calculate", "arguments": '{"expression": "1+1"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "Error: bad"},
    ]


@pytest.mark.parametrize(
    ("directive", "expected"),
    [
        ("error_after=2", "upstream"),
        ("error_after=2 error_type=rate_limit_exceeded", "rate_limit"),
        ("error_after=2 error_as=failed", "upstream"),
        ("error_after=2 error_as=failed error_type=rate_limit_exceeded", "rate_limit"),
    ],
)
def test_error_and_failed_events_after_the_200(upstream_env: FakeUpstream, directive: str, expected: str) -> None:
    events: list[ProviderEvent] = []
    with pytest.raises(UpstreamError) as info:
        for event in OpenAIResponsesProvider().stream(make_request(f"x [fake tokens=5 {directive}]")):
            events.append(event)  # noqa: PERF402 -- keeps what arrived before the raise
    assert text_of(events) == "t0 t1 "
    assert (info.value.type, info.value.retryable, info.value.status) == (expected, True, None)


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "stop"),
    [("x [fake tokens=5]", 2, "max_tokens"), ("x [fake tokens=5 stop=content_filter]", 1024, "content_filter")],
)
def test_incomplete_response(upstream_env: FakeUpstream, prompt: str, max_tokens: int, stop: str) -> None:
    events = run(prompt, max_tokens=max_tokens)
    assert events[-1] == Finish(stop) and isinstance(events[-2], Usage)
