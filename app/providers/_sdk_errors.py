"""Turn what the vendor SDKs raise into `UpstreamError`s with short, safe messages.

What the SDKs raise (anthropic 2.x / openai 3.x, both on httpx2), and where it lands:

    status >= 400 before the stream   SDK APIStatusError subclass     by status
    Anthropic `event: error` mid-stream  (parsed in anthropic.py: stream_error)  by body type
    OpenAI `data: {"error": ...}` mid-stream  openai.APIError (no status)        by body type
    connect refused / reset / timeout  SDK APIConnectionError / APITimeoutError   connection
    connection lost mid-stream (either)  RAW httpx2.RemoteProtocolError / ReadError  connection
      (the body is read off the socket by `_body.RawBody`, which raises those; a body read
      through httpx2 instead (gzip) raises the same)
    Anthropic body ends without message_stop  (anthropic.py)                            connection

SDK messages embed the whole response body, so they are never passed on: each type gets its
own sentence, and only an invalid-request message from upstream is quoted, scrubbed of keys.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from app.errors import UpstreamError, upstream_type_for_body, upstream_type_for_status

_NOT_RETRYABLE = frozenset({"invalid_request", "authentication", "permission", "not_found"})

_SENTENCES = {
    "invalid_request": "{name} rejected the request as invalid",
    "authentication": "{name} rejected the API key.",
    "permission": "The {name} API key is not allowed to use this model or resource.",
    "not_found": "{name} does not know this model or endpoint.",
    "rate_limit": "{name} is rate limiting requests; try again shortly.",
    "overloaded": "{name} is overloaded; try again shortly.",
    "timeout": "{name} took too long to answer.",
    "upstream": "{name} failed with an internal error.",
}

# Key-like strings that must never reach a client, whatever an upstream echoes back.
_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-*]{6,}|Bearer\s+\S+|[A-Za-z0-9_\-]{32,})")


def _scrub(text: str, key_env: str) -> str:
    key = os.environ.get(key_env)
    if key:
        text = text.replace(key, "[redacted]")
    text = _KEYLIKE.sub("[redacted]", text)
    text = " ".join(text.split()).rstrip(".")
    return text if len(text) <= 200 else text[:197] + "..."


def _upstream_message(body: object) -> str | None:
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping) and isinstance(err.get("message"), str):
            return str(err["message"])
    return None


def _sentence(type_: str, name: str, body: object, key_env: str, status: int | None) -> str:
    text = _SENTENCES.get(type_, "{name} failed.").format(name=name)
    if type_ == "invalid_request":
        detail = _upstream_message(body)
        text += f": {_scrub(detail, key_env)}." if detail else "."
    elif type_ == "upstream" and status:
        text = text[:-1] + f" (HTTP {status})."
    return text


def status_error(
    name: str, status: int, body: object, headers: Mapping[str, str] | None, key_env: str
) -> UpstreamError:
    """An HTTP error answer (status >= 400), or a mid-stream error event (status < 400)."""
    if status < 400:
        return stream_error(name, body, key_env)
    type_ = upstream_type_for_status(status)
    retry_after = (headers or {}).get("retry-after")
    return UpstreamError(
        type_,
        _sentence(type_, name, body, key_env, status),
        status=status,
        retryable=type_ not in _NOT_RETRYABLE,
        headers={"Retry-After": retry_after} if retry_after and retry_after.isdigit() else None,
    )


def stream_error(name: str, body: object, key_env: str) -> UpstreamError:
    """An error the upstream reported inside a 200 stream: typed by the body."""
    type_ = upstream_type_for_body(body) or "upstream"
    if type_ == "upstream":
        message = f"{name} reported an error in the middle of the answer."
    else:
        message = _sentence(type_, name, body, key_env, None)
    return UpstreamError(type_, message, status=None, retryable=type_ not in _NOT_RETRYABLE)


def connection_error(name: str, mid_stream: bool) -> UpstreamError:
    """The TCP/HTTP connection failed (refused, reset, cut off, timed out)."""
    if mid_stream:
        message = f"The connection to {name} was lost in the middle of the answer."
    else:
        message = f"Could not connect to {name}."
    return UpstreamError("connection", message, status=None, retryable=True)


def malformed_event_error(name: str) -> UpstreamError:
    """A streamed event whose data is not the JSON the API always sends."""
    return UpstreamError("upstream", f"{name} sent a malformed event in the middle of the answer.", retryable=True)


def missing_key_error(name: str, key_env: str) -> UpstreamError:
    """No API key configured: the SDK would fail before sending anything."""
    return UpstreamError("authentication", f"No {name} API key is configured (set {key_env}).", retryable=False)


def tool_arguments(name: str, text: str) -> dict[str, Any]:
    """A tool call's streamed JSON arguments, parsed; malformed ones are an upstream error."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamError("upstream", f"{name} sent a tool call with malformed arguments.", retryable=True)
    return value
