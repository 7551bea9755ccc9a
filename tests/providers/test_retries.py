"""Transient failures before the first token are retried (the real SDK against the fake), a bounded
number of times, honouring retry-after, and never once anything was streamed."""

from __future__ import annotations

import time

import gevent
import pytest

from app.errors import UpstreamError
from app.providers._retry import RetryPolicy
from app.providers.anthropic import AnthropicProvider
from app.providers.base import Finish
from tests.fake_upstream import FakeUpstream, answer_tokens
from tests.providers.conftest import make_request, text_of

pytestmark = pytest.mark.timeout(30)


def retries_counted() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("sluice_upstream_retries_total", {"provider": "anthropic"}) or 0.0


@pytest.mark.parametrize("failure", ["status=529", "status=500", "status=503", "hangup=1"])
def test_one_transient_failure_then_the_answer(upstream_env: FakeUpstream, failure: str) -> None:
    before = retries_counted()
    events = list(AnthropicProvider().stream(make_request(f"x [fake tokens=4 {failure} times=1]")))
    assert text_of(events) == "".join(answer_tokens(4))
    assert events[-1] == Finish("end_turn")
    assert upstream_env.request_count == 2
    assert retries_counted() - before == 1


def test_429_waits_as_long_as_retry_after_says(upstream_env: FakeUpstream) -> None:
    started = time.monotonic()
    events = list(AnthropicProvider().stream(make_request("x [fake tokens=2 status=429 times=1 retry_after=1]")))
    assert time.monotonic() - started >= 1.0
    assert text_of(events) == "t0 t1 "


def test_retry_after_ms_wins_over_retry_after(upstream_env: FakeUpstream) -> None:
    started = time.monotonic()
    prompt = "x [fake tokens=2 status=429 times=1 retry_after=20 retry_after_ms=300]"
    events = list(AnthropicProvider().stream(make_request(prompt)))
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 10  # the precise hint, not the 20 s one
    assert events[-1] == Finish("end_turn")


def test_a_retry_after_beyond_the_cap_is_not_waited_for(upstream_env: FakeUpstream) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        list(AnthropicProvider().stream(make_request("x [fake status=429 retry_after=60]")))
    assert (info.value.type, info.value.headers) == ("rate_limit", {"Retry-After": "60"})
    assert upstream_env.request_count == 1
    assert time.monotonic() - started < 10


def test_retries_are_bounded_then_the_error_goes_out(upstream_env: FakeUpstream) -> None:
    before = retries_counted()
    with pytest.raises(UpstreamError) as info:
        list(AnthropicProvider().stream(make_request("x [fake status=529]")))
    assert (info.value.type, info.value.status, info.value.retryable) == ("overloaded", 529, True)
    assert upstream_env.request_count == 3  # 1 + RetryPolicy().max_retries
    assert retries_counted() - before == 2


def test_a_reset_connection_every_time_is_a_connection_error(upstream_env: FakeUpstream) -> None:
    with pytest.raises(UpstreamError) as info:
        list(AnthropicProvider().stream(make_request("x [fake hangup=1]")))
    assert (info.value.type, info.value.retryable) == ("connection", True)
    assert "Could not connect" in info.value.message
    assert upstream_env.request_count == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_permanent_failures_are_not_retried(upstream_env: FakeUpstream, status: int) -> None:
    with pytest.raises(UpstreamError):
        list(AnthropicProvider().stream(make_request(f"x [fake status={status}]")))
    assert upstream_env.request_count == 1


@pytest.mark.parametrize("failure", ["error_after=0", "error_after=2", "drop_after=2", "drop_after=0"])
def test_nothing_is_retried_once_the_stream_is_open(upstream_env: FakeUpstream, failure: str) -> None:
    # After the 200, a failure is the generation's business (recovery or an error event).
    with pytest.raises(UpstreamError):
        list(AnthropicProvider().stream(make_request(f"x [fake tokens=5 {failure}]")))
    assert upstream_env.request_count == 1


def test_the_policy_is_per_provider(upstream_env: FakeUpstream) -> None:
    with pytest.raises(UpstreamError):
        list(AnthropicProvider(retry=RetryPolicy(max_retries=0)).stream(make_request("x [fake status=529 times=1]")))
    assert upstream_env.request_count == 1


def test_a_first_token_timer_ends_the_retry_wait_and_leaves_nothing_open(upstream_env: FakeUpstream) -> None:
    # The generation runs the provider under a gevent.Timeout: it must cut the backoff short.
    started = time.monotonic()
    gen = AnthropicProvider().stream(make_request("x [fake status=429 retry_after=8]"))
    with pytest.raises(gevent.Timeout), gevent.Timeout(0.3):
        next(gen)
    assert time.monotonic() - started < 5
    assert upstream_env.request_count == 1
    assert upstream_env.wait_closed(1.0)
