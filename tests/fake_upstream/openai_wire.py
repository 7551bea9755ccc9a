"""The OpenAI Chat Completions streaming wire format (`POST /v1/chat/completions`)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from .script import Plan, Script, count_words, split_json

PATH = "/v1/chat/completions"

_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later"),
}

# A refusal is streamed as `delta.refusal` and ends with "stop"; content_filter is its own reason.
_FINISH = {
    "end_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "stop_sequence": "stop",
    "refusal": "stop",
    "content_filter": "content_filter",
}


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """The JSON body the API answers with a non-2xx status."""
    type_, code, default = _ERRORS.get(status, ("server_error", None, "The server had an error."))
    return {"error": {"message": message or default, "type": type_, "param": None, "code": code}}


def check_headers(headers: dict[str, str], valid_keys: frozenset[str] | None) -> tuple[int, dict[str, Any]] | None:
    """Reject a request without a bearer key, as the API does."""
    auth = headers.get("authorization", "")
    key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if not key:
        msg = "You didn't provide an API key. You need to provide your API key in an Authorization header."
        return 401, {"error": {"message": msg, "type": "invalid_request_error", "param": None, "code": None}}
    if valid_keys is not None and key not in valid_keys:
        # Like the real API: the key, masked, in the message (a provider must not pass it on).
        masked = key[:3] + "*" * max(len(key) - 7, 0) + key[-4:]
        return 401, error_body(401, f"Incorrect API key provided: {masked}.")
    return None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def inspect_body(body: dict[str, Any]) -> tuple[str, str | None, int]:
    """(text holding the directive, latest tool result or None, input tokens)."""
    directive_text = ""
    tool_result: str | None = None
    texts: list[str] = []
    for msg in body.get("messages") or []:
        text = _text_of(msg.get("content"))
        texts.append(text)
        if msg.get("role") == "user" and "[fake" in text:
            directive_text = text
        if msg.get("role") == "tool":
            tool_result = text
        for call in msg.get("tool_calls") or []:
            texts.append(call.get("function", {}).get("arguments", ""))
    return directive_text, tool_result, count_words(*texts)


def max_tokens_of(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return int(value) if value is not None else None


def _data(obj: dict[str, Any] | str) -> bytes:
    text = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def error_event(script: Script) -> bytes:
    """A mid-stream error, as OpenAI sends it: a data line holding only `error`."""
    type_ = script.error_type or "server_error"
    message = "The server had an error while processing your request. Sorry about that!"
    return _data({"error": {"message": message, "type": type_, "param": None, "code": None}})


def events(
    plan: Plan, model: str, input_tokens: int, counter: list[int], include_usage: bool
) -> Iterator[tuple[str, bytes]]:
    """("head" | "token" | "tail", bytes) in wire order; `counter[0]` = tokens sent so far."""
    base = {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        extra = {"usage": None} if include_usage else {}
        return _data({**base, "choices": [choice], **extra})

    reasoning_field = plan.think_as  # reasoning_content | reasoning | tags
    role: dict[str, Any] = {"role": "assistant", "content": None if plan.is_tool_call else "", "refusal": None}
    calls = [
        {"index": i, "id": "call_" + uuid.uuid4().hex[:24], "type": "function",
         "function": {"name": plan.tool_name, "arguments": ""}}
        for i in range(plan.tool_count if plan.is_tool_call else 0)
    ]
    if calls and not plan.reasoning:
        role["tool_calls"] = [calls[0]]  # as OpenAI does: the role chunk opens the first call
    yield "head", chunk(role)
    if reasoning_field == "tags" and plan.reasoning:
        yield "head", chunk({"content": "<think>"})
    for piece in plan.reasoning:
        yield "token", chunk({"content": piece} if reasoning_field == "tags" else {reasoning_field: piece})
    if reasoning_field == "tags" and plan.reasoning:
        yield "head", chunk({"content": "</think>\n\n"})
    # Parallel calls: each call's opening fragment, then its argument fragments, by index.
    for call in calls:
        if "tool_calls" not in role or call is not calls[0]:
            yield "head", chunk({"tool_calls": [call]})
        for piece in split_json(plan.tool_args or {}):
            yield "token", chunk({"tool_calls": [{"index": call["index"], "function": {"arguments": piece}}]})
    key = "refusal" if plan.stop_reason == "refusal" else "content"
    for piece in plan.pieces:
        yield "token", chunk({key: piece})
    finish = _FINISH.get(plan.stop_reason, plan.stop_reason)
    yield "tail", chunk({}, finish)
    if include_usage:
        sent = counter[0]
        cached = min(plan.cached, input_tokens)
        usage = {
            "prompt_tokens": input_tokens,
            "completion_tokens": sent,
            "total_tokens": input_tokens + sent,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": min(sent, len(plan.reasoning)),
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        yield "tail", _data({**base, "choices": [], "usage": usage})
    yield "tail", _data("[DONE]")

