"""OpenAI Responses API provider (`SLUICE_OPENAI_API=responses`): `POST /v1/responses`.

Same client, retries, error mapping and lean body reading as the Chat Completions provider
(`_openai_common`); only the request and the event vocabulary differ:

    response.output_text.delta                       -> TextDelta
    response.refusal.delta                           -> TextDelta, then Finish("refusal")
    response.reasoning_summary_text.delta,
    response.reasoning_text.delta                    -> ReasoningDelta
    response.output_item.added (function_call)       -> ToolCallStart
    response.output_item.done (function_call)        -> ToolCall + Opaque (the item, verbatim)
    response.output_item.done (reasoning)            -> Opaque (the item, verbatim)
    response.completed                               -> Usage, Finish(end_turn | tool_use | refusal)
    response.incomplete                              -> Usage, Finish(max_tokens | content_filter)
    response.failed, error                           -> UpstreamError, typed by the error's code

The reasoning and function-call items go back to the API in the next tool round exactly as
they came (their ids link a call to the reasoning that led to it). `store` is left at the
API's default, so an item sent back by id is found.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import openai
from jiter import from_json

from app.providers import _openai_common as common
from app.providers._openai_common import OpenAIBase
from app.providers._sse_parser import SSEvent
from app.providers.base import (
    REASONING_BUDGETS,
    Finish,
    Message,
    Opaque,
    OpaqueBlock,
    ProviderEvent,
    ProviderRequest,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallStart,
    Usage,
)

OPAQUE = "openai"  # OpaqueBlock.provider of the items this provider hands back to itself

_INCOMPLETE = {"max_output_tokens": "max_tokens", "content_filter": "content_filter"}
_REASONING_DELTAS = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_text.delta"})


class OpenAIResponsesProvider(OpenAIBase):
    """Streams from the Responses API; the SDK client is made on first use, from the env."""

    def _params(self, client: openai.OpenAI, request: ProviderRequest) -> tuple[Any, dict[str, Any]]:
        return client.responses.with_streaming_response.create, build_params(request)

    def _translate(self, events: Iterable[SSEvent]) -> Iterator[ProviderEvent]:
        return translate(events)


def translate(events: Iterable[SSEvent]) -> Iterator[ProviderEvent]:
    """Responses API events -> provider events; ends at the response's terminal event."""
    calls = 0
    refused = False
    for _name, data in events:
        event = from_json(data)
        if not isinstance(event, dict):
            raise common.stream_error(None)  # not an event at all: a broken upstream
        kind = event.get("type")
        if kind == "response.output_text.delta":
            yield TextDelta(event.get("delta") or "")
        elif kind in _REASONING_DELTAS:
            yield ReasoningDelta(event.get("delta") or "")
        elif kind == "response.reasoning_summary_part.added" and event.get("summary_index"):
            yield ReasoningDelta("\n\n")  # summary parts are paragraphs of one summary
        elif kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                yield ToolCallStart(item.get("call_id", ""), item.get("name", ""))
        elif kind == "response.output_item.done":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                calls += 1
                arguments = common.tool_arguments(item.get("arguments", ""))
                yield ToolCall(item.get("call_id", ""), item.get("name", ""), arguments)
                yield Opaque(OpaqueBlock(OPAQUE, item))
            elif item.get("type") == "reasoning":
                yield Opaque(OpaqueBlock(OPAQUE, item))
        elif kind == "response.refusal.delta":
            refused = True
            yield TextDelta(event.get("delta") or "")
        elif kind == "response.completed":
            response = event.get("response") or {}
            yield _usage(response.get("usage"))
            yield Finish("tool_use" if calls else "refusal" if refused else "end_turn")
            return
        elif kind == "response.incomplete":
            response = event.get("response") or {}
            yield _usage(response.get("usage"))
            reason = (response.get("incomplete_details") or {}).get("reason")
            yield Finish(_INCOMPLETE.get(reason or "", "max_tokens"))
            return
        elif kind == "response.failed":
            raise common.stream_error((event.get("response") or {}).get("error") or {})
        elif kind == "error":
            raise common.stream_error(event.get("error") or event)
    # The body ended without a terminal event: the answer was cut short.
    raise common.connection_error(mid_stream=True)


def _usage(usage: dict[str, Any] | None) -> Usage:
    usage = usage or {}
    return Usage(
        input_tokens=usage.get("input_tokens"),
        output_tokens=usage.get("output_tokens"),
        cache_read_input_tokens=(usage.get("input_tokens_details") or {}).get("cached_tokens"),
        reasoning_tokens=(usage.get("output_tokens_details") or {}).get("reasoning_tokens"),
    )


def build_params(request: ProviderRequest) -> dict[str, Any]:
    """`responses.create()` keyword arguments; optional fields only when set."""
    params: dict[str, Any] = {
        "model": request.model,
        "input": convert_messages(request.messages),
        "stream": True,
        "max_output_tokens": common.token_budget(request),
    }
    if request.system:
        params["instructions"] = request.system
    if request.reasoning in REASONING_BUDGETS:
        params["reasoning"] = {"effort": request.reasoning, "summary": "auto"}
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.tools:
        params["tools"] = [
            {"type": "function", "name": t.name, "description": t.description, "parameters": t.input_schema}
            for t in request.tools
        ]
    if request.json_mode:
        params["text"] = {"format": {"type": "json_object"}}
    return params


def convert_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Provider-neutral turns -> input items.

    An assistant tool round is its text, then its reasoning and function-call items as the API
    returned them (Opaque), then any call that has no such item (e.g. from another provider);
    each tool result is a `function_call_output` item.
    """
    out: list[dict[str, Any]] = []
    for msg in messages:
        if msg.role == "assistant":
            if msg.text:
                out.append({"role": "assistant", "content": msg.text})
            items = [block.data for block in msg.opaque if block.provider == OPAQUE]
            out.extend(items)
            echoed = {item.get("call_id") for item in items if item.get("type") == "function_call"}
            out.extend(
                {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": json.dumps(c.arguments)}
                for c in msg.tool_calls
                if c.id not in echoed
            )
        out.extend(
            {"type": "function_call_output", "call_id": r.id, "output": common.result_text(r)}
            for r in msg.tool_results
        )
        if msg.role == "user" and (msg.text or not msg.tool_results):
            out.append({"role": "user", "content": msg.text})
    return out
