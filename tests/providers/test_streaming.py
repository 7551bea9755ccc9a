"""Both providers through the real SDKs against the wire-level fake: the happy paths."""

from __future__ import annotations

import json

import pytest

from app.providers.anthropic import AnthropicProvider
from app.providers.base import (
    Finish,
    Message,
    Provider,
    ToolCall,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    Usage,
)
from app.providers.openai import OpenAIProvider
from app.providers.openai_responses import OpenAIResponsesProvider
from tests.fake_upstream import FakeUpstream, answer_tokens
from tests.providers.conftest import make_request, text_of

pytestmark = pytest.mark.timeout(30)

CALC = ToolSpec(
    "calculate", "Evaluate arithmetic", {"type": "object", "properties": {"expression": {"type": "string"}}}
)


def test_text_arrives_in_order_and_complete(provider: Provider) -> None:
    events = list(provider.stream(make_request("hi [fake tokens=40]")))
    assert text_of(events) == "".join(answer_tokens(40))
    assert isinstance(events[-1], Finish)
    assert events[-1].stop_reason == "end_turn"


def test_usage_reported(provider: Provider) -> None:
    events = list(provider.stream(make_request("one two three [fake tokens=7]")))
    usages = [e for e in events if isinstance(e, Usage)]
    assert max(u.input_tokens or 0 for u in usages) == 5  # "one two three [fake tokens=7]"
    assert usages[-1].output_tokens == 7


def test_anthropic_yields_input_usage_before_any_text(upstream_env: FakeUpstream) -> None:
    gen = AnthropicProvider().stream(make_request("a b [fake tokens=3]"))
    first = next(gen)
    assert first == Usage(input_tokens=4, cache_read_input_tokens=0, cache_creation_input_tokens=0)
    assert Finish("end_turn") in list(gen)


def test_paced_tokens_arrive_one_by_one(provider: Provider) -> None:
    seen = [e.text for e in provider.stream(make_request("x [fake tokens=5 pace=0.02]")) if hasattr(e, "text")]
    assert seen == answer_tokens(5)


@pytest.mark.parametrize("reason", ["max_tokens", "content_filter"])
def test_stop_reason_is_normalised(provider: Provider, reason: str) -> None:
    # The fake sends "length" / "content_filter" to OpenAI clients, "max_tokens" / "refusal" to Anthropic ones.
    events = list(provider.stream(make_request(f"x [fake tokens=3 stop={reason}]")))
    anthropic_refusal = isinstance(provider, AnthropicProvider) and reason == "content_filter"
    assert events[-1] == Finish("refusal" if anthropic_refusal else reason)


def test_anthropic_stop_sequence(upstream_env: FakeUpstream) -> None:
    events = list(AnthropicProvider().stream(make_request("x [fake tokens=3 stop=stop_sequence]")))
    assert events[-1] == Finish("stop_sequence")


def test_max_tokens_cuts_the_answer(provider: Provider, upstream_env: FakeUpstream) -> None:
    events = list(provider.stream(make_request("x [fake tokens=50]", max_tokens=5)))
    assert text_of(events) == "".join(answer_tokens(5))
    assert events[-1] == Finish("max_tokens")
    body = upstream_env.last_request.json
    assert body.get("max_tokens", body.get("max_completion_tokens", body.get("max_output_tokens"))) == 5


def test_system_temperature_model_pass_through(upstream_env: FakeUpstream) -> None:
    req = make_request("x [fake tokens=1]", system="Be terse.", temperature=0.3, model="m-1", max_tokens=77)
    list(AnthropicProvider().stream(req))
    body = upstream_env.last_request.json
    assert (body["model"], body["system"], body["temperature"], body["max_tokens"]) == ("m-1", "Be terse.", 0.3, 77)
    assert body["stream"] is True

    list(OpenAIProvider().stream(req))
    body = upstream_env.last_request.json
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("m-1", 0.3, 77)
    assert body["stream_options"] == {"include_usage": True}


