"""Anthropic as it is in 2026, through the real SDK against the wire-level fake: extended thinking
and its signed blocks in the tool loop, cached-token usage, refusals, and the prefill 400."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import anthropic
import httpx2
import pytest

from app.errors import UpstreamError
from app.providers.anthropic import AnthropicProvider, build_params
from app.providers.base import (
    REASONING_BUDGETS,
    Finish,
    Message,
    Opaque,
    OpaqueBlock,
    ProviderEvent,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    ToolSpec,
    Usage,
)
from tests.fake_upstream import FakeUpstream, answer_tokens
from tests.fake_upstream.anthropic_wire import PREFILL_MESSAGE, REDACTED_DATA
from tests.providers.conftest import make_request, text_of

pytestmark = pytest.mark.timeout(30)

CALC = ToolSpec(
    "calculate", "Evaluate arithmetic", {"type": "object", "properties": {"expression": {"type": "string"}}}
)


def reasoning_of(events: list[ProviderEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ReasoningDelta))


def opaque_of(events: list[ProviderEvent]) -> list[OpaqueBlock]:
    return [e.block for e in events if isinstance(e, Opaque)]


# -- reasoning -----------------------------------------------------------------------------------


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_reasoning_effort_turns_on_extended_thinking(upstream_env: FakeUpstream, effort: str) -> None:
    req = make_request("x [fake tokens=3]", reasoning=effort, max_tokens=500, temperature=0.2)
    events = list(AnthropicProvider().stream(req))
    body = upstream_env.last_request.json
    budget = REASONING_BUDGETS[effort]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget, "display": "summarized"}
    assert body["max_tokens"] == 500 + budget  # the answer keeps its own 500
    assert "temperature" not in body  # the API allows none but 1 with thinking on
    assert text_of(events) == "".join(answer_tokens(3))
    assert events[-1] == Finish("end_turn")


def test_adaptive_thinking_where_the_sdk_deprecates_budgets(upstream_env: FakeUpstream) -> None:
    req = make_request("x [fake tokens=2 think=2]", reasoning="high", max_tokens=300, model="claude-opus-4-6")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the SDK's deprecation warning must not fire
        events = list(AnthropicProvider().stream(req))
    body = upstream_env.last_request.json
    assert body["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert body["output_config"] == {"effort": "high"}
    assert body["max_tokens"] == 300 + REASONING_BUDGETS["high"]
    assert reasoning_of(events) == "r0 r1 " and text_of(events) == "t0 t1 "


@pytest.mark.parametrize(
    ("model", "adaptive"),
    [
        ("claude-haiku-4-5", False),
        ("claude-sonnet-4-5-20250929", False),
        ("claude-opus-4-20250514", False),
        ("claude-opus-4-1", False),
        ("claude-3-7-sonnet-20250219", False),
        ("claude-opus-4-6", True),
        ("claude-sonnet-4-6", True),
        ("claude-opus-4-7", True),
        ("claude-sonnet-5", True),
        ("us.anthropic.claude-fable-5-v1:0", True),
        ("claude-mythos-preview", True),
        ("test-model", False),
    ],
)
def test_thinking_kind_per_model(model: str, adaptive: bool) -> None:
    thinking = build_params(make_request("x", reasoning="low", model=model))["thinking"]
    assert thinking["type"] == ("adaptive" if adaptive else "enabled")
    assert thinking["display"] == "summarized"


def test_budgets_grow_with_effort() -> None:
    assert 1024 <= REASONING_BUDGETS["low"] < REASONING_BUDGETS["medium"] < REASONING_BUDGETS["high"]


def test_reasoning_off_sends_no_thinking(upstream_env: FakeUpstream) -> None:
    events = list(AnthropicProvider().stream(make_request("x [fake tokens=2]", max_tokens=50)))
    body = upstream_env.last_request.json
    assert "thinking" not in body and body["max_tokens"] == 50
    assert reasoning_of(events) == "" and opaque_of(events) == []


def test_thinking_streams_as_reasoning_never_as_text(upstream_env: FakeUpstream) -> None:
    events = list(AnthropicProvider().stream(make_request("x [fake tokens=2 think=4]", reasoning="low")))
    assert reasoning_of(events) == "r0 r1 r2 r3 "
    assert text_of(events) == "t0 t1 "
    kinds = [type(e) for e in events]
    assert kinds.index(ReasoningDelta) < kinds.index(Opaque) < kinds.index(TextDelta)
    [block] = opaque_of(events)
    assert block.provider == "anthropic"
    assert block.data["type"] == "thinking" and block.data["thinking"] == "r0 r1 r2 r3 "
    assert len(block.data["signature"]) > 50
    usage = [e for e in events if isinstance(e, Usage)][-1]
    assert (usage.output_tokens, usage.reasoning_tokens) == (2 + 4, 4)


def test_redacted_thinking_is_opaque_only(upstream_env: FakeUpstream) -> None:
    events = list(AnthropicProvider().stream(make_request("x [fake tokens=1 think=2 redacted=1]", reasoning="high")))
    blocks = opaque_of(events)
    assert [b.data["type"] for b in blocks] == ["thinking", "redacted_thinking"]
    assert blocks[1].data == {"type": "redacted_thinking", "data": REDACTED_DATA}
    assert REDACTED_DATA not in reasoning_of(events) + text_of(events)


def tool_round(upstream_env: FakeUpstream, prompt: str) -> tuple[list[ProviderEvent], tuple[Message, ...]]:
    """First round of a tool loop with thinking on: the events and the conversation for round two."""
    events = list(AnthropicProvider().stream(make_request(prompt, tools=(CALC,), reasoning="medium")))
    [call] = [e for e in events if isinstance(e, ToolCall)]
    turns = (
        Message("user", prompt),
        Message(
            "assistant",
            "",
            tool_calls=(ToolCallPart(call.id, call.name, call.arguments),),
            opaque=tuple(opaque_of(events)),
        ),
        Message("user", tool_results=(ToolResultPart(call.id, call.name, "42"),)),
    )
    return events, turns


def test_tool_round_sends_thinking_back_unchanged_first(upstream_env: FakeUpstream) -> None:
    prompt = 'six times seven [fake tool=calculate args={"expression":"6*7"} tokens=2 redacted=1]'
    first, turns = tool_round(upstream_env, prompt)
    assert first[-1] == Finish("tool_use")
    events = list(AnthropicProvider().stream(make_request(messages=turns, tools=(CALC,), reasoning="medium")))
    assert text_of(events) == "result: 42 t0 t1 "  # the fake accepted the round: blocks verified
    sent = upstream_env.last_request.json["messages"][1]["content"]
    blocks = opaque_of(first)
    assert sent[: len(blocks)] == [b.data for b in blocks]
    assert sent[len(blocks)]["type"] == "tool_use"


def test_a_tool_round_without_its_thinking_is_rejected_like_the_api(upstream_env: FakeUpstream) -> None:
    prompt = 'q [fake tool=calculate args={"expression":"1+1"}]'
    _, turns = tool_round(upstream_env, prompt)
    dropped = (turns[0], Message("assistant", "", tool_calls=turns[1].tool_calls), turns[2])
    with pytest.raises(UpstreamError) as info:
        list(AnthropicProvider().stream(make_request(messages=dropped, tools=(CALC,), reasoning="medium")))
    assert (info.value.type, info.value.status) == ("invalid_request", 400)
    assert "thinking" in info.value.message


def test_an_altered_thinking_block_is_rejected_like_the_api(upstream_env: FakeUpstream) -> None:
    prompt = 'q [fake tool=calculate args={"expression":"1+1"}]'
    _, turns = tool_round(upstream_env, prompt)
    [block] = turns[1].opaque
    altered = OpaqueBlock("anthropic", {**block.data, "thinking": block.data["thinking"] + "edited"})
    turns = (turns[0], Message("assistant", "", tool_calls=turns[1].tool_calls, opaque=(altered,)), turns[2])
    with pytest.raises(UpstreamError) as info:
        list(AnthropicProvider().stream(make_request(messages=turns, tools=(CALC,), reasoning="medium")))
    assert (info.value.type, info.value.status) == ("invalid_request", 400)
    assert "signature" in info.value.message


def test_other_providers_opaque_blocks_are_not_sent(upstream_env: FakeUpstream) -> None:
    turns = (
        Message("user", "a"),
        Message("assistant", "b", opaque=(OpaqueBlock("openai", {"type": "reasoning", "id": "rs_1"}),)),
        Message("user", "c [fake tokens=1]"),
    )
    list(AnthropicProvider().stream(make_request(messages=turns)))
    assert upstream_env.last_request.json["messages"][1] == {"role": "assistant", "content": "b"}


def test_tool_call_start_comes_before_its_arguments(upstream_env: FakeUpstream) -> None:
    prompt = 'q [fake tool=calculate args={"expression":"2+2"}]'
    events = list(AnthropicProvider().stream(make_request(prompt, tools=(CALC,))))
    starts = [i for i, e in enumerate(events) if isinstance(e, ToolCallStart)]
    calls = [i for i, e in enumerate(events) if isinstance(e, ToolCall)]
    assert len(starts) == len(calls) == 1 and starts[0] < calls[0]
    start, call = events[starts[0]], events[calls[0]]
    assert isinstance(start, ToolCallStart) and isinstance(call, ToolCall)
    assert (start.id, start.name) == (call.id, call.name)


# -- usage, stop reasons ---------------------------------------------------------------------------


def test_cached_input_tokens_are_summed_and_reported_apart(upstream_env: FakeUpstream) -> None:
    events = list(AnthropicProvider().stream(make_request("one two [fake tokens=2 cache_read=100 cache_write=30]")))
    first = events[0]
    # 6 words (the directive counts), read from the cache 100, written to it 30.
    assert first == Usage(input_tokens=6 + 100 + 30, cache_read_input_tokens=100, cache_creation_input_tokens=30)


@pytest.mark.parametrize(
    ("api_reason", "expected"),
    [
        ("refusal", "refusal"),
        ("model_context_window_exceeded", "max_tokens"),
        ("pause_turn", "end_turn"),
        ("stop_sequence", "stop_sequence"),
        ("end_turn", "end_turn"),
    ],
)
def test_stop_reasons(upstream_env: FakeUpstream, api_reason: str, expected: str) -> None:
    events = list(AnthropicProvider().stream(make_request(f"x [fake tokens=2 stop={api_reason}]")))
    assert events[-1] == Finish(expected)


# -- prefill ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "flag"), [("claude-no-prefill", ""), ("test-model", " prefill=reject")])
def test_prefill_rejection_is_a_recognisable_invalid_request(upstream_env: FakeUpstream, model: str, flag: str) -> None:
    turns = (Message("user", f"say it [fake tokens=3{flag}]"), Message("assistant", "t0 "))
    with pytest.raises(UpstreamError) as info:
        list(AnthropicProvider().stream(make_request(messages=turns, model=model)))
    err = info.value
    assert (err.type, err.status, err.retryable) == ("invalid_request", 400, False)
    assert PREFILL_MESSAGE.rstrip(".") in err.message and "prefill" in err.message
    assert upstream_env.request_count == 1  # a 400 is never retried


def test_prefill_is_accepted_by_default(upstream_env: FakeUpstream) -> None:
    turns = (Message("user", "say it [fake tokens=3]"), Message("assistant", "t0 "))
    events = list(AnthropicProvider().stream(make_request(messages=turns)))
    assert events[-1] == Finish("end_turn")


# -- the parser on recorded wire data (what the fake cannot send) ----------------------------------


def translate(events: list[tuple[bytes, bytes]]) -> Iterator[ProviderEvent]:
    """These (event, data) pairs as the body of a 200, through the real SDK over a mock
    transport and the provider's own read path (`stream()`)."""
    body = b"".join(b"event: %s\ndata: %s\n\n" % pair for pair in events)

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=iter([body]))

    client = anthropic.Anthropic(api_key="sk-test", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(answer)))
    return AnthropicProvider(client=client).stream(make_request("x"))


