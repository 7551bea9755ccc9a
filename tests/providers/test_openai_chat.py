"""OpenAI Chat Completions as servers speak it in 2026, through the real SDK against the fake.

Reasoning fields beyond the SDK's chunk type, inline think tags, cached and reasoning usage,
refusals, parallel tool calls, reasoning effort, and retries before the first token.
"""

from __future__ import annotations

import json

import pytest

from app.errors import UpstreamError
from app.providers._retry import RetryPolicy
from app.providers.base import (
    Finish,
    ProviderEvent,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallStart,
    Usage,
)
from app.providers.openai import OpenAIProvider, translate
from app.providers.openai_responses import OpenAIResponsesProvider
from tests.fake_upstream import FakeUpstream, answer_tokens
from tests.providers.conftest import make_request, text_of
from tests.providers.test_streaming import CALC

pytestmark = pytest.mark.timeout(30)

FAST_RETRY = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.02)


def reasoning_of(events: list[ProviderEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ReasoningDelta))


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_fields_are_reasoning_never_text(upstream_env: FakeUpstream, field: str) -> None:
    events = list(OpenAIProvider().stream(make_request(f"x [fake tokens=3 think=4 think_as={field}]")))
    assert reasoning_of(events) == "r0 r1 r2 r3 "
    assert text_of(events) == "".join(answer_tokens(3))
    kinds = [type(e) for e in events if isinstance(e, (TextDelta, ReasoningDelta))]
    assert kinds == [ReasoningDelta] * 4 + [TextDelta] * 3
    assert events[-1] == Finish("end_turn")


def test_think_tags_are_text_unless_configured(upstream_env: FakeUpstream) -> None:
    prompt = "x [fake tokens=2 think=3 think_as=tags]"
    plain = list(OpenAIProvider().stream(make_request(prompt)))
    assert text_of(plain) == "<think>r0 r1 r2 </think>\n\nt0 t1 "
    assert reasoning_of(plain) == ""

    split = list(OpenAIProvider(think_tags=True).stream(make_request(prompt)))
    assert reasoning_of(split) == "r0 r1 r2 "
    assert text_of(split) == "t0 t1 "


def test_usage_with_cached_and_reasoning_tokens(upstream_env: FakeUpstream) -> None:
    prompt = "one two three [fake tokens=3 think=2 cache_read=3]"  # 7 words
    events = list(OpenAIProvider().stream(make_request(prompt)))
    usage = [e for e in events if isinstance(e, Usage)]
    # prompt_tokens already includes the cached ones; reasoning tokens are part of the output.
    assert usage == [Usage(input_tokens=7, output_tokens=5, cache_read_input_tokens=3, reasoning_tokens=2)]


def test_refusal_is_text_with_stop_reason_refusal(upstream_env: FakeUpstream) -> None:
    events = list(OpenAIProvider().stream(make_request("x [fake stop=refusal say=I%20can%27t%20help%20with%20that.]")))
    assert text_of(events) == "I can't help with that."
    assert events[-1] == Finish("refusal")


def test_parallel_tool_calls(upstream_env: FakeUpstream) -> None:
    prompt = 'x [fake tool=calculate args={"expression":"1+2"} calls=3]'
    events = list(OpenAIProvider().stream(make_request(prompt, tools=(CALC,))))
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(starts) == 3 and len({s.id for s in starts}) == 3
    assert [(c.id, c.name) for c in calls] == [(s.id, s.name) for s in starts]
    assert all(c.arguments == {"expression": "1+2"} for c in calls)
    # Every start is announced before any call is complete: a drop now is not prose.
    assert events.index(starts[-1]) < events.index(calls[0])
    assert events[-1] == Finish("tool_use")


def test_tool_call_start_comes_before_the_arguments_finish(upstream_env: FakeUpstream) -> None:
    gen = OpenAIProvider().stream(make_request('x [fake tool=calculate args={"expression":"1+2"} stall_after=1]'))
    first = next(e for e in gen if not isinstance(e, Usage))
    assert isinstance(first, ToolCallStart) and first.name == "calculate"
    gen.close()
    assert upstream_env.wait_closed(1.0)


@pytest.mark.parametrize(("effort", "budget"), [("low", 1024), ("medium", 4096), ("high", 16384)])
def test_reasoning_effort_and_token_budget(upstream_env: FakeUpstream, effort: str, budget: int) -> None:
    list(OpenAIProvider().stream(make_request("x [fake tokens=1]", reasoning=effort, max_tokens=100)))
    body = upstream_env.last_request.json
    assert body["reasoning_effort"] == effort and body["max_tokens"] == 100 + budget


