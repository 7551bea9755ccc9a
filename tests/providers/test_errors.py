"""Every upstream failure, through the real SDKs, lands on the contract's error types."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from app.errors import UpstreamError
from app.providers.anthropic import AnthropicProvider
from app.providers.base import Provider, ProviderEvent
from app.providers.openai import OpenAIProvider
from tests.fake_upstream import FakeUpstream, answer_tokens
from tests.providers.conftest import ANTHROPIC_KEY, OPENAI_KEY, make_request, text_of

pytestmark = pytest.mark.timeout(30)

SECRETS = (ANTHROPIC_KEY, OPENAI_KEY, ANTHROPIC_KEY[-8:], OPENAI_KEY[-8:])


def run_until_error(provider: Provider, prompt: str) -> tuple[list[ProviderEvent], UpstreamError]:
    events: list[ProviderEvent] = []
    with pytest.raises(UpstreamError) as info:
        for event in provider.stream(make_request(prompt)):
            events.append(event)  # noqa: PERF402 -- keeps what arrived before the raise
    assert_safe(info.value)
    return events, info.value


def assert_safe(err: UpstreamError) -> None:
    """Short human sentence, no key, no SDK dump, no chained SDK exception shown."""
    shown = " ".join([str(err), err.message, repr(err), str(err.to_event_error())])
    for secret in SECRETS:
        assert secret not in shown
    assert "Traceback" not in shown and "{" not in err.message and "Error code" not in err.message
    assert err.message[0].isupper() and err.message.endswith(".") and len(err.message) < 300
    assert err.__suppress_context__ or err.__context__ is None


@pytest.mark.parametrize(
    ("status", "type_", "retryable"),
    [
        (400, "invalid_request", False),
        (401, "authentication", False),
        (403, "permission", False),
        (404, "not_found", False),
        (429, "rate_limit", True),
        (500, "upstream", True),
        (503, "overloaded", True),
        (529, "overloaded", True),
    ],
)
def test_status_errors(provider: Provider, status: int, type_: str, retryable: bool) -> None:
    events, err = run_until_error(provider, f"x [fake status={status}]")
    assert events == []
    assert (err.type, err.status, err.retryable) == (type_, status, retryable)
    if status == 429:
        assert err.headers == {"Retry-After": "1"}


def test_invalid_request_quotes_the_upstream_reason(provider: Provider) -> None:
    _, err = run_until_error(provider, "x [fake status=400]")
    assert err.message.endswith(".") and ":" in err.message


def test_anthropic_midstream_error_event_is_overloaded(upstream_env: FakeUpstream) -> None:
    events, err = run_until_error(AnthropicProvider(), "x [fake tokens=10 error_after=2]")
    assert text_of(events) == "t0 t1 "
    assert (err.type, err.retryable, err.status) == ("overloaded", True, None)


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [("", "upstream"), ("overloaded_error", "overloaded"), ("rate_limit_exceeded", "rate_limit")],
)
def test_openai_midstream_error(upstream_env: FakeUpstream, error_type: str, expected: str) -> None:
    extra = f" error_type={error_type}" if error_type else ""
    events, err = run_until_error(OpenAIProvider(), f"x [fake tokens=10 error_after=3{extra}]")
    assert text_of(events) == "t0 t1 t2 "
    assert (err.type, err.retryable, err.status) == (expected, True, None)


@pytest.mark.parametrize("mode", ["fin", "rst"])
def test_dropped_connection_midstream(provider: Provider, mode: str) -> None:
    events, err = run_until_error(provider, f"x [fake tokens=10 drop_after=3 drop={mode}]")
    assert text_of(events) == "".join(answer_tokens(3))
    assert (err.type, err.retryable) == ("connection", True)
    assert "lost" in err.message


def test_connection_refused(provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again on exit: nobody listens there
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    fresh = type(provider)()
    _, err = run_until_error(fresh, "x")
    assert (err.type, err.retryable, err.status) == ("connection", True, None)


def test_wrong_key_is_authentication_and_not_echoed(provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake, like OpenAI, echoes a masked form of a wrong key in its error body.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong-" + ANTHROPIC_KEY[-8:])
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-" + OPENAI_KEY[-8:])
    fresh = type(provider)()
    _, err = run_until_error(fresh, "x")
    assert (err.type, err.status, err.retryable) == ("authentication", 401, False)


def test_missing_key_makes_no_request(
    provider: Provider, upstream_env: FakeUpstream, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))  # no profile on disk either
    fresh = type(provider)()
    _, err = run_until_error(fresh, "x")
    assert (err.type, err.retryable) == ("authentication", False)
    assert upstream_env.request_count == 0


def test_fake_rejects_a_keyless_request_like_the_api(upstream_env: FakeUpstream) -> None:
    import requests

    for path in ("/v1/messages", "/v1/chat/completions"):
        resp = requests.post(upstream_env.url + path, json={"model": "m", "messages": []}, timeout=5)
        assert resp.status_code == 401
        assert "error" in resp.json()