@pytest.mark.parametrize(
    ("name", "data"),
    [
        (b"message_start", b"{not json"),
        (b"content_block_delta", b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta"}}'),
        (b"content_block_start", b'{"type":"content_block_start","index":0}'),
        (b"message_start", b"[1, 2]"),
    ],
)
def test_malformed_event_is_an_upstream_error(name: bytes, data: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        list(translate([(name, data)]))
    assert (info.value.type, info.value.retryable) == ("upstream", True)
    assert "malformed" in info.value.message


def test_error_event_after_text() -> None:
    wire = [
        (b"content_block_delta", b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}'),
        (b"error", b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'),
    ]
    events: list[ProviderEvent] = []
    with pytest.raises(UpstreamError) as info:
        for event in translate(wire):
            events.append(event)  # noqa: PERF402 -- keeps what arrived before the raise
    assert events == [TextDelta("a")]
    assert (info.value.type, info.value.status, info.value.retryable) == ("rate_limit", None, True)


def test_unknown_events_and_blocks_are_ignored() -> None:
    wire = [
        (b"message_start", b'{"type":"message_start","message":{"usage":{"input_tokens":3}}}'),
        (b"future_event", b'{"type":"future_event"}'),
        (b"content_block_start", b'{"type":"content_block_start","index":0,"content_block":{"type":"server_x"}}'),
        (b"content_block_delta", b'{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta"}}'),
        (b"content_block_stop", b'{"type":"content_block_stop","index":0}'),
        (b"content_block_delta", b'{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"hi"}}'),
        (b"message_delta", b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":1}}'),
        (b"message_stop", b'{"type":"message_stop"}'),
    ]
    events = list(translate(wire))
    assert [type(e) for e in events] == [Usage, TextDelta, Usage, Finish]


def test_newer_message_delta_usage_with_input_counts() -> None:
    delta = (
        b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9,'
        b'"input_tokens":5,"cache_read_input_tokens":10,"cache_creation_input_tokens":0}}'
    )
    events = list(translate([(b"message_delta", delta), (b"message_stop", b'{"type":"message_stop"}')]))
    assert events[0] == Usage(
        input_tokens=15, output_tokens=9, cache_read_input_tokens=10, cache_creation_input_tokens=0
    )