def test_reasoning_off_sends_no_effort(upstream_env: FakeUpstream) -> None:
    list(OpenAIProvider().stream(make_request("x [fake tokens=1]", max_tokens=100)))
    body = upstream_env.last_request.json
    assert "reasoning_effort" not in body and body["max_tokens"] == 100


@pytest.mark.parametrize("cls", [OpenAIProvider, OpenAIResponsesProvider])
@pytest.mark.parametrize("failure", ["status=429 retry_after=0", "status=500", "status=503", "hangup=1"])
def test_one_transient_failure_then_the_answer(upstream_env: FakeUpstream, cls: type, failure: str) -> None:
    events = list(cls(retry=FAST_RETRY).stream(make_request(f"x [fake tokens=3 {failure} times=1]")))
    assert text_of(events) == "t0 t1 t2 " and events[-1] == Finish("end_turn")
    assert upstream_env.request_count == 2


@pytest.mark.parametrize("cls", [OpenAIProvider, OpenAIResponsesProvider])
def test_transient_status_is_retried_then_reported(upstream_env: FakeUpstream, cls: type) -> None:
    with pytest.raises(UpstreamError) as info:
        list(cls(retry=FAST_RETRY).stream(make_request("x [fake status=503]")))
    assert info.value.type == "overloaded"
    assert upstream_env.request_count == 3  # the first attempt and two retries


@pytest.mark.parametrize("cls", [OpenAIProvider, OpenAIResponsesProvider])
def test_invalid_request_is_not_retried(upstream_env: FakeUpstream, cls: type) -> None:
    with pytest.raises(UpstreamError) as info:
        list(cls(retry=FAST_RETRY).stream(make_request("x [fake status=400]")))
    assert info.value.type == "invalid_request"
    assert upstream_env.request_count == 1


@pytest.mark.parametrize("cls", [OpenAIProvider, OpenAIResponsesProvider])
def test_no_retry_once_the_stream_is_open(upstream_env: FakeUpstream, cls: type) -> None:
    events: list[ProviderEvent] = []
    with pytest.raises(UpstreamError) as info:
        for event in cls(retry=FAST_RETRY).stream(make_request("x [fake tokens=5 error_after=2]")):
            events.append(event)  # noqa: PERF402 -- keeps what arrived before the raise
    assert text_of(events) == "t0 t1 " and info.value.retryable
    assert upstream_env.request_count == 1


# -- the parser on wire edge cases the fake does not script ---------------------------------


def wire(*chunks: dict[str, object], done: bool = True) -> list[tuple[bytes, bytes]]:
    """(event, data) pairs as the SSE splitter yields them for these chunks."""
    out = [(b"message", json.dumps(c).encode()) for c in chunks]
    return out + [(b"message", b"[DONE]")] if done else out


def delta(finish: str | None = None, **fields: object) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": finish}]}


def test_body_ending_without_finish_is_a_lost_connection() -> None:
    with pytest.raises(UpstreamError) as info:
        list(translate(wire(delta(content="a"))))
    assert info.value.type == "connection" and "lost" in info.value.message


def test_tool_call_without_id_gets_one() -> None:
    piece = {"index": 0, "function": {"name": "calculate", "arguments": "{}"}}
    events = list(translate(wire(delta(tool_calls=[piece]), delta("tool_calls"))))
    start, call = events[0], events[1]
    assert isinstance(start, ToolCallStart) and isinstance(call, ToolCall)
    assert start.id.startswith("call_") and call.id == start.id


def test_usage_repeated_on_every_chunk_is_reported_once() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 1}
    events = list(translate(wire({**delta(content="a"), "usage": usage}, {**delta("stop"), "usage": usage})))
    assert [e for e in events if isinstance(e, Usage)] == [Usage(input_tokens=3, output_tokens=1)]
    assert events[-1] == Finish("end_turn")


def test_an_error_chunk_after_the_200_is_typed_by_its_body() -> None:
    error = {"error": {"message": "slow down", "type": "rate_limit_exceeded", "param": None, "code": None}}
    with pytest.raises(UpstreamError) as info:
        list(translate(wire(delta(content="a"), error)))
    assert (info.value.type, info.value.retryable) == ("rate_limit", True)
