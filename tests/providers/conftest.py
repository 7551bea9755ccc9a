"""Shared fixtures: one fake upstream per session, providers pointed at it through the env."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.providers.anthropic import AnthropicProvider
from app.providers.base import (
    Message,
    Provider,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
)
from app.providers.openai import OpenAIProvider
from app.providers.openai_responses import OpenAIResponsesProvider
from tests.fake_upstream import FakeUpstream

ANTHROPIC_KEY = "sk-ant-test-Zq8vN3kP0wLr5TgY"
OPENAI_KEY = "sk-test-Hd72KsQm1XpZ9bVc"


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(valid_keys={ANTHROPIC_KEY, OPENAI_KEY}) as server:
        yield server


@pytest.fixture
def upstream_env(fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> FakeUpstream:
    """Point both SDKs at the fake, with known keys; forget earlier requests."""
    for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE", "OPENAI_ADMIN_KEY", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.anthropic_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake.openai_base_url)
    assert fake.wait_closed(5), "a previous test left an upstream response open"
    fake.reset()
    return fake


PROVIDERS: dict[str, type[Provider]] = {
    "anthropic": AnthropicProvider,
    "openai": OpenAIProvider,
    "openai-responses": OpenAIResponsesProvider,  # SLUICE_OPENAI_API=responses
}


@pytest.fixture(params=list(PROVIDERS))
def provider(request: pytest.FixtureRequest, upstream_env: FakeUpstream) -> Provider:
    """Each test that takes `provider` runs once per provider (and OpenAI API), with a fresh client."""
    return PROVIDERS[request.param]()


def make_request(prompt: str = "hello", **kwargs: object) -> ProviderRequest:
    messages = kwargs.pop("messages", None) or (Message("user", prompt),)
    fields: dict[str, object] = {"model": "test-model", "max_tokens": 1024, **kwargs}
    return ProviderRequest(messages=messages, **fields)  # type: ignore[arg-type]


def text_of(events: list[ProviderEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))
