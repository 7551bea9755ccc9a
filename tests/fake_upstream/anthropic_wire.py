"""The Anthropic Messages API streaming wire format (`POST /v1/messages`, `stream: true`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from .script import Plan, Script, count_words, split_json

PATH = "/v1/messages"

_ERROR_TYPES = {
    400: ("invalid_request_error", "messages: field required"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}


# The API's own word for a filtered answer.
_STOP = {"content_filter": "refusal"}


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """The JSON body the API answers with a non-2xx status."""
    type_, default = _ERROR_TYPES.get(status, ("api_error", "Internal server error"))
    return {
        "type": "error",
        "error": {"type": type_, "message": message or default},
        "request_id": "req_" + uuid.uuid4().hex[:24],
    }


def check_headers(headers: dict[str, str], valid_keys: frozenset[str] | None) -> tuple[int, dict[str, Any]] | None:
    """Reject a request without a key or `anthropic-version`, as the API does."""
    key = headers.get("x-api-key") or _bearer(headers.get("authorization"))
    if not key:
        return 401, error_body(401, "x-api-key header is required")
    if valid_keys is not None and key not in valid_keys:
        return 401, error_body(401, "invalid x-api-key")
    if not headers.get("anthropic-version"):
        return 400, error_body(400, "anthropic-version: header is required")
    return None


def _bearer(value: str | None) -> str | None:
    # SDK 2.x sends the API key as `Authorization: Bearer`; the API accepts either.
    if value and value.lower().startswith("bearer "):
        return value[7:].strip() or None
    return None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text_of(b.get("text", b.get("content", ""))) for b in content if isinstance(b, dict))
    return ""


def inspect_body(body: dict[str, Any]) -> tuple[str, str | None, int]:
    """(text holding the directive, latest tool result or None, input tokens)."""
    directive_text = ""
    tool_result: str | None = None
    texts: list[str] = [_text_of(body.get("system"))]
    for msg in body.get("messages") or []:
        content = msg.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        for block in blocks:
            kind = block.get("type")
            if kind == "text":
                texts.append(block.get("text", ""))
                if msg.get("role") == "user" and "[fake" in block.get("text", ""):
                    directive_text = block["text"]
            elif kind == "tool_result":
                tool_result = _text_of(block.get("content"))
                texts.append(tool_result)
            elif kind == "tool_use":
                texts.append(json.dumps(block.get("input", {})))
    return directive_text, tool_result, count_words(*texts)


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One named SSE event, as the API frames it."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def ping() -> bytes:
    return sse("ping", {"type": "ping"})


def error_event(script: Script) -> bytes:
    """The mid-stream error event (the API then ends the stream)."""
    type_ = script.error_type or "overloaded_error"
    message = "Overloaded" if type_ == "overloaded_error" else "Internal server error"
    return sse("error", {"type": "error", "error": {"type": type_, "message": message}})


def events(plan: Plan, model: str, input_tokens: int, counter: list[int]) -> Iterator[tuple[str, bytes]]:
    """("head" | "token" | "tail", bytes) in wire order; `counter[0]` = tokens sent so far."""
    message: dict[str, Any] = {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    yield "head", sse("message_start", {"type": "message_start", "message": message})
    if plan.is_tool_call:
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": "toolu_" + uuid.uuid4().hex[:24],
            "name": plan.tool_name,
            "input": {},
        }
        pieces = split_json(plan.tool_args or {})
    else:
        block = {"type": "text", "text": ""}
        pieces = plan.pieces
    yield "head", sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
    yield "head", ping()
    for piece in pieces:
        if plan.is_tool_call:
            delta = {"type": "input_json_delta", "partial_json": piece}
        else:
            delta = {"type": "text_delta", "text": piece}
        yield "token", sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
    yield "tail", sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield (
        "tail",
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _STOP.get(plan.stop_reason, plan.stop_reason), "stop_sequence": None},
                "usage": {"output_tokens": counter[0]},
            },
        ),
    )
    yield "tail", sse("message_stop", {"type": "message_stop"})
