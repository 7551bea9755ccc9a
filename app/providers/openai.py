"""OpenAI Chat Completions provider (also any OpenAI-compatible server: vLLM, Ollama, llama.cpp).

The SDK builds the request, authenticates, picks the base URL and raises its typed errors for
an answer that fails before the stream starts. The streaming body is read here: `_sse_parser`'s
splitter over large reads and `jiter` per chunk, no SDK object per chunk (the SDK's typed
chunks were half of a worker's CPU under load).

Fields beyond the SDK's chunk type that servers send, and where they go:

    delta.reasoning_content (llama.cpp, older vLLM) / delta.reasoning (Ollama, newer vLLM)
        -> ReasoningDelta, never text
    <think>...</think> opening the content (some servers inline it)
        -> ReasoningDelta, only with think_tags=True (SLUICE_OPENAI_THINK_TAGS=1)
    delta.refusal -> TextDelta, then Finish("refusal")
    usage.prompt_tokens (cached included) / prompt_tokens_details.cached_tokens /
    completion_tokens_details.reasoning_tokens -> Usage
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import openai
from jiter import from_json

from app.providers import _openai_common as common
from app.providers._openai_common import OpenAIBase
from app.providers._sse_parser import SSEvent
from app.providers._think_tags import ThinkTags
from app.providers.base import (
    REASONING_BUDGETS,
    Finish,
    Message,
    ProviderEvent,
    ProviderRequest,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallStart,
    Usage,
)

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}


class OpenAIProvider(OpenAIBase):
    """Streams chat completions; the SDK client is made on first use, from the environment.

    `max_tokens_param`: OpenAI's own API refuses `max_tokens` for its reasoning models (gpt-5,
    o-series) and wants `max_completion_tokens`, which older compatible servers do not know.
    None (default) picks `max_completion_tokens` for api.openai.com and `max_tokens` elsewhere.
    `think_tags`: read a `<think>...</think>` that opens the content as reasoning.
    """

    def __init__(
        self,
        *,
        max_tokens_param: str | None = None,
        think_tags: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._max_tokens_param = max_tokens_param
        self._think_tags = think_tags

    def _params(self, client: openai.OpenAI, request: ProviderRequest) -> tuple[Any, dict[str, Any]]:
        params = build_params(request, self._max_tokens_param or _default_max_tokens_param(client))
        return client.chat.completions.with_streaming_response.create, params

    def _translate(self, events: Iterable[SSEvent]) -> Iterator[ProviderEvent]:
        return translate(events, self._think_tags)


def _default_max_tokens_param(client: openai.OpenAI) -> str:
    host = urlsplit(str(client.base_url)).hostname or ""
    return "max_completion_tokens" if host.endswith("openai.com") else "max_tokens"


class _PendingCall:
    __slots__ = ("id", "name", "arguments", "started")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []
        self.started = False


def translate(events: Iterable[SSEvent], think_tags: bool = False) -> Iterator[ProviderEvent]:
    """Chunks -> provider events; tool calls are assembled by index and sent at finish."""
    calls: dict[int, _PendingCall] = {}
    tags = ThinkTags() if think_tags else None
    finish: str | None = None
    refused = False
    last_usage: Any = None
    for _name, data in events:
        if data[:6] == b"[DONE]":
            break
        chunk = from_json(data)
        if not isinstance(chunk, dict):
            raise common.stream_error(None)  # not a chunk at all: a broken upstream
        if chunk.get("error"):
            # A `data: {"error": ...}` line after the 200.
            raise common.stream_error(chunk)
        usage = chunk.get("usage")
        if usage and usage != last_usage:
            # Some servers repeat usage on every chunk (vLLM's continuous usage stats).
            last_usage = usage
            yield _usage(usage)
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and isinstance(reasoning, str):
                yield ReasoningDelta(reasoning)
            content = delta.get("content")
            if content:
                if tags is None:
                    yield TextDelta(content)
                else:
                    yield from tags.feed(content)
            refusal = delta.get("refusal")
            if refusal:
                refused = True
                yield TextDelta(refusal)
            for piece in delta.get("tool_calls") or ():
                yield from _call_fragment(calls, piece)
            reason = choice.get("finish_reason")
            if reason and finish is None:
                finish = reason
                if tags is not None:
                    yield from tags.flush()
                for index in sorted(calls):
                    call = calls[index]
                    yield ToolCall(call.id, call.name, common.tool_arguments("".join(call.arguments)))
                calls.clear()
    if finish is None:
        # The body ended cleanly but without a finish_reason: the answer was cut short.
        raise common.connection_error(mid_stream=True)
    if refused and finish == "stop":
        yield Finish("refusal")
    else:
        yield Finish(_STOP_REASONS.get(finish, "end_turn"))


def _call_fragment(calls: dict[int, _PendingCall], piece: dict[str, Any]) -> Iterator[ProviderEvent]:
    index = piece.get("index", 0)
    call = calls.get(index)
    if call is None:
        call = calls[index] = _PendingCall()
    if piece.get("id"):
        call.id = piece["id"]
    function = piece.get("function")
    if function:
        if function.get("name"):
            call.name = function["name"]
        if function.get("arguments"):
            call.arguments.append(function["arguments"])
    if not call.started and call.name:
        call.started = True
        if not call.id:
            # Some compatible servers send no id; the tool loop needs one to pair the result.
            call.id = "call_" + uuid.uuid4().hex[:24]
        yield ToolCallStart(call.id, call.name)


def _usage(usage: dict[str, Any]) -> Usage:
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    return Usage(
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        cache_read_input_tokens=cached,
        reasoning_tokens=reasoning,
    )


def build_params(request: ProviderRequest, max_tokens_param: str = "max_tokens") -> dict[str, Any]:
    """`chat.completions.create()` keyword arguments; optional fields only when set."""
    params: dict[str, Any] = {
        "model": request.model,
        "messages": convert_messages(request.messages, request.system),
        "stream": True,
        "stream_options": {"include_usage": True},
        max_tokens_param: common.token_budget(request),
    }
    if request.reasoning in REASONING_BUDGETS:
        params["reasoning_effort"] = request.reasoning
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.tools:
        params["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
            }
            for t in request.tools
        ]
    if request.json_mode:
        params["response_format"] = {"type": "json_object"}
    return params


def convert_messages(messages: tuple[Message, ...], system: str | None) -> list[dict[str, Any]]:
    """Provider-neutral turns -> chat messages (each tool result is its own `tool` message)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for msg in messages:
        if msg.role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": msg.text}
            if msg.tool_calls:
                entry["content"] = msg.text or None
                entry["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                    for c in msg.tool_calls
                ]
            out.append(entry)
        for result in msg.tool_results:
            out.append({"role": "tool", "tool_call_id": result.id, "content": common.result_text(result)})
        if msg.role == "user" and (msg.text or not msg.tool_results):
            out.append({"role": "user", "content": msg.text})
    return out
