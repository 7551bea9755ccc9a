"""The Anthropic Messages API streaming wire format (`POST /v1/messages`, `stream: true`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
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

# What current models (Claude 4.6 and later) answer to a conversation ending with an assistant turn.
PREFILL_MESSAGE = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)
_SIGNING_KEY = b"fake-upstream-thinking"
# A redacted_thinking block's `data`, as the fake issues it (the API's is encrypted).
REDACTED_DATA = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP" + "=" * 2


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


def signature(thinking: str) -> str:
    """The signature the fake gives a thinking block (checked when the block comes back)."""
    return base64.b64encode(hmac.new(_SIGNING_KEY, thinking.encode(), hashlib.sha256).digest() * 3).decode()


def think_pieces(script: Script) -> list[str]:
    """The thinking text a thinking answer streams: "r0 ", "r1 ", ..."""
    return [f"r{i} " for i in range(3 if script.think is None else script.think)]


def check_body(body: dict[str, Any], script: Script) -> tuple[int, dict[str, Any]] | None:
    """The API's 400s this fake reproduces: prefill on current models, thinking rules."""
    messages = body.get("messages") or []
    model = str(body.get("model", ""))
    if messages and messages[-1].get("role") == "assistant" and (script.prefill == "reject" or "no-prefill" in model):
        return 400, error_body(400, PREFILL_MESSAGE)
    last_assistant = None
    for i, msg in enumerate(messages):
        content = msg.get("content")
        if not isinstance(content, list):
            continue
        if msg.get("role") == "assistant":
            last_assistant = i
        for j, block in enumerate(content):
            kind = block.get("type")
            if kind == "thinking" and block.get("signature") != signature(str(block.get("thinking"))):
                return 400, error_body(400, f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")
            if kind == "redacted_thinking" and block.get("data") != REDACTED_DATA:
                return 400, error_body(400, f"messages.{i}.content.{j}: Invalid `data` in `redacted_thinking` block")
    thinking = body.get("thinking") or {}
    if thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < 1024:
        return 400, error_body(400, "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] <= budget:
        return 400, error_body(400, "`max_tokens` must be greater than `thinking.budget_tokens`.")
    if body.get("temperature", 1) != 1:
        return 400, error_body(400, "`temperature` may only be set to 1 when thinking is enabled.")
    if messages and messages[-1].get("role") == "assistant":
        last_assistant = len(messages) - 1  # a prefill: with thinking on, it too must open with thinking
    if last_assistant is not None:
        content = messages[last_assistant]["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        prefill = last_assistant == len(messages) - 1
        has_tool_use = any(b.get("type") == "tool_use" for b in content)
        first = content[0].get("type") if content else None
        if (has_tool_use or prefill) and first not in ("thinking", "redacted_thinking"):
            return 400, error_body(
                400,
                f"messages.{last_assistant}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                f"`{first}`. When `thinking` is enabled, a final `assistant` message must start with a thinking "
                "block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you "
                "include thinking blocks from previous turns. To avoid this requirement, disable `thinking`.",
            )
    return None


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


def events(
    plan: Plan,
    model: str,
    input_tokens: int,
    counter: list[int],
    script: Script | None = None,
    thinking: bool = False,
) -> Iterator[tuple[str, bytes]]:
    """("head" | "token" | "tail", bytes) in wire order; `counter[0]` = tokens sent so far.

    With `thinking` on, a thinking block (and a redacted_thinking one if the script says so)
    comes first, as "head": the directives' token counts are the answer's alone.
    """
    script = script or Script()
    message: dict[str, Any] = {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": script.cache_write,
            "cache_read_input_tokens": script.cache_read,
            "output_tokens": 1,
        },
    }
    yield "head", sse("message_start", {"type": "message_start", "message": message})
    index = 0
    thought = 0
    if thinking:
        pieces = think_pieces(script)
        thought = len(pieces)
        yield "head", _block_start(index, {"type": "thinking", "thinking": "", "signature": ""})
        for piece in pieces:
            yield "head", _block_delta(index, {"type": "thinking_delta", "thinking": piece})
        yield "head", _block_delta(index, {"type": "signature_delta", "signature": signature("".join(pieces))})
        yield "head", _block_stop(index)
        index += 1
        if script.redacted:
            yield "head", _block_start(index, {"type": "redacted_thinking", "data": REDACTED_DATA})
            yield "head", _block_stop(index)
            index += 1
    if plan.is_tool_call:
        # `calls=N`: N tool_use blocks in one answer (parallel tool calls), the same arguments.
        for n in range(plan.tool_count):
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": "toolu_" + uuid.uuid4().hex[:24],
                "name": plan.tool_name,
                "input": {},
            }
            yield "head", _block_start(index, block)
            if n == 0:
                yield "head", ping()
            for piece in split_json(plan.tool_args or {}):
                yield "token", _block_delta(index, {"type": "input_json_delta", "partial_json": piece})
            yield "tail", _block_stop(index)
            index += 1
    else:
        yield "head", _block_start(index, {"type": "text", "text": ""})
        yield "head", ping()
        for piece in plan.pieces:
            yield "token", _block_delta(index, {"type": "text_delta", "text": piece})
        yield "tail", _block_stop(index)
    yield (
        "tail",
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _STOP.get(plan.stop_reason, plan.stop_reason), "stop_sequence": None},
                "usage": {"output_tokens": counter[0] + thought, **_details(thinking, thought)},
            },
        ),
    )
    yield "tail", sse("message_stop", {"type": "message_stop"})


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    return sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def _block_delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def _block_stop(index: int) -> bytes:
    return sse("content_block_stop", {"type": "content_block_stop", "index": index})


def _details(thinking: bool, thought: int) -> dict[str, Any]:
    return {"output_tokens_details": {"thinking_tokens": thought}} if thinking else {}
