"""Closing a provider generator closes the upstream HTTP connection: the bill stops."""

from __future__ import annotations

import pytest
from greenlet import GreenletExit

from app.config import Settings
from app.providers.anthropic import AnthropicProvider
from app.providers.base import Provider, TextDelta, Usage
from app.providers.openai import OpenAIProvider
from tests.fake_upstream import FakeUpstream
from tests.providers.conftest import make_request

pytestmark = pytest.mark.timeout(30)


def take_text(gen: object, n: int) -> list[str]:
    got: list[str] = []
    for event in gen:  # type: ignore[attr-defined]
        if isinstance(event, TextDelta):
            got.append(event.text)
            if len(got) == n:
                break
    return got


def test_close_while_streaming(provider: Provider, upstream_env: FakeUpstream) -> None:
    gen = provider.stream(make_request("x [fake tokens=500 pace=0.02]"))
    assert take_text(gen, 3) == ["t0 ", "t1 ", "t2 "]
    assert upstream_env.open_connections == 1
    gen.close()  # type: ignore[attr-defined]
    assert upstream_env.wait_closed(1.0)


def test_close_while_upstream_stalled(provider: Provider, upstream_env: FakeUpstream) -> None:
    gen = provider.stream(make_request("x [fake tokens=50 stall_after=3]"))
    assert take_text(gen, 3) == ["t0 ", "t1 ", "t2 "]
    assert upstream_env.open_connections == 1
    gen.close()  # type: ignore[attr-defined]
    assert upstream_env.wait_closed(1.0)


def test_close_stalled_before_first_token(upstream_env: FakeUpstream) -> None:
    gen = AnthropicProvider().stream(make_request("x [fake stall_after=0 ping_every=0.05]"))
    assert isinstance(next(gen), Usage)  # message_start arrived, then nothing but pings
    assert upstream_env.open_connections == 1
    gen.close()
    assert upstream_env.wait_closed(1.0)


def test_greenlet_kill_passes_through_and_closes(provider: Provider, upstream_env: FakeUpstream) -> None:
    gen = provider.stream(make_request("x [fake tokens=50 stall_after=2]"))
    take_text(gen, 2)
    with pytest.raises(GreenletExit):
        gen.throw(GreenletExit())  # type: ignore[attr-defined]
    assert upstream_env.wait_closed(1.0)


def test_client_is_made_lazily(upstream_env: FakeUpstream) -> None:
    for provider in (AnthropicProvider(), OpenAIProvider()):
        assert provider._client is None
        list(provider.stream(make_request("x [fake tokens=1]")))
        assert provider._client is not None


def test_client_settings(upstream_env: FakeUpstream) -> None:
    a, o = AnthropicProvider(), OpenAIProvider()
    list(a.stream(make_request("x [fake tokens=1]")))
    list(o.stream(make_request("x [fake tokens=1]")))
    assert a._client is not None and o._client is not None
    for client in (a._client, o._client):
        assert client.max_retries == 0
        assert client.timeout.connect == 10.0 and client.timeout.read is None  # type: ignore[union-attr]


def test_default_models() -> None:
    # The model a request that names none gets is the settings' (providers hold no default).
    assert Settings.from_env({}).default_model("anthropic") == "claude-haiku-4-5"
    assert Settings.from_env({}).default_model("openai") == "gpt-5-mini"
    assert Settings.from_env({"SLUICE_OPENAI_MODEL": "llama3"}).default_model("openai") == "llama3"
    assert (AnthropicProvider.name, OpenAIProvider.name) == ("anthropic", "openai")