def test_optional_fields_are_not_sent_when_unset(upstream_env: FakeUpstream) -> None:
    list(OpenAIProvider().stream(make_request("x [fake tokens=1]")))
    body = upstream_env.last_request.json
    for absent in ("temperature", "tools", "response_format", "max_completion_tokens"):
        assert absent not in body
    list(AnthropicProvider().stream(make_request("x [fake tokens=1]")))
    body = upstream_env.last_request.json
    assert "temperature" not in body and "system" not in body and "tools" not in body


def test_openai_max_tokens_param_for_openai_itself() -> None:
    from app.providers.openai import build_params

    params = build_params(make_request("x"), "max_completion_tokens")
    assert params["max_completion_tokens"] == 1024 and "max_tokens" not in params


def test_multi_turn_reaches_upstream_in_shape(upstream_env: FakeUpstream) -> None:
    turns = (Message("user", "first"), Message("assistant", "answer one"), Message("user", "second [fake tokens=2]"))
    list(AnthropicProvider().stream(make_request(messages=turns)))
    assert upstream_env.last_request.json["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer one"},
        {"role": "user", "content": "second [fake tokens=2]"},
    ]
    list(OpenAIProvider().stream(make_request(messages=turns)))
    assert upstream_env.last_request.json["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer one"},
        {"role": "user", "content": "second [fake tokens=2]"},
    ]


def test_tool_call_round_trip(provider: Provider, upstream_env: FakeUpstream) -> None:
    prompt = 'what is 6*7? [fake tool=calculate args={"expression":"6*7"} tokens=2]'
    events = list(provider.stream(make_request(prompt, tools=(CALC,))))
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(calls) == 1
    assert (calls[0].name, calls[0].arguments) == ("calculate", {"expression": "6*7"})
    assert calls[0].id
    assert events[-1] == Finish("tool_use")

    sent_tools = upstream_env.last_request.json["tools"]
    assert "calculate" in json.dumps(sent_tools)

    turns = (
        Message("user", prompt),
        Message("assistant", "", tool_calls=(ToolCallPart(calls[0].id, "calculate", {"expression": "6*7"}),)),
        Message("user", tool_results=(ToolResultPart(calls[0].id, "calculate", "42"),)),
    )
    events = list(provider.stream(make_request(messages=turns, tools=(CALC,))))
    assert text_of(events) == "result: 42 t0 t1 "
    assert events[-1] == Finish("end_turn")


def test_tool_round_message_shapes(upstream_env: FakeUpstream) -> None:
    turns = (
        Message("user", "q [fake tokens=1]"),
        Message("assistant", "let me", tool_calls=(ToolCallPart("call_1", "calculate", {"expression": "1+1"}),)),
        Message("user", tool_results=(ToolResultPart("call_1", "calculate", "bad", is_error=True),)),
    )
    list(AnthropicProvider().stream(make_request(messages=turns, tools=(CALC,))))
    sent = upstream_env.last_request.json["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "let me"},
            {"type": "tool_use", "id": "call_1", "name": "calculate", "input": {"expression": "1+1"}},
        ],
    }
    assert sent[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "bad", "is_error": True}],
    }
    assert upstream_env.last_request.json["tools"][0]["input_schema"] == CALC.input_schema

    list(OpenAIProvider().stream(make_request(messages=turns, tools=(CALC,))))
    sent = upstream_env.last_request.json["messages"]
    assert sent[1]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "calculate", "arguments": '{"expression": "1+1"}'}}
    ]
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "Error: bad"}
    assert upstream_env.last_request.json["tools"][0]["function"]["parameters"] == CALC.input_schema


def test_json_mode(provider: Provider, upstream_env: FakeUpstream) -> None:
    events = list(provider.stream(make_request("give json [fake tokens=4 json=1]", json_mode=True)))
    assert json.loads(text_of(events)) == {"answer": "t0 t1 t2 t3", "n": 4}
    body = upstream_env.last_request.json
    if isinstance(provider, OpenAIProvider):
        assert body["response_format"] == {"type": "json_object"}
    elif isinstance(provider, OpenAIResponsesProvider):
        assert body["text"] == {"format": {"type": "json_object"}}
    else:
        assert "JSON" in body["system"]
