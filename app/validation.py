"""Turn a request's JSON body or query string into a `GenerationSpec`, or a 400 that names the field.

Everything here runs before any upstream call: a rejected request costs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.config import DEMO_MODEL, Settings
from app.errors import RequestError
from app.providers.base import Message
from app.tools import TOOLS

# Ids Sluice makes are 22 characters; a client may choose its own of 16-64 (contract).
STREAM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
DEFAULT_MAX_TOKENS = 1024

PROVIDERS = ("anthropic", "openai", "demo")
REASONING_EFFORTS = ("off", "low", "medium", "high")
FIELDS = frozenset(
    {
        "messages", "prompt", "system", "provider", "model", "max_tokens", "temperature",
        "tools", "response_format", "chunking", "reasoning", "stream_id",
    }
)
# Query parameters GET /stream accepts besides the fields: `last_event_id` stands in for the
# Last-Event-ID header, which a freshly constructed EventSource cannot set.
QUERY_EXTRAS = frozenset({"last_event_id"})
MAX_PROMPT_CHARS = 200_000
MAX_MESSAGES = 200


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

    @property
    def prompt_text(self) -> str:
        """The conversation's text, for logs that opted in to content."""
        return "\n".join(m.text for m in self.messages)


def bad(message: str, field: str | None = None) -> RequestError:
    """A 400 `invalid_request` naming the field."""
    return RequestError(400, message, field=field)


def check_stream_id(value: object, field: str = "stream_id") -> str:
    """A client-supplied stream id, or 400."""
    if not isinstance(value, str) or not STREAM_ID_RE.match(value):
        raise bad("stream_id must be 16 to 64 characters of A-Z, a-z, 0-9, '_' and '-'", field)
    return value


def _string(body: Mapping[str, Any], key: str, *, limit: int = MAX_PROMPT_CHARS) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad(f"{key} must be a string", key)
    if len(value) > limit:
        raise bad(f"{key} must be at most {limit} characters", key)
    return value


def _messages(body: Mapping[str, Any]) -> tuple[Message, ...]:
    has_messages = body.get("messages") is not None
    has_prompt = body.get("prompt") is not None
    if has_messages == has_prompt:
        raise bad("give exactly one of messages or prompt", "messages" if has_messages else "prompt")
    if has_prompt:
        prompt = _string(body, "prompt")
        if not prompt or not prompt.strip():
            raise bad("prompt must not be empty", "prompt")
        return (Message("user", prompt),)
    raw = body["messages"]
    if not isinstance(raw, list) or not raw:
        raise bad("messages must be a non-empty list", "messages")
    if len(raw) > MAX_MESSAGES:
        raise bad(f"messages must hold at most {MAX_MESSAGES} turns", "messages")
    out = []
    total = 0
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) - {"role", "content"}:
            raise bad(f"messages[{i}] must be an object with role and content", "messages")
        role, content = item.get("role"), item.get("content")
        if role not in ("user", "assistant"):
            raise bad(f"messages[{i}].role must be user or assistant", "messages")
        if not isinstance(content, str) or not content.strip():
            raise bad(f"messages[{i}].content must be a non-empty string", "messages")
        total += len(content)
        out.append(Message(role, content))
    if total > MAX_PROMPT_CHARS:
        raise bad(f"messages must hold at most {MAX_PROMPT_CHARS} characters", "messages")
    if out[-1].role != "user":
        raise bad("the last message must be from the user", "messages")
    return tuple(out)


def _int(value: object, key: str, low: int, high: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise bad(f"{key} must be a whole number between {low} and {high}", key) from None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad(f"{key} must be a whole number between {low} and {high}", key)
    return value


def _float(value: object, key: str, low: float, high: float) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise bad(f"{key} must be a number between {low:g} and {high:g}", key) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise bad(f"{key} must be a number between {low:g} and {high:g}", key)
    return float(value)


def _choice(body: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = body.get(key)
    if value is None or value == "":
        return default
    if value not in choices:
        raise bad(f"{key} must be one of {', '.join(choices)}", key)
    return str(value)


def _tools(value: object) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad("tools must be a list of tool names", "tools")
    for name in value:
        if name not in TOOLS:
            raise bad(f"unknown tool {name!r}; known tools: {', '.join(sorted(TOOLS))}", "tools")
    return tuple(dict.fromkeys(value))


def parse_spec(body: Mapping[str, Any], settings: Settings, *, extras: frozenset[str] = frozenset()) -> GenerationSpec:
    """Validate a JSON body or query mapping against the contract; raise `RequestError` (400)."""
    unknown = sorted(set(body) - FIELDS - extras)
    if unknown:
        raise bad(f"unknown field {unknown[0]!r}", unknown[0])
    messages = _messages(body)
    provider = _choice(body, "provider", PROVIDERS, settings.default_provider)
    if provider == "anthropic" and not settings.anthropic_configured:
        raise bad("provider anthropic is not configured on this server", "provider")
    if provider == "openai" and not settings.openai_configured:
        raise bad("provider openai is not configured on this server", "provider")
    model = _string(body, "model", limit=200) or settings.default_model(provider)
    if not (provider == "demo" and model == DEMO_MODEL) and not settings.model_allowed(model):
        raise bad(f"model {model!r} is not allowed on this server", "model")
    max_tokens = body.get("max_tokens")
    stream_id = body.get("stream_id")
    return GenerationSpec(
        provider=provider,
        model=model,
        messages=messages,
        system=_string(body, "system") or None,
        max_tokens=min(DEFAULT_MAX_TOKENS, settings.max_tokens) if max_tokens in (None, "") else _int(
            max_tokens, "max_tokens", 1, settings.max_tokens
        ),
        temperature=None if body.get("temperature") in (None, "") else _float(
            body["temperature"], "temperature", 0.0, 2.0
        ),
        tools=_tools(body.get("tools")),
        response_format=_choice(body, "response_format", ("text", "json"), "text"),
        chunking=_choice(body, "chunking", ("token", "word", "sentence"), "token"),
        reasoning=_choice(body, "reasoning", REASONING_EFFORTS, "off"),
        stream_id=None if stream_id in (None, "") else check_stream_id(stream_id),
    )
