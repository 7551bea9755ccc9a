"""OpenAI Chat Completions provider (also any OpenAI-compatible server: vLLM, Ollama, llama.cpp)."""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai

from app.config import DEFAULT_OPENAI_MODEL
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

NAME = "OpenAI"
KEY_ENV = "OPENAI_API_KEY"
DEFAULT_MODEL = DEFAULT_OPENAI_MODEL

# Connect fast, but never cut a slow answer: Sluice enforces first-token / idle timeouts itself.
DEFAULT_TIMEOUT = httpx2.Timeout(connect=10.0, read=None, write=30.0, pool=10.0)

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}


class OpenAIProvider:
    """Streams chat completions; the SDK client is made on first use, from the environment.

    `max_tokens_param`: OpenAI's own API refuses `max_tokens` for its reasoning models (gpt-5,
    o-series) and wants `max_completion_tokens`, which older compatible servers do not know.
    None (default) picks `max_completion_tokens` for api.openai.com and `max_tokens` elsewhere.
    """

    name = "openai"

    def __init__(
        self,
        default_model: str | None = None,
        *,
        client: openai.OpenAI | None = None,
        timeout: httpx2.Timeout | float | None = DEFAULT_TIMEOUT,
        max_tokens_param: str | None = None,
    ) -> None:
        self.default_model = default_model or os.environ.get("SLUICE_OPENAI_MODEL") or DEFAULT_MODEL
        self._client = client
        self._timeout = timeout
        self._max_tokens_param = max_tokens_param

    def _get_client(self) -> openai.OpenAI:
        if self._client is None:
            try:
                # max_retries=0: Sluice decides about retries (a retry would generate twice).
                self._client = openai.OpenAI(max_retries=0, timeout=self._timeout)
            except openai.OpenAIError:
                raise errs.missing_key_error(NAME, KEY_ENV) from None
        return self._client

    def stream(self, request: ProviderRequest) -> Generator[ProviderEvent, None, None]:
        """Yield TextDelta / ToolCall ..., Usage (from the final chunk), Finish."""
        started = False
        try:
            client = self._get_client()
            params = build_params(request, self._max_tokens_param or _default_max_tokens_param(client))
            with client.chat.completions.create(**params) as stream:
                started = True
                yield from _translate(stream)
        except UpstreamError:
            raise
        except openai.APIStatusError as exc:
            raise errs.status_error(NAME, exc.status_code, exc.body, exc.response.headers, KEY_ENV) from None
        except (openai.APIConnectionError, httpx2.RequestError):
            raise errs.connection_error(NAME, mid_stream=started) from None
        except openai.APIError as exc:
            # A `data: {"error": ...}` line mid-stream: APIError without a status.
            raise errs.stream_error(NAME, exc.body, KEY_ENV) from None


def _default_max_tokens_param(client: openai.OpenAI) -> str:
    host = urlsplit(str(client.base_url)).hostname or ""
    return "max_completion_tokens" if host.endswith("openai.com") else "max_tokens"


class _PendingCall:
    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []


def _translate(stream: Any) -> Iterator[ProviderEvent]:
    """Chunks -> provider events; tool calls are assembled by index and sent at finish."""
    calls: dict[int, _PendingCall] = {}
    finish: str | None = None
    last_usage: tuple[int, int] | None = None
    for chunk in stream:
        usage = chunk.usage
        if usage is not None and (usage.prompt_tokens, usage.completion_tokens) != last_usage:
            last_usage = (usage.prompt_tokens, usage.completion_tokens)
            yield Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens)
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.content:
                yield TextDelta(delta.content)
            elif getattr(delta, "refusal", None):
                yield TextDelta(delta.refusal)
            for piece in delta.tool_calls or ():
                call = calls.setdefault(piece.index, _PendingCall())
                call.id = piece.id or call.id
                if piece.function is not None:
                    call.name = piece.function.name or call.name
                    call.arguments.append(piece.function.arguments or "")
            if choice.finish_reason and finish is None:
                finish = choice.finish_reason
                for index in sorted(calls):
                    call = calls[index]
                    yield ToolCall(call.id, call.name, errs.tool_arguments(NAME, "".join(call.arguments)))
                calls.clear()
    if finish is None:
        # The body ended cleanly but without a finish_reason: the answer was cut short.
        raise errs.connection_error(NAME, mid_stream=True)
    yield Finish(_STOP_REASONS.get(finish, "end_turn"))


def build_params(request: ProviderRequest, max_tokens_param: str = "max_tokens") -> dict[str, Any]:
    """`chat.completions.create()` keyword arguments; optional fields only when set."""
    params: dict[str, Any] = {
        "model": request.model,
        "messages": convert_messages(request.messages, request.system),
        "stream": True,
        "stream_options": {"include_usage": True},
        max_tokens_param: request.max_tokens,
    }
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
            content = f"Error: {result.content}" if result.is_error else result.content
            out.append({"role": "tool", "tool_call_id": result.id, "content": content})
        if msg.role == "user" and (msg.text or not msg.tool_results):
            out.append({"role": "user", "content": msg.text})
    return out
