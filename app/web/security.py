"""Who may call: API keys (when configured), same-site POSTs, CORS for allowed origins."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request

from app.config import Settings
from app.errors import RequestError

OPEN_PATHS = frozenset({"/healthz"})
KEY_COOKIE = "sluice_api_key"


def settings() -> Settings:
    """The app's settings."""
    return current_app.config["SLUICE_SETTINGS"]  # type: ignore[no-any-return]


def _presented_key() -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    # EventSource cannot send headers: a query parameter or a cookie stands in.
    return request.headers.get("X-API-Key") or request.args.get("api_key") or request.cookies.get(KEY_COOKIE)


def owner_of(key: str | None) -> str | None:
    """A stable, non-secret identity for an API key (never the key itself)."""
    return None if key is None else hashlib.sha256(key.encode()).hexdigest()[:24]


def check_api_key() -> None:
    """With SLUICE_API_KEYS set, every route but /healthz needs one of the keys (401 otherwise)."""
    keys = settings().api_keys
    g.owner = None
    if not keys or request.path in OPEN_PATHS or request.method == "OPTIONS":
        return
    key = _presented_key()
    if key is None or not any(hmac.compare_digest(key.encode(), k.encode()) for k in keys):
        raise RequestError(
            401, "An API key is required (Authorization: Bearer <key>)", type="authentication",
            headers={"WWW-Authenticate": 'Bearer realm="sluice"'},
        )
    g.owner = owner_of(key)
    if request.args.get("api_key") == key and request.cookies.get(KEY_COOKIE) != key:
        g.set_key_cookie = key


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else None


def allowed_origin(origin: str) -> bool:
    """True for an origin listed in SLUICE_ALLOWED_ORIGINS."""
    return origin.rstrip("/").lower() in {o.lower() for o in settings().allowed_origins}


def check_same_site() -> None:
    """Cross-site POSTs get 403: an Origin (or else a Referer) that is neither us nor allowed."""
    if request.method != "POST":
        return
    source = request.headers.get("Origin")
    if source is None or source == "null":
        referer = request.headers.get("Referer")
        source = _origin_of(referer) if referer else source
    if source is None:
        return  # curl, scripts: not a browser's cross-site request
    origin = _origin_of(source) if source != "null" else None
    # Compare hosts, not schemes: behind a TLS-terminating proxy we see http for an https page.
    if origin is not None and urlsplit(origin).netloc == request.host.lower():
        return
    if origin is not None and allowed_origin(origin):
        return
    raise RequestError(403, "Cross-site requests are not allowed from this origin", type="permission")


def client_key() -> str:
    """Who counts against SLUICE_MAX_STREAMS_PER_CLIENT: the API key's owner, else the address."""
    owner = g.get("owner")
    return f"key:{owner}" if owner else f"ip:{request.remote_addr or '-'}"


STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'; object-src 'none'"
)


def add_headers(response: Response) -> Response:
    """CORS for allowed origins; a strict CSP on HTML pages that did not set their own."""
    origin = request.headers.get("Origin")
    if origin and allowed_origin(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers.add("Vary", "Origin")
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization, Last-Event-ID, X-API-Key"
            response.headers["Access-Control-Max-Age"] = "600"
    key = g.get("set_key_cookie")
    if key:
        # A page opened with ?api_key=... keeps working: its EventSource and fetch calls, which
        # cannot carry an Authorization header, send this cookie (same site only, never to JS).
        response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="Strict", secure=request.is_secure)
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", STRICT_CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def init_app(app: Flask) -> None:
    """Install the checks on every request."""

    @app.before_request
    def _guard() -> None:
        check_api_key()
        check_same_site()

    app.after_request(add_headers)
