"""Anthropic Messages API provider, through the official SDK's `messages.stream()`."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

import anthropic
import httpx2

from app.config import DEFAULT_ANTHROPIC_MODEL
from app.errors import UpstreamError
from app.providers import _sdk_errors as errs
from app.providers.base import (
    Finish,
    Message,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    ToolCall,
    Usage,
)

NAME = "Anthropic"
KEY_ENV = "ANTHROPIC_API_KEY"
DEFAULT_MODEL = DEFAULT_ANTHROPIC_MODEL

# Connect fast, but never cut a slow answer: Sluice enforces first-token / idle timeouts itself.
DEFAULT_TIMEOUT = httpx2.Timeout(connect=10.0, read=None, write=30.0, pool=10.0)

_STOP_REASONS = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "pause_turn": "end_turn",
    "refusal": "content_filter",
    "model_context_window_exceeded": "max_tokens",
}

JSON_INSTRUCTION = "Answer with one JSON object and nothing else: no prose, no code fences."


class AnthropicProvider:
    """Streams from Anthropic; the SDK client is made on first use, from the environment."""

    name = "anthropic"

    def __init__(
        self,
        default_model: str | None = None,
        *,
        client: anthropic.Anthropic | None = None,
        timeout: httpx2.Timeout | float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self.default_model = default_model or os.environ.get("SLUICE_ANTHROPIC_MODEL") or DEFAULT_MODEL
        self._client = client
        self._timeout = timeout

    def _get_client(self) -> anthropic.Anthropic:
        if self._client is None:
            try:
                # max_retries=0: Sluice decides about retries (a retry would generate twice).
                self._client = anthropic.Anthropic(max_retries=0, timeout=self._timeout)
            except anthropic.CredentialsError:
                # No key in the env: the SDK then looks for a profile on disk, and fails here.
                raise errs.missing_key_error(NAME, KEY_ENV) from None
        client = self._client
        if client.api_key is None and client.auth_token is None and client.credentials is None:
            raise errs.missing_key_error(NAME, KEY_ENV)
        return client

    def stream(self, request: ProviderRequest) -> Generator[ProviderEvent, None, None]:
        """Yield Usage(input), TextDelta / ToolCall ..., Usage(output), Finish."""
        params = build_params(request)
        started = False
        try:
            client = self._get_client()
            with client.messages.stream(**params) as stream:
                started = True
                yield from _translate(stream)
        except UpstreamError:
            raise
        except anthropic.APIStatusError as exc:
            raise errs.status_error(NAME, exc.status_code, exc.body, exc.response.headers, KEY_ENV) from None
        except (anthropic.APIConnectionError, httpx2.RequestError):
            # Mid-stream, the SDK lets raw httpx2 errors through (RemoteProtocolError, ReadError).
            raise errs.connection_error(NAME, mid_stream=started) from None
        except anthropic.APIError as exc:
            raise errs.stream_error(NAME, exc.body, KEY_ENV) from None


def _translate(stream: Any) -> Iterator[ProviderEvent]:
    """SDK stream events -> provider events (ignores the helper's synthesized `text` events)."""
    tools: dict[int, tuple[str, str, list[str]]] = {}
    stop_reason: str | None = None
    for event in stream:
        kind = event.type
        if kind == "message_start":
            yield Usage(input_tokens=event.message.usage.input_tokens)
        elif kind == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                tools[event.index] = (block.id, block.name, [])
        elif kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta" and delta.text:
                yield TextDelta(delta.text)
            elif delta.type == "input_json_delta" and event.index in tools:
                tools[event.index][2].append(delta.partial_json)
        elif kind == "content_block_stop" and event.index in tools:
            call_id, name, parts = tools.pop(event.index)
            yield ToolCall(call_id, name, errs.tool_arguments(NAME, "".join(parts)))
        elif kind == "message_delta":
            stop_reason = event.delta.stop_reason
            yield Usage(output_tokens=event.usage.output_tokens)
        elif kind == "message_stop":
            yield Finish(_STOP_REASONS.get(stop_reason or "end_turn", "end_turn"))
            return
    # A clean end of body without message_stop: the answer was cut short.
    raise errs.connection_error(NAME, mid_stream=True)


def build_params(request: ProviderRequest) -> dict[str, Any]:
    """`messages.stream()` keyword arguments for a request."""
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": convert_messages(request.messages),
    }
    system = request.system or ""
    if request.json_mode:
        # The Messages API has no free-form JSON mode; the caller validates the result.
        system = f"{system}\n\n{JSON_INSTRUCTION}".strip()
    if system:
        params["system"] = system
    if request.temperature is not None:
        # SDK 2.x dropped the `temperature` argument; the API still takes the field.
        params["extra_body"] = {"temperature": request.temperature}
    if request.tools:
        params["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in request.tools
        ]
    return params


def convert_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Provider-neutral turns -> Anthropic messages (tool results go in a user turn, first)."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        if not msg.tool_calls and not msg.tool_results:
            out.append({"role": msg.role, "content": msg.text})
            continue
        results = [
            {"type": "tool_result", "tool_use_id": r.id, "content": r.content, "is_error": r.is_error}
            for r in msg.tool_results
        ]
        text = [{"type": "text", "text": msg.text}] if msg.text else []
        if msg.role == "assistant":
            calls = [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in msg.tool_calls]
            out.append({"role": "assistant", "content": text + calls})
            if results:
                out.append({"role": "user", "content": results})
        else:
            out.append({"role": "user", "content": results + text})
    return out
