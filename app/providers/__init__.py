"""Providers by name. Vendor SDKs are imported only when their provider is first used."""

from __future__ import annotations

from app.config import Settings
from app.providers.base import Provider


class ProviderPool:
    """One provider object (and so one SDK client and connection pool) per name, per worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._providers: dict[str, Provider] = {}

    def __call__(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            provider = self._providers[name] = self._build(name)
        return provider

    def _build(self, name: str) -> Provider:
        if name == "anthropic":
            from app.providers.anthropic import AnthropicProvider

            return AnthropicProvider(self.settings.anthropic_model)
        if name == "openai":
            from app.providers.openai import OpenAIProvider

            return OpenAIProvider(self.settings.openai_model)
        if name == "demo":
            from app.providers.demo import DemoProvider

            return DemoProvider(self.settings.demo_tokens_per_second)
        raise KeyError(f"unknown provider {name!r}")
