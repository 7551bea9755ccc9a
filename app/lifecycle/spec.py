"""What one generation is asked to do: the domain object between the request and the lifecycle.

app.validation builds it from a request (or answers 400); the lifecycle runs it. It lives here,
not in the validator, so that the lifecycle does not depend on how requests are parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.providers.base import Message


@dataclass(frozen=True)
class GenerationSpec:
    """A validated request for one generation."""

    provider: str
    model: str
    messages: tuple[Message, ...]
    max_tokens: int
    system: str | None = None
    temperature: float | None = None
    tools: tuple[str, ...] = ()
    response_format: str = "text"
    chunking: str = "token"
    reasoning: str = "off"
    stream_id: str | None = None
    profile: str | None = None  # the profile it runs under (SLUICE_PROFILES), shown in `start`
    # Under a budget (app.lifecycle.budget): the tokens reserved, which no round may pass, and
    # the client's max_tokens when the reservation had to lower it (`start` then says so).
    budget_tokens: int | None = None
    requested_max_tokens: int | None = None

    @property
    def prompt_text(self) -> str:
        """The conversation's text, for logs that opted in to content."""
        return "\n".join(m.text for m in self.messages)
