"""The read path the SDK-backed providers share (Anthropic, OpenAI Chat Completions, Responses).

    stream(request)
      _opener(client, request)      the SDK's `with_streaming_response....create(...)`: a 2xx or
                                    its typed error; retried while transient, before any event
      RawBody(response)             the 200 body, read off the connection's socket
      _translate(iter_events_from(body.read))
                                    (event, data) pairs -> provider events (the per-token path)
      body.finish(), body.close()   the last chunk pools the connection; close cuts the upstream,
                                    also on GeneratorExit / GreenletExit (a cancel, a disconnect)

A vendor fills in the hooks (`_get_client`, `_opener`, `_transient`, `_translate`, `_failure`);
`stream` itself is written once, here. Trap: keep `_translate` a call that *returns* the
translating generator, not a generator of its own: every generator level between the producer
and its socket wait is C stack that the greenlet saves while it waits, per open stream.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

import httpx2

from app.errors import UpstreamError
from app.providers import _retry
from app.providers._body import RawBody
from app.providers._sse_parser import SSEvent, iter_events_from
from app.providers.base import ProviderEvent, ProviderRequest
from app.seams.httpcore import Unwrap

# Connect fast, but never cut a slow answer: Sluice enforces first-token / idle timeouts itself.
DEFAULT_TIMEOUT = httpx2.Timeout(connect=10.0, read=None, write=30.0, pool=10.0)


class StreamingProvider:
    """A provider whose stream a vendor SDK opens and Sluice reads (see the module docstring)."""

    name: str

    unwrap: Unwrap | None = None
    """Takes a vendor SDK's own wrapper off the response's byte stream (see `RawBody`)."""

    malformed: tuple[type[Exception], ...] = ()
    """What `_translate` raises for an event without the fields its type always has; it
    becomes `_malformed()` (only while translating: the same error elsewhere is a bug)."""

    def __init__(self, *, client: Any = None, timeout: httpx2.Timeout | float | None = DEFAULT_TIMEOUT,
                 retry: _retry.RetryPolicy = _retry.DEFAULT) -> None:
        self._client = client
        self._timeout = timeout
        self.retry = retry

    # -- the hooks ----------------------------------------------------------------------------

    def _get_client(self) -> Any:
        """The SDK client, made on first use (max_retries=0: `_retry` retries, counted)."""
        raise NotImplementedError

    def _opener(self, client: Any, request: ProviderRequest) -> Callable[[], Any]:
        """One attempt at opening: returns the SDK's entered streaming response."""
        raise NotImplementedError

    def _transient(self, exc: Exception) -> float | None:
        """For `_retry`: None if `exc` is final, else the wait the server asked for (0: none)."""
        raise NotImplementedError

    def _translate(self, events: Iterable[SSEvent]) -> Iterator[ProviderEvent]:
        """The upstream's events -> provider events; ends with Finish, or raises `UpstreamError`."""
        raise NotImplementedError

    def _malformed(self) -> UpstreamError:
        """The error for one of `malformed` raised while translating."""
        raise NotImplementedError

    def _failure(self, exc: Exception, started: bool) -> UpstreamError | None:
        """What the SDK or the body raised, as an `UpstreamError`; None: not ours to map.

        `started`: the body was being read (a lost connection is then a mid-stream one).
        """
        raise NotImplementedError

    # -- the skeleton -------------------------------------------------------------------------

    def stream(self, request: ProviderRequest) -> Generator[ProviderEvent, None, None]:
        """Yield this request's provider events; raise `UpstreamError` on failure."""
        started = False
        try:
            attempt = self._opener(self._get_client(), request)
            response = _retry.open_with_retries(attempt, self._transient, provider=self.name, policy=self.retry)
            body = RawBody(response.http_response, self.unwrap)
            # RawBody keeps what it needs of the response; the request's parameters (the whole
            # conversation, as dicts, held by `attempt`) are not kept while the answer streams.
            del response, attempt
            try:
                started = True
                try:
                    yield from self._translate(iter_events_from(body.read))
                except self.malformed:
                    raise self._malformed() from None
                body.finish()  # the body's last chunk: then closing pools the connection
            finally:
                # Also on GeneratorExit / GreenletExit: closing the response cuts the upstream.
                body.close()
        except UpstreamError:
            raise
        except Exception as exc:
            error = self._failure(exc, started)
            if error is None:
                raise
            raise error from None
