"""Errors before the first byte: JSON with the contract's shape and a proper status."""

from __future__ import annotations

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from app.errors import RequestError, SluiceError
from app.observability import metrics

_TYPES = {401: "authentication", 403: "permission", 404: "not_found", 429: "rate_limit", 503: "overloaded"}


def error_response(exc: SluiceError) -> Response:
    """The JSON error response for `exc` (status defaults to 500)."""
    status = exc.status or 500
    response = jsonify(exc.to_json())
    response.status_code = status
    for key, value in exc.headers.items():
        response.headers[key] = value
    if status >= 400:
        metrics.request_rejected(status)
    return response


def init_app(app: Flask) -> None:
    """Answer every error as JSON (never an HTML page or a traceback)."""

    @app.errorhandler(SluiceError)
    def _sluice(exc: SluiceError) -> Response:
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = {
            404: "Not found",
            405: "Method not allowed",
            413: "The request body is too large",
            414: "The URL is too long",
            415: "The body must be JSON (Content-Type: application/json)",
        }.get(status, exc.description or exc.name)
        response = error_response(RequestError(status, message, type=_TYPES.get(status, "invalid_request")))
        for key, value in exc.get_headers():
            if key.lower() != "content-type":
                response.headers[key] = value
        return response

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        return error_response(SluiceError("internal", "Internal error", status=500))
