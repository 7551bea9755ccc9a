"""The producer with scripted providers: reasoning, opaque blocks, usage, stop reasons, recovery.

A scripted provider is a provider fake one level above the wire (the wire-level fake serves the
SDK tests): each upstream call plays one script of provider events, so the generation's own
rules (what is relayed, what goes back to the model, how a drop is continued) are tested alone.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from app.config import Settings
from app.errors import UpstreamError
from app.lifecycle import recovery
from app.lifecycle.generation import Generation
from app.providers.base import (
    Finish,
    Message,
    Opaque,
    OpaqueBlock,
    ProviderEvent,
    ProviderRequest,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallPart,
    ToolCallStart,
    Usage,
)
from app.providers.demo import DemoProvider
from app.validation import parse_spec

pytestmark = pytest.mark.timeout(30)

Script = list[ProviderEvent | UpstreamError]


def drop() -> UpstreamError:
    return UpstreamError("connection", "Anthropic: the connection dropped mid-stream")


def prefill_400() -> UpstreamError:
    return UpstreamError("invalid_request", "This model does not support assistant message prefill.", status=400)


class Scripted:
    """Plays one script per upstream call and records every request."""

    def __init__(self, name: str, *scripts: Script) -> None:
        self.name = name
        self.scripts = list(scripts)
        self.requests: list[ProviderRequest] = []

    def stream(self, request: ProviderRequest) -> Generator[ProviderEvent, None, None]:
        self.requests.append(request)
        for item in self.scripts.pop(0):
            if isinstance(item, UpstreamError):
                raise item
            yield item


def run(provider: Any, body: dict[str, Any] | None = None, **env: str) -> tuple[list[dict[str, Any]], Generation]:
    settings = Settings.from_env({"SLUICE_PROVIDER": "demo", "ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k",
                                  "SLUICE_ALLOWED_MODELS": "*", **env})
    spec = parse_spec({"prompt": "hi", "provider": provider.name, "model": "m", **(body or {})}, settings)
    gen = Generation("s" * 22, spec, settings, lambda name: provider)
    gen.feed.attach()
    gen.start()
    gen.join(20)
    events = [json.loads(e.data) for e in gen.journal.entries if e.data != "[DONE]"]
    return events, gen


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def text(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "text")


def reasoning(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "reasoning")


@pytest.fixture(autouse=True)
def _forget_prefill_refusals() -> Iterator[None]:
    yield
    recovery._prefill_refused.clear()


# -- reasoning --------------------------------------------------------------------------------


def test_reasoning_is_streamed_apart_from_text_and_asked_for() -> None:
    provider = Scripted("anthropic", [ReasoningDelta("Let me "), ReasoningDelta("think."), TextDelta("Hello"),
                                      TextDelta(" there"), Usage(1, 5, reasoning_tokens=3), Finish("end_turn")])
    events, gen = run(provider, {"reasoning": "high"})
    assert kinds(events) == ["start", "reasoning", "reasoning", "text", "text", "done"]
    assert reasoning(events) == "Let me think." and text(events) == "Hello there"
    assert provider.requests[0].reasoning == "high"
    assert gen.ttft_ms is not None
    assert events[-1]["usage"] == {"input_tokens": 1, "output_tokens": 5, "reasoning_tokens": 3}


def test_reasoning_defaults_to_off_and_unasked_reasoning_is_still_reasoning() -> None:
    provider = Scripted("openai", [ReasoningDelta("hmm"), TextDelta("ok"), Finish("end_turn")])
    events, _ = run(provider)
    assert provider.requests[0].reasoning == "off"
    assert reasoning(events) == "hmm" and text(events) == "ok"


def test_reasoning_keeps_its_place_between_chunked_text() -> None:
    provider = Scripted("anthropic", [TextDelta("One two"), ReasoningDelta("aside"), TextDelta(" three."),
                                      Finish("end_turn")])
    events, _ = run(provider, {"chunking": "sentence"})
    assert kinds(events)[1:4] == ["text", "reasoning", "text"]
    assert text(events) == "One two three."


def test_thinking_goes_back_unchanged_in_every_tool_round() -> None:
    block = OpaqueBlock("anthropic", {"type": "thinking", "thinking": "use calc", "signature": "c2ln"})
    provider = Scripted(
        "anthropic",
        [ReasoningDelta("use calc"), Opaque(block), ToolCallStart("t1", "calculate"),
         ToolCall("t1", "calculate", {"expression": "6*7"}), Finish("tool_use")],
        [ReasoningDelta("it is 42"), TextDelta("42"), Finish("end_turn")],
    )
    events, _ = run(provider, {"tools": ["calculate"], "reasoning": "low"})
    assert kinds(events) == ["start", "reasoning", "tool_call", "tool_result", "reasoning", "text", "done"]
    turn = provider.requests[1].messages[-2]
    assert turn.role == "assistant" and turn.opaque == (block,) and turn.tool_calls[0].id == "t1"


def test_demo_thinks_and_refuses_a_tool_round_without_its_thinking_block() -> None:
    events, gen = run(DemoProvider(5000), {"prompt": "what is 6*7", "tools": ["calculate"], "reasoning": "medium"})
    assert kinds(events)[-1] == "done", events[-1]
    assert kinds(events).count("reasoning") > 4 and "42" in text(events)
    assert reasoning(events) not in text(events)
    assert gen.usage()["reasoning_tokens"] == kinds(events).count("reasoning")
    # Like Anthropic's API, the demo refuses a tool round whose thinking block was dropped.
    stripped = (Message("user", "6*7"), Message("assistant", tool_calls=(ToolCallPart("x", "calculate", {}),)),
                Message("user", "r"))
    with pytest.raises(UpstreamError) as err:
        list(DemoProvider(5000).stream(ProviderRequest("m", stripped, 10, reasoning="low")))
    assert err.value.status == 400


def test_demo_without_reasoning_does_not_think() -> None:
    events, gen = run(DemoProvider(5000))
    assert "reasoning" not in kinds(events)
    assert "reasoning_tokens" not in events[-1]["usage"]


# -- usage and stop reasons ----------------------------------------------------------------------


def test_usage_breakdown_sums_over_rounds_and_appears_only_when_reported() -> None:
    provider = Scripted(
        "anthropic",
        [Usage(100, None, cache_read_input_tokens=80, cache_creation_input_tokens=0),
         ToolCall("t1", "calculate", {"expression": "1+1"}), Usage(None, 7), Finish("tool_use")],
        [Usage(120, None, cache_read_input_tokens=100, cache_creation_input_tokens=10), TextDelta("2"),
         Usage(None, 3), Finish("end_turn")],
    )
    events, gen = run(provider, {"tools": ["calculate"]})
    # cache_creation was 0 in one round and 10 in the other; reasoning_tokens never reported.
    expected = {"input_tokens": 220, "output_tokens": 10, "cache_read_input_tokens": 180,
                "cache_creation_input_tokens": 10}
    assert events[-1]["usage"] == expected
    assert gen.status()["usage"] == expected


def test_zero_cache_and_reasoning_counts_are_left_out() -> None:
    provider = Scripted("openai", [TextDelta("hi"), Usage(5, 1, cache_read_input_tokens=0, reasoning_tokens=0),
                                   Finish("end_turn")])
    events, _ = run(provider)
    assert events[-1]["usage"] == {"input_tokens": 5, "output_tokens": 1}


@pytest.mark.parametrize("reason", ["refusal", "content_filter", "max_tokens", "stop_sequence"])
def test_stop_reasons_pass_through(reason: str) -> None:
    events, gen = run(Scripted("openai", [TextDelta("I can't help with that."), Finish(reason)]))
    assert events[-1]["stop_reason"] == reason and gen.status()["stop_reason"] == reason


# -- recovery ---------------------------------------------------------------------------------


def test_prefill_then_exact_continuation() -> None:
    provider = Scripted("anthropic", [TextDelta("The answer "), TextDelta("is "), drop()],
                        [TextDelta(" forty-two."), Finish("end_turn")])
    events, _ = run(provider)
    assert text(events) == "The answer is forty-two."
    assert kinds(events).count("notice") == 1
    last = provider.requests[1].messages[-1]
    assert last.role == "assistant" and last.text == "The answer is"  # prefill, stripped


def test_a_400_to_prefill_continues_with_a_user_turn_and_no_repeat() -> None:
    provider = Scripted(
        "anthropic",
        [TextDelta("Alpha beta "), TextDelta("gamma "), drop()],
        [prefill_400()],
        # A model asked in a user turn often starts again: the repeat is not relayed twice.
        [TextDelta("Alpha beta"), TextDelta(" gamma delta"), TextDelta(" epsilon."), Finish("end_turn")],
        [TextDelta("next"), Finish("end_turn")],
    )
    events, gen = run(provider)
    assert text(events) == "Alpha beta gamma delta epsilon."
    assert kinds(events).count("notice") == 1 and kinds(events)[-1] == "done"
    third = provider.requests[2].messages
    assert [m.role for m in third] == ["user", "assistant", "user"]
    assert third[1].text == "Alpha beta gamma" and "cut off" in third[2].text
    assert "cut off" not in text(events) and "cut off" not in gen.relay.answer
    # The refusal is remembered: the next recovery on this model skips prefill.
    assert not recovery.prefill_allowed("anthropic", "m", "off")


def test_continuation_that_repeats_the_last_words_is_trimmed() -> None:
    provider = Scripted("openai", [TextDelta("Rivers flow to the sea "), drop()],
                        [TextDelta("flow to the sea and"), TextDelta(" then rise as rain."), Finish("end_turn")])
    events, _ = run(provider)
    assert text(events) == "Rivers flow to the sea and then rise as rain."
    assert provider.requests[1].messages[-1].role == "user"  # no prefill outside Anthropic


def test_thinking_on_never_prefills() -> None:
    provider = Scripted("anthropic", [ReasoningDelta("hm"), TextDelta("Part one "), drop()],
                        [ReasoningDelta("again"), TextDelta("part two."), Finish("end_turn")])
    events, _ = run(provider, {"reasoning": "low"})
    assert text(events) == "Part one part two."
    assert provider.requests[1].messages[-1].role == "user"


def test_a_drop_inside_a_tool_call_is_an_error_not_prose() -> None:
    provider = Scripted("anthropic", [TextDelta("Let me compute. "), ToolCallStart("t1", "calculate"), drop()],
                        [TextDelta("never asked"), Finish("end_turn")])
    events, _ = run(provider, {"tools": ["calculate"]})
    assert kinds(events)[-1] == "error" and events[-1]["error"]["type"] == "connection"
    assert "notice" not in kinds(events) and len(provider.requests) == 1


def test_recovery_after_a_tool_round_keeps_one_clean_assistant_turn() -> None:
    provider = Scripted(
        "openai",
        [ToolCall("t1", "calculate", {"expression": "2+2"}), Finish("tool_use")],
        [TextDelta("It is "), drop()],
        [TextDelta("four, "), ToolCall("t2", "calculate", {"expression": "4*4"}), Finish("tool_use")],
        [TextDelta("and 16."), Finish("end_turn")],
    )
    events, _ = run(provider, {"tools": ["calculate"]})
    assert text(events) == "It is four, and 16."
    final = provider.requests[3].messages
    assert [m.role for m in final] == ["user", "assistant", "user", "assistant", "user"]
    assert final[3].text == "It is four, " and final[3].tool_calls[0].id == "t2"
    assert all("cut off" not in m.text for m in final)


def test_only_one_recovery() -> None:
    provider = Scripted("openai", [TextDelta("a b "), drop()], [TextDelta("c "), drop()])
    events, _ = run(provider)
    assert kinds(events).count("notice") == 1 and kinds(events)[-1] == "error"
    assert text(events) == "a b c "


def test_fallback_only_before_anything_was_relayed() -> None:
    provider = Scripted("openai", [ReasoningDelta("thinking..."), UpstreamError("overloaded", "busy")])
    events, _ = run(provider, SLUICE_FALLBACK_PROVIDER="demo")
    assert kinds(events)[-1] == "error" and "notice" not in kinds(events)


def test_a_cancel_reports_the_breakdown_so_far_with_estimates() -> None:
    import gevent

    class Slow(Scripted):
        def stream(self, request: ProviderRequest) -> Generator[ProviderEvent, None, None]:
            yield Usage(40, None, cache_read_input_tokens=30)
            yield ReasoningDelta("thinking")
            yield TextDelta("a")
            gevent.sleep(30)  # the model goes on; the user cancels

    settings = Settings.from_env({"SLUICE_PROVIDER": "demo", "OPENAI_API_KEY": "k", "SLUICE_ALLOWED_MODELS": "*"})
    gen = Generation("c" * 22, parse_spec({"prompt": "hi", "provider": "openai"}, settings), settings,
                     lambda name: Slow("openai"))
    gen.feed.attach()
    gen.start()
    while not any('"text"' in e.data for e in gen.journal.entries):
        gevent.sleep(0.01)
    gen.cancel("user")
    gen.join(5)
    last = json.loads(gen.journal.entries[-2].data)
    assert last["type"] == "cancelled"
    assert last["usage"] == {"input_tokens": 40, "output_tokens": 2, "cache_read_input_tokens": 30, "estimated": True}


def test_a_fallback_answers_and_is_billed_as_the_upstream() -> None:
    providers = {"openai": Scripted("openai", [UpstreamError("overloaded", "busy")]), "demo": DemoProvider(5000)}
    settings = Settings.from_env({"SLUICE_PROVIDER": "demo", "OPENAI_API_KEY": "k", "SLUICE_ALLOWED_MODELS": "*",
                                  "SLUICE_FALLBACK_PROVIDER": "demo"})
    gen = Generation("f" * 22, parse_spec({"prompt": "hi", "provider": "openai", "reasoning": "low"}, settings),
                     settings, providers.__getitem__)
    gen.feed.attach()
    gen.start()
    gen.join(20)
    events = [json.loads(e.data) for e in gen.journal.entries if e.data != "[DONE]"]
    assert kinds(events)[:2] == ["start", "notice"] and kinds(events)[-1] == "done"
    assert "reasoning" in kinds(events) and gen.upstream == "demo"
