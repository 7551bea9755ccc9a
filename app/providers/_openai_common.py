"""What both OpenAI providers (Chat Completions, Responses) share: client, opening, errors.

The stream is opened with the SDK's `with_streaming_response` (typed errors for a non-2xx
answer, auth, base URL), retried while the failure is transient and nothing was streamed
(`_retry`), and its body is read off the connection (`_body.RawBody`) with the SSE parser: that
skeleton is `_streaming.StreamingProvider`'s, shared with Anthropic. Here are OpenAI's client,
transient failures and error mapping; each subclass builds its request and turns the
`(event, data)` pairs into provider events.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import httpx2
import openai

from app.errors import UpstreamError
from app.providers import _retry
from app.providers import _sdk_errors as errs
from app.providers._streaming import DEFAULT_TIMEOUT, StreamingProvider
from app.providers.base import REASONING_BUDGETS, ProviderRequest, ToolResultPart

NAME = "OpenAI"
KEY_ENV = "OPENAI_API_KEY"

# With reasoning on, the model's thinking counts against the output limit OpenAI enforces
# (max_completion_tokens / max_output_tokens), so Sluice asks for the answer's max_tokens PLUS
# REASONING_BUDGETS[effort] (app.providers.base). The answer itself is still bounded by
# max_tokens only loosely: the upstream cannot split its limit between thinking and answer.


def token_budget(request: ProviderRequest) -> int:
    """The output limit to ask for: max_tokens, plus the thinking budget when reasoning is on."""
    return request.max_tokens + REASONING_BUDGETS.get(request.reasoning, 0)


def result_text(result: ToolResultPart) -> str:
    """A tool result as the model reads it (errors say so)."""
    return f"Error: {result.content}" if result.is_error else result.content


def stream_error(body: object) -> UpstreamError:
    """An error the upstream reported inside its 200 stream."""
    return errs.stream_error(NAME, body, KEY_ENV)


def connection_error(mid_stream: bool) -> UpstreamError:
    return errs.connection_error(NAME, mid_stream=mid_stream)


def tool_arguments(text: str) -> dict[str, Any]:
    return errs.tool_arguments(NAME, text)


class OpenAIBase(StreamingProvider):
    """OpenAI's client, transient failures and error mapping; subclasses build and parse."""

    name = "openai"

    def __init__(
        self,
        *,
        client: openai.OpenAI | None = None,
        timeout: httpx2.Timeout | float | None = DEFAULT_TIMEOUT,
        retry: _retry.RetryPolicy = _retry.DEFAULT,
    ) -> None:
        super().__init__(client=client, timeout=timeout, retry=retry)

    def _get_client(self) -> openai.OpenAI:
        if self._client is None:
            try:
                # max_retries=0: Sluice retries itself (`_retry`), counted and bounded.
                self._client = openai.OpenAI(max_retries=0, timeout=self._timeout)
            except openai.OpenAIError:
                raise errs.missing_key_error(NAME, KEY_ENV) from None
        client: openai.OpenAI = self._client
        return client

    def _params(self, client: openai.OpenAI, request: ProviderRequest) -> tuple[Any, dict[str, Any]]:
        """The SDK's `with_streaming_response....create` and its keyword arguments for `request`."""
        raise NotImplementedError

    def _opener(self, client: openai.OpenAI, request: ProviderRequest) -> Callable[[], Any]:
        create, params = self._params(client, request)
        return partial(_open_stream, create, params)

    def _transient(self, exc: Exception) -> float | None:
        if isinstance(exc, openai.APIStatusError):
            return _retry.status_hint(exc.status_code, exc.response.headers)
        if isinstance(exc, (openai.APIConnectionError, httpx2.TransportError)):
            return 0.0  # refused, reset or timed out before an answer
        return None

    def _failure(self, exc: Exception, started: bool) -> UpstreamError | None:
        if isinstance(exc, openai.APIStatusError):
            return errs.status_error(NAME, exc.status_code, exc.body, exc.response.headers, KEY_ENV)
        if isinstance(exc, (openai.APIConnectionError, httpx2.RequestError)):
            # Mid-stream, reading the body raises raw httpx2 errors (RemoteProtocolError, ReadError).
            return errs.connection_error(NAME, mid_stream=started)
        if isinstance(exc, ValueError):
            # jiter: a malformed JSON event.
            return errs.stream_error(NAME, None, KEY_ENV)
        return None


def _open_stream(create: Any, params: dict[str, Any]) -> Any:
    # The request is made on __enter__; a status >= 400 raises the SDK's typed error.
    return create(**params).__enter__()
