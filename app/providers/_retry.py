"""Retry opening an upstream stream after a transient failure, as the SDKs do by default.

The SDK clients run with `max_retries=0` (an SDK retry could not be counted, and its sleep is
not ours to bound); a provider wraps only the call that OPENS its stream in
`open_with_retries`, so a retry can never repeat text: nothing was yielded yet. Once the stream
is open, a failure is an `error` event or mid-stream recovery, never a retry here.

Retried (the SDKs' own list): HTTP 408, 409, 429, 5xx (529 overloaded included), and a
connection that was refused, reset or timed out before an answer; an `x-should-retry` header
overrules the status either way. Not retried: any other 4xx, and a `retry-after` longer than
`RetryPolicy.max_retry_after` (the client gets the error, with its Retry-After, at once).

Bounds (DEFAULT): at most 2 retries (3 attempts); the wait before retry n (0-based) is the
server's `retry-after-ms` / `retry-after` when given, else 0.5 s x 2^n capped at 8 s, minus up
to 25 % jitter: about 0.4-0.5 s, then 0.75-1 s. Waits use `gevent.sleep`, so the generation's
first-token timer, which kills the producer greenlet, also ends a retry wait: the retries
always fit in the first-token timeout (SLUICE_FIRST_TOKEN_TIMEOUT).
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import gevent

from app.observability import metrics

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How many times, and how long between, retries of a failed stream opening."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    # A server that asks for a longer wait than this is not retried: its error goes out as is.
    max_retry_after: float = 10.0

    def delay(self, retries_taken: int, retry_after: float) -> float | None:
        """Seconds to wait before the next attempt; None when it is not worth waiting for."""
        if retry_after > 0:
            return retry_after if retry_after <= self.max_retry_after else None
        backoff = min(self.initial_delay * 2.0 ** min(retries_taken, 32), self.max_delay)
        return backoff * (1 - 0.25 * random.random())


DEFAULT = RetryPolicy()
NO_RETRY = RetryPolicy(max_retries=0)

Classifier = Callable[[Exception], float | None]
"""exception -> None if not transient, else the wait the server asked for in seconds (0: none)."""


def open_with_retries(attempt: Callable[[], T], transient: Classifier, *, provider: str, policy: RetryPolicy) -> T:
    """`attempt()`, retried while it raises a transient failure and retries are left.

    The last failure (or a non-transient one) is raised unchanged, for the provider to map.
    """
    retries_taken = 0
    while True:
        try:
            return attempt()
        except Exception as exc:
            if retries_taken >= policy.max_retries:
                raise
            hint = transient(exc)
            wait = None if hint is None else policy.delay(retries_taken, hint)
            if wait is None:
                raise
        retries_taken += 1
        metrics.upstream_retry(provider)
        gevent.sleep(wait)


def status_hint(status: int, headers: Mapping[str, str]) -> float | None:
    """An HTTP error answer -> None if not transient, else the server's wait hint (0: none)."""
    should = headers.get("x-should-retry")
    if should == "false":
        return None
    if should == "true" or status in (408, 409, 429) or status >= 500:
        return retry_after(headers)
    return None


def retry_after(headers: Mapping[str, str]) -> float:
    """Seconds from `retry-after-ms`, else `retry-after` (seconds or an HTTP date); 0 if none."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(float(value) * scale, 0.0)
            except ValueError:
                pass
    parsed = email.utils.parsedate_tz(headers.get("retry-after") or "")
    if parsed is None:
        return 0.0
    return max(email.utils.mktime_tz(parsed) - time.time(), 0.0)
