"""Providers by name. Vendor SDKs are imported only when their provider is first used."""

from __future__ import annotations

from app.config import Settings
from app.providers.base import Provider


class ProviderPool:
    """One provider object (and so one SDK client and connection pool) per name, per worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._providers: dict[str, Provider] = {}

    def warm(self) -> None:
        """Import the SDKs of the configured providers now, in the worker, before any request.

        Importing `anthropic` or `openai` takes about a second of CPU; done lazily on the first
        request it would freeze every other stream of the worker (heartbeats included) for that
        long. An import opens no connection and creates no client.

        Then the SDKs' internals Sluice relies on are checked, once per worker (app/seams): each
        logs which path is in use.
        """
        if self.settings.anthropic_configured:
            import app.providers.anthropic  # noqa: F401
            from app.seams import anthropic

            anthropic.check()
        if self.settings.openai_configured:
            import app.providers.openai  # noqa: F401

            if self.settings.openai_api == "responses":
                import app.providers.openai_responses  # noqa: F401
        if self.settings.anthropic_configured or self.settings.openai_configured:
            from app.seams import httpcore

            httpcore.check()

    def __call__(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            provider = self._providers[name] = self._build(name)
        return provider

    def _build(self, name: str) -> Provider:
        if name == "anthropic":
            from app.providers.anthropic import AnthropicProvider, telemetry_option

            return AnthropicProvider(
                open_telemetry=telemetry_option(traces=self.settings.otel_traces, content=self.settings.log_content)
            )
        if name == "openai" and self.settings.openai_api == "responses":
            from app.providers.openai_responses import OpenAIResponsesProvider

            return OpenAIResponsesProvider()
        if name == "openai":
            from app.providers.openai import OpenAIProvider

            return OpenAIProvider(think_tags=self.settings.openai_think_tags)
        if name == "demo":
            from app.providers.demo import DemoProvider

            return DemoProvider(self.settings.demo_tokens_per_second)
        raise KeyError(f"unknown provider {name!r}")
