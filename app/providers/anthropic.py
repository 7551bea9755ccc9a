"""Anthropic Messages API provider: the SDK opens the stream, Sluice reads its bytes.

The official SDK builds the request (auth, base URL, headers) and raises its typed errors for
an answer that fails before the stream starts (`messages.with_streaming_response.create`).
The 200 body is then read off the connection's socket (`_body.RawBody`: no httpx2 / h11 per
read; the connection goes back to the pool after the last event; the SDK's internals this and
the thinking choice rely on are read in `app/seams/anthropic.py`), `_sse_parser` splits it
on large reads and `jiter` parses each event's JSON, with no SDK object per delta and no
`MessageStream` snapshot (about half a worker's CPU under load went there). Opening, reading
and closing are `_streaming.StreamingProvider`'s, shared with OpenAI; what is Anthropic's is
here: the client, the request, the errors, and the wire format, as the API sends it:

    message_start        message.usage: input_tokens, cache_read_ / cache_creation_input_tokens
    content_block_start  text | thinking | redacted_thinking | tool_use (id, name)
    content_block_delta  text_delta | thinking_delta | signature_delta | input_json_delta
    content_block_stop
    message_delta        delta.stop_reason, usage.output_tokens (+ output_tokens_details)
    message_stop
    ping                 (ignored)       error  {"type": "error", "error": {type, message}}
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import anthropic
import httpx2
from jiter import from_json

from app.errors import UpstreamError
from app.providers import _retry
from app.providers import _sdk_errors as errs
from app.providers._sse_parser import SSEvent
from app.providers._streaming import DEFAULT_TIMEOUT, StreamingProvider
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
from app.seams import anthropic as sdk

NAME = "Anthropic"
KEY_ENV = "ANTHROPIC_API_KEY"

_STOP_REASONS = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "pause_turn": "end_turn",
    "refusal": "refusal",
    "model_context_window_exceeded": "max_tokens",
}

# Budgeted thinking (`type: enabled`) is deprecated from the 4.6 models on (the SDK warns) and
# refused by later ones; they think `adaptive`ly, at an effort. Older models know only budgets.
# The SDK's own list of such models (app/seams/anthropic.py) is read first.
_ADAPTIVE_FROM = (4, 6)
# "claude-opus-4-7", "claude-sonnet-4-5-20250929", "claude-3-7-sonnet-...", "us.anthropic.claude-fable-5"
_MODEL_VERSION = re.compile(r"claude-(?:[a-z]+-)?(\d+)(?:-(\d{1,2})(?!\d))?")

JSON_INSTRUCTION = "Answer with one JSON object and nothing else: no prose, no code fences."


def telemetry_option(*, traces: bool, content: bool) -> dict[str, Any]:
    """The SDK's `open_telemetry` client option, under Sluice's rules.

    The SDK traces its own API calls (one span per call, a child of the span current when it
    is made: Sluice's `upstream anthropic`). Its spans exist only when Sluice traces
    (`traces`), and carry prompts and answers only when Sluice logs content (`content`,
    SLUICE_LOG_CONTENT): an option given to the client overrides ANTHROPIC_OPEN_TELEMETRY_*,
    so its TRACES_CONTENT_MODE cannot turn content on. ANTHROPIC_OPEN_TELEMETRY=false and
    ANTHROPIC_OPEN_TELEMETRY_PROPAGATION=false still turn the SDK's spans, or the trace
    context it sends upstream, off.
    """
    if not traces or os.environ.get("ANTHROPIC_OPEN_TELEMETRY", "").lower() == "false":
        return {"traces": False}
    option: dict[str, Any] = {"traces": {"enabled": True, "content_mode": "content" if content else "metadata_only"}}
    if os.environ.get("ANTHROPIC_OPEN_TELEMETRY_PROPAGATION", "").lower() == "false":
        option["propagation"] = False
    return option


class AnthropicProvider(StreamingProvider):
    """Streams from Anthropic; the SDK client is made on first use, from the environment.

    Its `stream()` (StreamingProvider's) yields Usage(input), ReasoningDelta / Opaque /
    TextDelta / ToolCall ..., Usage(output), Finish.
    """

    name = "anthropic"
    # The SDK's span-ending wrapper around the body's byte stream (its internals: the seam's).
    unwrap = staticmethod(sdk.traced_body)
    # An event without the fields its type always has (the SDK would fail as badly).
    malformed = (KeyError, TypeError, AttributeError)

    def __init__(
        self,
        *,
        client: anthropic.Anthropic | None = None,
        timeout: httpx2.Timeout | float | None = DEFAULT_TIMEOUT,
        retry: _retry.RetryPolicy = _retry.DEFAULT,
        open_telemetry: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(client=client, timeout=timeout, retry=retry)
        self._open_telemetry = open_telemetry if open_telemetry is not None else telemetry_option(
            traces=False, content=False
        )

    def _get_client(self) -> anthropic.Anthropic:
        if self._client is None:
            try:
                # max_retries=0: `_retry` retries the opening itself (counted, and never once
                # anything was streamed: a retry then would generate twice).
                self._client = anthropic.Anthropic(
                    max_retries=0, timeout=self._timeout, open_telemetry=self._open_telemetry  # type: ignore[arg-type]
                )
            except anthropic.CredentialsError:
                # No key in the env: the SDK then looks for a profile on disk, and fails here.
                raise errs.missing_key_error(NAME, KEY_ENV) from None
        client: anthropic.Anthropic = self._client
        if client.api_key is None and client.auth_token is None and client.credentials is None:
            raise errs.missing_key_error(NAME, KEY_ENV)
        return client

    def _opener(self, client: anthropic.Anthropic, request: ProviderRequest) -> Callable[[], Any]:
        return partial(_open_stream, client.messages.with_streaming_response, build_params(request))

    def _transient(self, exc: Exception) -> float | None:
        if isinstance(exc, anthropic.APIStatusError):
            return _retry.status_hint(exc.status_code, exc.response.headers)
        if isinstance(exc, anthropic.APIConnectionError):  # refused, reset, timed out: no answer
            return 0.0
        return None

    def _translate(self, events: Iterable[SSEvent]) -> Iterator[ProviderEvent]:
        return _translate(events)

    def _malformed(self) -> UpstreamError:
        return errs.malformed_event_error(NAME)

    def _failure(self, exc: Exception, started: bool) -> UpstreamError | None:
        if isinstance(exc, anthropic.APIStatusError):
            return errs.status_error(NAME, exc.status_code, exc.body, exc.response.headers, KEY_ENV)
        if isinstance(exc, (anthropic.APIConnectionError, httpx2.RequestError)):
            # Reading the body ourselves, a lost connection is a raw httpx2 error
            # (RemoteProtocolError, ReadError); before the answer, the SDK's APIConnectionError.
            return errs.connection_error(NAME, mid_stream=started)
        if isinstance(exc, anthropic.APIError):
            return errs.stream_error(NAME, exc.body, KEY_ENV)
        return None


def _open_stream(opener: Any, params: dict[str, Any]) -> Any:
    # The request is made on __enter__; a status >= 400 raises the SDK's typed error.
    return opener.create(**params, stream=True).__enter__()


def _translate(events: Iterable[SSEvent]) -> Iterator[ProviderEvent]:
    """The API's SSE events -> provider events. Ends with Finish, or raises `UpstreamError`
    (the skeleton turns a KeyError / TypeError / AttributeError from here into one)."""
    blocks: dict[int, _Block] = {}
    stop_reason: str | None = None
    for name, data in events:
        if name == b"ping":
            continue
        try:
            event = from_json(data, cache_mode="keys")
        except ValueError:
            raise errs.malformed_event_error(NAME) from None
        if name == b"error":
            raise errs.stream_error(NAME, event, KEY_ENV)
        kind = event.get("type")
        if kind == "content_block_delta":  # the hot path: one per token
            delta = event["delta"]
            dkind = delta.get("type")
            if dkind == "text_delta":
                text = delta["text"]
                del event, delta, data  # not kept while the next read waits
                if text:
                    yield TextDelta(text)
                continue
            block = blocks.get(event["index"])
            if block is None:
                continue
            if dkind == "thinking_delta":
                block.parts.append(delta["thinking"])
                if delta["thinking"]:
                    yield ReasoningDelta(delta["thinking"])
            elif dkind == "signature_delta":
                block.signature.append(delta["signature"])
            elif dkind == "input_json_delta":
                block.parts.append(delta["partial_json"])
        elif kind == "content_block_start":
            start = event["content_block"]
            btype = start.get("type")
            if btype == "tool_use":
                blocks[event["index"]] = _Block(start)
                yield ToolCallStart(start["id"], start["name"])
            elif btype == "thinking":
                block = blocks[event["index"]] = _Block(start)
                if start.get("thinking"):
                    block.parts.append(start["thinking"])
                    yield ReasoningDelta(start["thinking"])
                if start.get("signature"):
                    block.signature.append(start["signature"])
            elif btype == "redacted_thinking":
                # Encrypted thinking: never shown, but it must go back to the model as is.
                yield Opaque(OpaqueBlock("anthropic", dict(start)))
            del event, start, data  # not kept while the next read waits (a text block's start: the usual)
        elif kind == "content_block_stop":
            block = blocks.pop(event["index"], None)
            if block is not None:
                yield block.finish()
        elif kind == "message_start":
            # Its output_tokens is a placeholder; the count comes with message_delta.
            yield _usage(event["message"].get("usage") or {}, output=False)
        elif kind == "message_delta":
            stop_reason = (event.get("delta") or {}).get("stop_reason")
            yield _usage(event.get("usage") or {}, output=True)
        elif kind == "message_stop":
            yield Finish(_STOP_REASONS.get(stop_reason or "end_turn", "end_turn"))
            return
    # A clean end of body without message_stop: the answer was cut short.
    raise errs.connection_error(NAME, mid_stream=True)


class _Block:
    """A tool_use or thinking block whose deltas are still arriving."""

    __slots__ = ("start", "parts", "signature")

    def __init__(self, start: dict[str, Any]) -> None:
        self.start = start
        self.parts: list[str] = []
        self.signature: list[str] = []

    def finish(self) -> ProviderEvent:
        start = self.start
        if start["type"] == "tool_use":
            return ToolCall(start["id"], start["name"], errs.tool_arguments(NAME, "".join(self.parts)))
        # Returned to the model in the next tool round exactly as received, signature included.
        block = {"type": "thinking", "thinking": "".join(self.parts), "signature": "".join(self.signature)}
        return Opaque(OpaqueBlock("anthropic", block))


def _usage(usage: dict[str, Any], *, output: bool) -> Usage:
    """An API usage object -> Usage. Anthropic counts cached input apart: the bill sums them.

    message_delta's counts are cumulative (the input ones only from newer API versions).
    """
    fresh = usage.get("input_tokens")
    read = usage.get("cache_read_input_tokens")
    created = usage.get("cache_creation_input_tokens")
    details = (usage.get("output_tokens_details") or {}) if output else {}
    return Usage(
        input_tokens=None if fresh is None else fresh + (read or 0) + (created or 0),
        output_tokens=usage.get("output_tokens") if output else None,
        cache_read_input_tokens=read,
        cache_creation_input_tokens=created,
        reasoning_tokens=details.get("thinking_tokens"),
    )


def build_params(request: ProviderRequest) -> dict[str, Any]:
    """`messages.create()` keyword arguments for a request (without `stream`)."""
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
    # Extended thinking, REASONING_BUDGETS[effort] tokens (the API's minimum is 1024), added to
    # the answer's max_tokens: the API counts thinking inside max_tokens.
    budget = REASONING_BUDGETS.get(request.reasoning)
    if budget is not None:
        # display "summarized": newer models default to "omitted" (empty thinking text, which
        # would show the client no reasoning at all).
        if adaptive_thinking(request.model):
            # The model decides how much to think, at this effort; the budget still raises
            # max_tokens, so thinking does not eat the answer's own budget.
            params["thinking"] = {"type": "adaptive", "display": "summarized"}
            params["output_config"] = {"effort": request.reasoning}
        else:
            params["thinking"] = {"type": "enabled", "budget_tokens": budget, "display": "summarized"}
        params["max_tokens"] = request.max_tokens + budget
        # No temperature: the API rejects any temperature but 1 with thinking on.
    elif request.temperature is not None:
        # SDK 2.x dropped the `temperature` argument; the API still takes the field.
        params["extra_body"] = {"temperature": request.temperature}
    if request.tools:
        params["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in request.tools
        ]
    return params


def adaptive_thinking(model: str) -> bool:
    """Whether `model` takes adaptive thinking (Claude 4.6 and later) rather than a budget."""
    if sdk.listed_for_adaptive_thinking(model):  # the SDK's own list, where it has one
        return True
    found = _MODEL_VERSION.search(model)
    return found is not None and (int(found[1]), int(found[2] or 0)) >= _ADAPTIVE_FROM


def convert_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Provider-neutral turns -> Anthropic messages (tool results go in a user turn, first).

    An assistant turn's own thinking blocks go first in its content, unchanged: the API
    rejects a tool round whose assistant turn dropped or altered them.
    """
    out: list[dict[str, Any]] = []
    for msg in messages:
        opaque = [dict(b.data) for b in msg.opaque if b.provider == "anthropic"] if msg.role == "assistant" else []
        if not msg.tool_calls and not msg.tool_results and not opaque:
            out.append({"role": msg.role, "content": msg.text})
            continue
        results = [
            {"type": "tool_result", "tool_use_id": r.id, "content": r.content, "is_error": r.is_error}
            for r in msg.tool_results
        ]
        text = [{"type": "text", "text": msg.text}] if msg.text else []
        if msg.role == "assistant":
            calls = [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in msg.tool_calls]
            out.append({"role": "assistant", "content": opaque + text + calls})
            if results:
                out.append({"role": "user", "content": results})
        else:
            out.append({"role": "user", "content": results + text})
    return out
