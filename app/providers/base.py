"""The one small interface every provider implements, and the records it yields.

A provider turns a `ProviderRequest` into an iterator of `ProviderEvent`s. It is a generator
that opens its upstream in a `with` block, so closing the generator (or killing the greenlet
that iterates it) closes the upstream HTTP connection: that is how a cancel stops the bill.

Only `app/providers/*` imports a vendor SDK.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

# ---------------------------------------------------------------------------------------------
# Provider-neutral conversation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCallPart:
    """A tool call the assistant made in an earlier round."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolResultPart:
    """The result of running one tool call, sent back to the model."""

    id: str
    name: str
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class Message:
    """One turn. `text` is the plain text; tool rounds add `tool_calls` / `tool_results`."""

    role: Literal["user", "assistant"]
    text: str = ""
    tool_calls: tuple[ToolCallPart, ...] = ()
    tool_results: tuple[ToolResultPart, ...] = ()


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: name, description and JSON schema of its input."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class ProviderRequest:
    """Everything a provider needs for one upstream call."""

    model: str
    messages: tuple[Message, ...]
    max_tokens: int
    system: str | None = None
    temperature: float | None = None
    tools: tuple[ToolSpec, ...] = ()
    json_mode: bool = False


# ---------------------------------------------------------------------------------------------
# What a provider yields
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDelta:
    """A fragment of answer text, as the model produced it."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """A complete tool call (arguments fully received and parsed)."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Usage:
    """Token counts as the provider reported them; None where not (yet) reported."""

    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class Finish:
    """The provider's own end of message: normalised stop reason."""

    stop_reason: str


ProviderEvent = TextDelta | ToolCall | Usage | Finish


class Provider(Protocol):
    """A source of model output."""

    name: str
    default_model: str

    def stream(self, request: ProviderRequest) -> Generator[ProviderEvent, None, None]:
        """Yield events for one upstream call; raise `UpstreamError` on failure.

        Must close its upstream connection when the generator is closed or the greenlet is
        killed (use `with` around the SDK stream).
        """
        ...
