"""Turn a request's JSON body or query string into a `GenerationSpec`, or a 400 that names the field.

Everything here runs before any upstream call: a rejected request costs nothing.

Two sources, two sets of rules (contract): a JSON body is strict, each field has its JSON type
(`"max_tokens": "100"` is a 400, `null` means "not given"); a query string is text, so numbers
are parsed from text, `tools` is comma-separated and an empty value means "not given".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeGuard

import jiter

from app.config import DEMO_MODEL, PROFILE_FIELDS, Profile, Settings
from app.errors import RequestError
from app.lifecycle.spec import GenerationSpec
from app.providers.base import Message
from app.toolbox import Toolbox, toolbox_for

# Ids Sluice makes are 22 characters; a client may choose its own of 16-64 (contract). Matched
# whole (`fullmatch`): `re.match` with `$` lets a trailing newline through, and the wire's
# `id: <stream_id>:<seq>` line would end there. docs/openapi.yaml has the same patterns.
STREAM_ID_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
# A Last-Event-ID: an id, then a seq of 1-15 ASCII digits (`str.isdigit` also takes "²" and
# "①", which `int()` refuses, and `int()` refuses more than 4300 digits).
EVENT_ID_RE = re.compile(r"([A-Za-z0-9_-]{16,64}):([0-9]{1,15})")
# The most members (of all its objects together) one JSON body may hold (contract): parsing
# 90,000 of them holds a worker's event loop for ~0.1 s.
MAX_JSON_MEMBERS = 10_000
DEFAULT_MAX_TOKENS = 1024

PROVIDERS = ("anthropic", "openai", "demo")
REASONING_EFFORTS = ("off", "low", "medium", "high")
FIELDS = frozenset(
    {
        "messages", "prompt", "system", "provider", "model", "max_tokens", "temperature",
        "tools", "response_format", "chunking", "reasoning", "stream_id", "profile",
    }
)
# Query parameters GET /stream accepts besides the fields: `last_event_id` stands in for the
# Last-Event-ID header, which a freshly constructed EventSource cannot set.
QUERY_EXTRAS = frozenset({"last_event_id"})
MAX_PROMPT_CHARS = 200_000
MAX_MESSAGES = 200
MAX_MODEL_CHARS = 200
RESPONSE_FORMATS = ("text", "json")
CHUNKINGS = ("token", "word", "sentence")
REASONING_EFFORTS = ("off", "low", "medium", "high")
# Whole numbers and decimals as a query string spells them, matched whole (`fullmatch`: `$`
# would let a trailing newline through); `int()`/`float()` alone would also take " 5",
# "1_000", "nan" and "inf". docs/openapi.yaml has the same patterns.
_INT_TEXT = re.compile(r"[0-9]{1,9}")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]{1,9}(\.[0-9]{0,30})?|\.[0-9]{1,30})([eE][+-]?[0-9]{1,3})?")


def bad(message: str, field: str | None = None) -> RequestError:
    """A 400 `invalid_request` naming the field."""
    return RequestError(400, message, field=field)


def is_stream_id(value: object) -> TypeGuard[str]:
    """True for a well-formed stream id (it may still name no stream)."""
    return isinstance(value, str) and STREAM_ID_RE.fullmatch(value) is not None


def check_stream_id(value: object, field: str = "stream_id") -> str:
    """A client-supplied stream id, or 400."""
    if not is_stream_id(value):
        raise bad("stream_id must be 16 to 64 characters of A-Z, a-z, 0-9, '_' and '-'", field)
    return value


def parse_event_id(value: str) -> tuple[str, int] | None:
    """(stream id, seq) of a well-formed `Last-Event-ID`; None for anything else."""
    found = EVENT_ID_RE.fullmatch(value)
    return (found[1], int(found[2])) if found else None


# One object member, from where the last one (or the body) ended: everything up to and including
# the next string that is followed by a colon. Strings are consumed whole, escapes and all, so
# a colon or a quote inside one is never counted; possessive, so a body with no more members
# fails at once instead of backtracking.
_STRING = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_NEXT_MEMBER = re.compile(rb'(?:[^"]++|' + _STRING + rb'(?!\s*+:))*+' + _STRING + rb'\s*+:', re.DOTALL)


def too_many_members(raw: bytes, limit: int = MAX_JSON_MEMBERS) -> bool:
    """True when the JSON text `raw` holds more than `limit` object members, in all its objects.

    Cheap where it matters: a body with no more colons (or strings) than that is let through
    at once; otherwise the count stops at the first member past `limit` (~10 ms for 1 MiB),
    so a 1 MiB body of 90,000 members is refused before the parser builds any of them.
    """
    if raw.count(b":") <= limit or raw.count(b'"') <= 2 * limit:
        return False
    pos = 0
    match = _NEXT_MEMBER.match
    for _ in range(limit + 1):
        found = match(raw, pos)
        if found is None:
            return False
        pos = found.end()
    return True


def load_json(raw: bytes) -> Any:
    """Parse a request body as one strict JSON value, or raise a 400.

    jiter, not `json.loads`: a body nested thousands deep would raise `RecursionError` (a 500)
    from the stdlib, and a lone surrogate (`"\\ud800"`) would be accepted, only to fail at
    the upstream call. jiter stops at 200 levels, refuses text that is not Unicode, `NaN` and
    duplicate keys. The schema itself is 3 levels deep (`{"messages": [{...}]}`). More than
    MAX_JSON_MEMBERS object members is a 400 before parsing.
    """
    if too_many_members(raw):
        raise bad(f"The body holds more than {MAX_JSON_MEMBERS} JSON object members")
    try:
        return jiter.from_json(raw, allow_inf_nan=False, cache_mode="keys", catch_duplicate_keys=True)
    except ValueError as exc:
        reason = str(exc)
        if "recursion limit" in reason:
            raise bad("The body is nested deeper than the request schema allows") from None
        raise bad(f"The body is not valid JSON: {reason}") from None


def _unicode(value: str, key: str) -> str:
    # A lone surrogate can still arrive from a Python caller or a decoded form; no upstream
    # could encode it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad(f"{key} is not valid Unicode text", key) from None
    return value


class _Reader:
    """Reads typed fields from a JSON body (strict) or a query string (text)."""

    def __init__(self, body: Mapping[str, Any], *, text: bool) -> None:
        self.body = body
        self.text = text

    def given(self, key: str) -> Any:
        """The field's value, or None when absent (JSON `null`).

        An empty query value is the text "", as `""` in a JSON body is: an empty `provider` is
        400 either way, an empty `system` or `model` is no system prompt or the default model.
        """
        return self.body.get(key)

    def string(self, key: str, *, limit: int = MAX_PROMPT_CHARS) -> str | None:
        value = self.given(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise bad(f"{key} must be a string", key)
        if len(value) > limit:
            raise bad(f"{key} must be at most {limit} characters", key)
        return _unicode(value, key)

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.given(key)
        if value is None:
            return default
        if not isinstance(value, str) or value not in choices:
            raise bad(f"{key} must be one of {', '.join(choices)}", key)
        return value

    def number(self, key: str, parse: Callable[[object, str], Any]) -> Any:
        value = self.given(key)
        if value is None:
            return None
        if self.text and isinstance(value, str):
            value = _from_text(value)
        return parse(value, key)

    def tools(self, known: Toolbox) -> tuple[str, ...]:
        value = self.given("tools")
        if value is None:
            return ()
        if self.text and isinstance(value, str):
            value = [name for name in (part.strip(" \t") for part in value.split(",")) if name]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("tools must be a list of tool names", "tools")
        for name in value:
            if name not in known:
                shown = _unicode(name, "tools")[:40]
                raise bad(f"unknown tool {shown!r}; known tools: {', '.join(sorted(known.names()))}", "tools")
        return tuple(dict.fromkeys(value))


def _from_text(value: str) -> int | float | str:
    """A query value that spells a number, as that number (else the text, which will be refused)."""
    if _INT_TEXT.fullmatch(value):
        return int(value)
    if _FLOAT_TEXT.fullmatch(value):
        return float(value)
    return value


def _messages(read: _Reader) -> tuple[Message, ...]:
    body = read.body
    has_messages = read.given("messages") is not None
    has_prompt = read.given("prompt") is not None
    if has_messages == has_prompt:
        raise bad("give exactly one of messages or prompt", "messages" if has_messages else "prompt")
    if has_prompt:
        prompt = read.string("prompt")
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
        if total > MAX_PROMPT_CHARS:
            raise bad(f"messages must hold at most {MAX_PROMPT_CHARS} characters", "messages")
        out.append(Message(role, _unicode(content, "messages")))
    if out[-1].role != "user":
        raise bad("the last message must be from the user", "messages")
    return tuple(out)


def _int(value: object, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad(f"{key} must be a whole number between {low} and {high}", key)
    return value


def _float(value: object, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise bad(f"{key} must be a number between {low:g} and {high:g}", key)
    return float(value)


def parse_spec(
    body: Mapping[str, Any], settings: Settings, *, text: bool = False, extras: frozenset[str] = frozenset()
) -> GenerationSpec:
    """Validate a JSON body (`text=False`) or query mapping (`text=True`); raise `RequestError` (400)."""
    unknown = sorted(set(body) - FIELDS - extras)
    if unknown:
        raise bad(f"unknown field {_unicode(unknown[0], 'body')[:40]!r}", unknown[0][:40])
    profile = _profile(_Reader(body, text=text), settings)
    if profile is not None:
        body = _under_profile(body, profile, text=text)
    read = _Reader(body, text=text)
    messages = _messages(read)
    provider = read.choice("provider", PROVIDERS, settings.default_provider)
    if provider == "anthropic" and not settings.anthropic_configured:
        raise bad("provider anthropic is not configured on this server", "provider")
    if provider == "openai" and not settings.openai_configured:
        raise bad("provider openai is not configured on this server", "provider")
    model = read.string("model", limit=MAX_MODEL_CHARS)
    if model is not None and not model.strip():
        raise bad("model must not be empty", "model")
    model = model or settings.default_model(provider)
    if not (provider == "demo" and model == DEMO_MODEL) and not settings.model_allowed(model):
        raise bad(f"model {model[:80]!r} is not allowed on this server", "model")
    max_tokens = read.number("max_tokens", lambda v, k: _int(v, k, 1, settings.max_tokens))
    temperature = read.number("temperature", lambda v, k: _float(v, k, 0.0, 2.0))
    if profile is not None and max_tokens is not None and "max_tokens" in profile.fixed \
            and max_tokens > profile.fixed["max_tokens"]:
        raise bad(f"max_tokens must be at most {profile.fixed['max_tokens']} under profile {profile.name!r}",
                  "max_tokens")
    stream_id = read.given("stream_id")
    return GenerationSpec(
        provider=provider,
        model=model,
        messages=messages,
        system=read.string("system") or None,
        max_tokens=min(DEFAULT_MAX_TOKENS, settings.max_tokens) if max_tokens is None else max_tokens,
        temperature=temperature,
        tools=read.tools(toolbox_for(settings)),
        response_format=read.choice("response_format", RESPONSE_FORMATS, "text"),
        chunking=read.choice("chunking", CHUNKINGS, "token"),
        reasoning=read.choice("reasoning", REASONING_EFFORTS, "off"),
        stream_id=None if stream_id is None else check_stream_id(stream_id),
        profile=None if profile is None else profile.name,
    )


def _profile(read: _Reader, settings: Settings) -> Profile | None:
    """The profile a request runs under: the one it names, else the default (if any)."""
    name = read.string("profile", limit=MAX_MODEL_CHARS)
    if name is None or (read.text and name == ""):  # an empty query value is "not given"
        name = settings.default_profile
        if name is None:
            return None
    profile = settings.profiles.get(name)
    if profile is None:
        shown = f"; profiles: {', '.join(sorted(settings.profiles))}" if settings.profiles else ""
        raise bad(f"unknown profile {name[:64]!r}{shown}", "profile")
    return profile


def _under_profile(body: Mapping[str, Any], profile: Profile, *, text: bool) -> dict[str, Any]:
    """The request's fields with the profile's applied: what the profile fixes is the profile's,
    what it allows may come from the client, anything else set by the client is a 400."""
    merged = {key: value for key, value in body.items() if key not in PROFILE_FIELDS}
    for key in PROFILE_FIELDS:
        value = body.get(key)
        given = value is not None and not (text and value == "")
        if given and key in profile.allow:
            merged[key] = value
        elif key in profile.fixed:
            merged[key] = profile.fixed[key]
        elif given:
            raise bad(f"{key} cannot be set under profile {profile.name!r}", key)
    return merged


def check_profile(fixed: Mapping[str, Any], settings: Settings) -> tuple[str, str] | None:
    """A profile's fixed fields checked as a request's: the (field, message) of the first bad one."""
    try:
        parse_spec({**fixed, "prompt": "-"}, replace(settings, default_profile=None))
    except RequestError as exc:
        return exc.field or "?", exc.message
    return None
