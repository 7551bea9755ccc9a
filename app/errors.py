"""One error tree for both paths: a JSON response before the first byte, an `error` event after.

    SluiceError                 (type, message, status, retryable)
    ├── RequestError            bad input, auth, origin, capacity: answered as JSON + status
    └── UpstreamError           a provider failed: an `error` event (or JSON if nothing streamed)

`type` is always one of ERROR_TYPES, the contract's closed list.
"""

from __future__ import annotations

from typing import Any

ERROR_TYPES = (
    "invalid_request",
    "authentication",
    "permission",
    "not_found",
    "rate_limit",
    "overloaded",
    "timeout",
    "connection",
    "upstream",
    "internal",
    "budget_exceeded",
)

# Which upstream failures are worth retrying by the client (contract: `retryable`).
RETRYABLE_TYPES = frozenset({"rate_limit", "overloaded", "timeout", "connection"})


class SluiceError(Exception):
    """Base of every error Sluice reports to a client."""

    def __init__(
        self,
        type: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        assert type in ERROR_TYPES, type
        super().__init__(message)
        self.type = type
        self.message = message
        self.status = status
        self.retryable = type in RETRYABLE_TYPES if retryable is None else retryable
        self.field = field
        self.headers = headers or {}

    def to_event_error(self) -> dict[str, Any]:
        """The `error` object of a terminal `error` event."""
        return {
            "type": self.type,
            "message": self.message,
            "retryable": self.retryable,
            "status": self.status,
        }

    def to_json(self) -> dict[str, Any]:
        """The body of a JSON error response."""
        body: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.field:
            body["field"] = self.field
        return {"error": body}


class RequestError(SluiceError):
    """A request rejected before any upstream call; `status` is the HTTP status to answer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request",
        field: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(type, message, status=status, retryable=False, field=field, headers=headers)
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        """The body of a JSON error response, with this error's details (`remaining_tokens`)."""
        body = super().to_json()
        body["error"].update(self.details)
        return body


class UpstreamError(SluiceError):
    """A provider failure, already mapped to the contract's error types."""


def upstream_type_for_status(status: int | None) -> str:
    """Map an upstream HTTP status to the contract's error type."""
    if status is None:
        return "upstream"
    if status == 400 or status == 413 or status == 422:
        return "invalid_request"
    if status == 401:
        return "authentication"
    if status == 403:
        return "permission"
    if status == 404:
        return "not_found"
    if status == 408:
        return "timeout"
    if status == 429:
        return "rate_limit"
    if status in (503, 529):
        return "overloaded"
    if status >= 500:
        return "upstream"
    return "upstream"


# Error `type` strings found in providers' JSON error bodies / SSE `error` events.
_BODY_TYPES = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "authentication",
    "permission_error": "permission",
    "permission_denied_error": "permission",
    "not_found_error": "not_found",
    "rate_limit_error": "rate_limit",
    "rate_limit_exceeded": "rate_limit",
    "insufficient_quota": "rate_limit",
    "overloaded_error": "overloaded",
    "timeout_error": "timeout",
    "api_error": "upstream",
    "server_error": "upstream",
}


def upstream_type_for_body(body: object) -> str | None:
    """Find the contract type named inside a provider's error body, if any."""
    if not isinstance(body, dict):
        return None
    err = body.get("error", body)
    if isinstance(err, dict):
        for key in ("type", "code"):
            value = err.get(key)
            if isinstance(value, str) and value in _BODY_TYPES:
                return _BODY_TYPES[value]
    return None
