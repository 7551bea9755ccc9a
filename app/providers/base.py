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
class OpaqueBlock:
    """A provider's own record of part of an assistant turn, returned to it verbatim."""

    provider: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Message:
    """One turn. `text` is the plain text; tool rounds add `tool_calls` / `tool_results`."""

    role: Literal["user", "assistant"]
    text: str = ""
    tool_calls: tuple[ToolCallPart, ...] = ()
    tool_results: tuple[ToolResultPart, ...] = ()
    # Opaque provider blocks of an assistant turn that must go back to the model unchanged in
    # the next tool round (Anthropic `thinking` / `redacted_thinking` blocks with their
    # signatures, Responses API reasoning items). Only the provider that made them reads them.
    opaque: tuple[OpaqueBlock, ...] = ()


# Tokens of thinking per reasoning effort that every provider asks for on top of the answer's
# max_tokens (Anthropic's minimum is 1024): a generation's output may reach the sum of both.
REASONING_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}


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
    # "off" | "low" | "medium" | "high". `max_tokens` is the answer's budget: a provider that
    # thinks adds its thinking budget on top of it when it asks the upstream.
    reasoning: str = "off"


# ---------------------------------------------------------------------------------------------
# What a provider yields
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDelta:
    """A fragment of answer text, as the model produced it."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """A fragment of the model's visible thinking or reasoning summary (never answer text)."""

    text: str


@dataclass(frozen=True)
class ToolCallStart:
    """A tool call began (its arguments are still streaming): a drop now is not prose."""

    id: str
    name: str


@dataclass(frozen=True)
class ToolCall:
    """A complete tool call (arguments fully received and parsed)."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Usage:
    """Token counts as the provider reported them; None where not (yet) reported."""

    # Every input token the bill counts, cache reads and writes included (providers that report
    # cached tokens apart, as Anthropic does, sum them here).
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    # A part of output_tokens.
    reasoning_tokens: int | None = None


@dataclass(frozen=True)
class Finish:
    """The provider's own end of message: normalised stop reason.

    One of end_turn, max_tokens, stop_sequence, tool_use, refusal, content_filter.
    """

    stop_reason: str


@dataclass(frozen=True)
class Opaque:
    """An opaque block of this turn (see `Message.opaque`), yielded when it is complete."""

    block: OpaqueBlock


ProviderEvent = TextDelta | ReasoningDelta | ToolCallStart | ToolCall | Usage | Finish | Opaque


class Provider(Protocol):
    """A source of model output."""

    name: str

    def stream(self, request: ProviderRequest) -> Generator[ProviderEvent, None, None]:
        """Yield events for one upstream call; raise `UpstreamError` on failure.

        Must close its upstream connection when the generator is closed or the greenlet is
        killed (use `with` around the SDK stream).
        """
        ...
