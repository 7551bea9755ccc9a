"""What both OpenAI providers (Chat Completions, Responses) share: client, opening, errors.

The stream is opened with the SDK's `with_streaming_response` (typed errors for a non-2xx
answer, auth, base URL), retried while the failure is transient and nothing was streamed
(`_retry`), and its body is read off the connection (`_body.RawBody`) with the SSE splitter; each subclass turns the
`(event, data)` pairs into provider events. Closing the generator closes the response.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from typing import Any

import httpx2
import openai

from app.errors import UpstreamError
from app.providers import _retry
from app.providers import _sdk_errors as errs
from app.providers._body import RawBody
from app.providers._sse import SSEvent, iter_events_from
from app.providers.base import REASONING_BUDGETS as REASONING_BUDGETS  # re-exported: the OpenAI modules read it here
from app.providers.base import ProviderEvent, ProviderRequest, ToolResultPart

NAME = "OpenAI"
KEY_ENV = "OPENAI_API_KEY"

# Connect fast, but never cut a slow answer: Sluice enforces first-token / idle timeouts itself.
DEFAULT_TIMEOUT = httpx2.Timeout(connect=10.0, read=None, write=30.0, pool=10.0)

# With reasoning on, the model's thinking counts against the output limit OpenAI enforces
# (max_completion_tokens / max_output_tokens), so Sluice asks for the answer's max_tokens PLUS
# REASONING_BUDGETS[effort] (app.providers.base). The answer itself is still bounded by max_tokens only loosely: the
# upstream cannot split its limit between thinking and answer.

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


def transient(exc: Exception) -> float | None:
    """For `_retry`: None if `exc` is final, else the wait the server asked for (0: none)."""
    if isinstance(exc, openai.APIStatusError):
        return _retry.status_hint(exc.status_code, exc.response.headers)
    if isinstance(exc, (openai.APIConnectionError, httpx2.TransportError)):
        return 0.0  # refused, reset or timed out before an answer
    return None


class OpenAIBase:
    """Client on first use, stream opening with retries, error mapping; subclasses parse."""

    name = "openai"

    def __init__(
        self,
        *,
        client: openai.OpenAI | None = None,
        timeout: httpx2.Timeout | float | None = DEFAULT_TIMEOUT,
        retry: _retry.RetryPolicy = _retry.DEFAULT,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._retry = retry

    def _get_client(self) -> openai.OpenAI:
        if self._client is None:
            try:
                # max_retries=0: Sluice retries itself (`_retry`), counted and bounded.
                self._client = openai.OpenAI(max_retries=0, timeout=self._timeout)
            except openai.OpenAIError:
                raise errs.missing_key_error(NAME, KEY_ENV) from None
        return self._client

    def _open(self, client: openai.OpenAI, request: ProviderRequest) -> Any:
        """The SDK's `with_streaming_response....create(...)` context manager for `request`."""
        raise NotImplementedError

    def _translate(self, events: Iterable[SSEvent]) -> Iterator[ProviderEvent]:
        raise NotImplementedError

    def stream(self, request: ProviderRequest) -> Generator[ProviderEvent, None, None]:
        """Yield this request's provider events; raise `UpstreamError` on failure."""
        started = False
        try:
            client = self._get_client()

            def attempt() -> Any:
                return self._open(client, request).__enter__()

            response = _retry.open_with_retries(attempt, transient, provider=self.name, policy=self._retry)
            body = RawBody(response.http_response)
            del response, attempt  # RawBody keeps what it needs of the response
            try:
                started = True
                yield from self._translate(iter_events_from(body.read))
                body.finish()  # the body's last chunk: then closing pools the connection
            finally:
                # Also on GeneratorExit / GreenletExit: a cancel closes the upstream at once.
                body.close()
        except UpstreamError:
            raise
        except openai.APIStatusError as exc:
            raise errs.status_error(NAME, exc.status_code, exc.body, exc.response.headers, KEY_ENV) from None
        except (openai.APIConnectionError, httpx2.RequestError):
            # Mid-stream, reading the body raises raw httpx2 errors (RemoteProtocolError, ReadError).
            raise errs.connection_error(NAME, mid_stream=started) from None
        except ValueError:
            # jiter: a malformed JSON event.
            raise errs.stream_error(NAME, None, KEY_ENV) from None
