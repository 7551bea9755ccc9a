"""The retry policy on its own: what is transient, how long to wait, how many times, and that the
wait is a gevent sleep the generation's timer can cut short."""

from __future__ import annotations

import email.utils
import time

import gevent
import pytest

from app.providers import _retry
from app.providers._retry import RetryPolicy, open_with_retries, retry_after, status_hint

pytestmark = pytest.mark.timeout(30)

FAST = RetryPolicy(max_retries=2, initial_delay=0.001, max_delay=0.002)


@pytest.mark.parametrize(
    ("status", "headers", "hint"),
    [
        (429, {"retry-after": "2"}, 2.0),
        (429, {"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        (429, {"retry-after": "1.5"}, 1.5),
        (429, {"retry-after": "soon"}, 0.0),
        (429, {}, 0.0),
        (529, {}, 0.0),
        (500, {}, 0.0),
        (503, {"retry-after": "3"}, 3.0),
        (408, {}, 0.0),
        (409, {}, 0.0),
        (400, {}, None),
        (401, {}, None),
        (403, {}, None),
        (404, {}, None),
        (400, {"x-should-retry": "true"}, 0.0),
        (529, {"x-should-retry": "false"}, None),
    ],
)
def test_status_hint(status: int, headers: dict[str, str], hint: float | None) -> None:
    assert status_hint(status, headers) == hint


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 <= retry_after({"retry-after": when}) <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert retry_after({"retry-after": past}) == 0.0


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy()
    first = [policy.delay(0, 0.0) for _ in range(200)]
    second = [policy.delay(1, 0.0) for _ in range(200)]
    assert all(d is not None and 0.375 <= d <= 0.5 for d in first)
    assert all(d is not None and 0.75 <= d <= 1.0 for d in second)
    assert len(set(first)) > 100  # jittered, not a fixed step
    assert all(d is not None and d <= 8.0 for d in (policy.delay(n, 0.0) for n in range(50)))


def test_server_hint_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(max_retry_after=10.0)
    assert policy.delay(0, 3.0) == 3.0
    assert policy.delay(1, 10.0) == 10.0
    assert policy.delay(0, 11.0) is None  # the client gets the error and its Retry-After instead


class Transient(Exception):
    pass


class Fatal(Exception):
    pass


def classify(exc: Exception) -> float | None:
    return 0.0 if isinstance(exc, Transient) else None


def flaky(failures: list[Exception]) -> tuple[list[int], object]:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "opened"

    return calls, attempt


def retries_counted(provider: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("sluice_upstream_retries_total", {"provider": provider}) or 0.0


def test_transient_failures_are_retried_then_succeed() -> None:
    before = retries_counted("unit")
    calls, attempt = flaky([Transient(), Transient()])
    assert open_with_retries(attempt, classify, provider="unit", policy=FAST) == "opened"  # type: ignore[arg-type]
    assert len(calls) == 3
    assert retries_counted("unit") - before == 2


def test_retries_are_bounded_and_the_last_failure_is_raised() -> None:
    last = Transient("third")
    calls, attempt = flaky([Transient(), Transient(), last, Transient()])
    with pytest.raises(Transient) as info:
        open_with_retries(attempt, classify, provider="anthropic", policy=FAST)  # type: ignore[arg-type]
    assert info.value is last
    assert len(calls) == 3


def test_a_permanent_failure_is_not_retried() -> None:
    calls, attempt = flaky([Fatal()])
    with pytest.raises(Fatal):
        open_with_retries(attempt, classify, provider="anthropic", policy=FAST)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_no_retry_policy() -> None:
    calls, attempt = flaky([Transient()])
    with pytest.raises(Transient):
        open_with_retries(attempt, classify, provider="anthropic", policy=_retry.NO_RETRY)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_a_timer_ends_the_wait() -> None:
    # The generation's first-token timer is a gevent.Timeout: it must interrupt the backoff sleep.
    calls, attempt = flaky([Transient(), Transient()])
    slow = RetryPolicy(max_retries=2, initial_delay=20.0, max_delay=20.0)
    started = time.monotonic()
    with pytest.raises(gevent.Timeout), gevent.Timeout(0.2):
        open_with_retries(attempt, classify, provider="anthropic", policy=slow)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5
    assert len(calls) == 1
