"""Who may call: a principal from a key, a session or a trusted proxy; same-site POSTs; CORS.

With authentication on (SLUICE_API_KEYS or SLUICE_TRUSTED_USER_HEADER), every request but
/healthz and the static files needs a principal, found in this order:

    a key in the URL (?api_key=, ?token=, ...)     401, always: URLs are logged and shared
    Authorization: Bearer <key> / X-API-Key: <key> "key:<digest of the key>"   (a wrong key: 401)
    the trusted user header, through the proxy     "user:<value>"
    the session cookie (app.web.session)           the principal it was issued to
    nothing                                        401 JSON (a browser opening a page: the
                                                   sign-in form, with status 401)

A principal is never the key itself: a digest stands for it in Redis, in the session cookie
and wherever else an identity is kept. Keys are compared in constant time. docs/security.md
is the threat model.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, render_template, request

from app.config import Settings
from app.errors import RequestError
from app.observability import metrics
from app.web import exposure, session
from app.web.proxy import trusted_peer

# Endpoints that need no principal: liveness and the page's public files; and signing out,
# which uses one when there is one (an expired session must still be able to clear its cookie).
PUBLIC_ENDPOINTS = frozenset({"ops.healthz", "static"})
OPEN_ENDPOINTS = frozenset({"session.end"})
PAGE_ENDPOINTS = frozenset({"pages.index", "pages.example_eventsource"})

# Query parameters that would carry a credential. Refused whatever their value.
KEY_PARAMS = frozenset({"api_key", "apikey", "api-key", "x-api-key", "x_api_key", "key", "token",
                        "access_token", "auth", "authorization", "bearer", "session"})

# The GET routes that stream (EventSource): the only ones other origins may read (CORS).
_CORS_PATHS = re.compile(r"/stream|/streams/[^/]+/events")
_CORS_HEADERS = "Authorization, X-API-Key, Last-Event-ID"

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="sluice"'}


def settings() -> Settings:
    """The app's settings."""
    return current_app.config["SLUICE_SETTINGS"]  # type: ignore[no-any-return]


def principal_for_key(key: str) -> str:
    """The principal of an API key: a digest, stable across hosts, that cannot be used as a key."""
    return "key:" + hashlib.sha256(b"sluice principal\0" + key.encode()).hexdigest()[:32]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def match_key(presented: str, keys: tuple[str, ...]) -> str | None:
    """The configured key equal to `presented`, or None. Constant time: every key is compared,
    as fixed-length digests (so neither the length nor the index of a key leaks)."""
    want = _digest(presented)
    found = None
    for key in keys:
        if hmac.compare_digest(want, _digest(key)):
            found = key
    return found


def _unauthorized(message: str = "Authentication required: send an API key in the Authorization header "
                                 "(Bearer), or sign in for a session") -> RequestError:
    return RequestError(401, message, type="authentication", headers=dict(_CHALLENGE))


def reject_key_in_url() -> None:
    """A credential in the query string is refused (401), whatever its value."""
    if any(name.lower() in KEY_PARAMS for name in request.args):
        raise _unauthorized("Keys are never accepted in a URL (URLs are logged and end up in history); "
                            "send it in the Authorization header")


def presented_key() -> str | None:
    """The key sent in `Authorization: Bearer` or `X-API-Key`; None when neither is sent."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("X-API-Key")


def via_trusted_proxy(cfg: Settings) -> bool:
    """True when this request came through the SLUICE_PROXY_COUNT proxies in front.

    Two checks: the last proxy's own address (the TCP peer) is one gunicorn trusts as well
    (FORWARDED_ALLOW_IPS, default loopback; a unix socket always), and X-Forwarded-For holds
    at least one hop per proxy. The proxy must also overwrite the user header on every request
    (docs/security.md): the app cannot tell a header its proxy passed along from one it set.
    """
    if cfg.proxy_count < 1:
        return False
    orig = request.environ.get("werkzeug.proxy_fix.orig", {})
    peer = orig.get("REMOTE_ADDR", request.environ.get("REMOTE_ADDR")) or ""
    forwarded = orig.get("HTTP_X_FORWARDED_FOR", request.environ.get("HTTP_X_FORWARDED_FOR")) or ""
    hops = [h for h in forwarded.split(",") if h.strip()]
    return len(hops) >= cfg.proxy_count and trusted_peer(peer, cfg.proxy_addresses)


def trusted_user(cfg: Settings) -> str | None:
    """The principal named by the trusted proxy's user header, if this request came through it."""
    if not cfg.trusted_user_header:
        return None
    value = request.headers.get(cfg.trusted_user_header, "").strip()
    if not value or len(value) > 256 or not value.isprintable() or not via_trusted_proxy(cfg):
        return None
    return "user:" + value


def authenticate() -> Response | None:
    """Set `g.principal` and `g.auth_via` for this request, or refuse it (401)."""
    g.principal, g.auth_via = None, None
    reject_key_in_url()
    cfg = settings()
    if not cfg.auth_on or request.method == "OPTIONS" or request.endpoint in PUBLIC_ENDPOINTS:
        return None  # a CORS preflight never carries credentials
    key = presented_key()
    if key is not None:
        matched = match_key(key, cfg.api_keys) if cfg.api_keys else None
        if matched is None:
            raise _unauthorized("The API key is not valid")
        g.principal, g.auth_via = principal_for_key(matched), "key"
        return None
    user = trusted_user(cfg)
    if user is not None:
        g.principal, g.auth_via = user, "proxy"
        return None
    cookie = session.cookie_value()
    if cookie:
        who = session.sessions().principal(cookie)
        # A session ends with its key: removing a key from SLUICE_API_KEYS signs its browsers out.
        if who is not None and who in {principal_for_key(k) for k in cfg.api_keys}:
            g.principal, g.auth_via = who, "session"
            return None
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if request.endpoint in PAGE_ENDPOINTS and _wants_html():
        return sign_in_page()
    if cookie:
        raise _unauthorized("The session has expired or was ended; sign in again")
    raise _unauthorized()


def _wants_html() -> bool:
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def sign_in_page() -> Response:
    """A browser opening a page without a principal: the sign-in form, with status 401."""
    metrics.request_rejected(401)
    html = render_template("signin.html", keys=bool(settings().api_keys))
    return Response(html, status=401, mimetype="text/html", headers={**_CHALLENGE, "Cache-Control": "no-store"})


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else None


def allowed_origin(origin: str) -> bool:
    """True for an origin listed in SLUICE_ALLOWED_ORIGINS."""
    return origin.rstrip("/").lower() in {o.lower() for o in settings().allowed_origins}


def check_same_site() -> None:
    """Cross-site POSTs (and DELETEs) get 403: an Origin, or else a Referer, that is neither us
    nor allowed."""
    if request.method not in ("POST", "DELETE", "PUT", "PATCH"):
        return
    source = request.headers.get("Origin")
    if source is None or source == "null":
        referer = request.headers.get("Referer")
        if referer:
            # A Referer that is no absolute URL names no origin: not ours, and not "no header".
            source = _origin_of(referer) or "null"
    if source is None:
        return  # curl, scripts: not a browser's cross-site request
    origin = _origin_of(source) if source != "null" else None
    # Compare hosts, not schemes: behind a TLS-terminating proxy we see http for an https page.
    if origin is not None and urlsplit(origin).netloc == request.host.lower():
        return
    if origin is not None and allowed_origin(origin):
        return
    raise RequestError(403, "Cross-site requests are not allowed from this origin", type="permission")


def check_fetch_site() -> None:
    """A cookie is sent by the browser itself, also on requests that a page of a sibling site
    (another origin of the same site: SameSite does not tell them apart) makes. For those,
    modern browsers say `Sec-Fetch-Site: same-site` (or `cross-site`): only an allowed Origin,
    or a user's navigation to a page, may then use the session, or the proxy's login, which
    rests on the site's own cookie (403 otherwise)."""
    if g.get("auth_via") not in ("session", "proxy"):
        return
    if request.headers.get("Sec-Fetch-Site") not in ("same-site", "cross-site"):
        return  # same-origin, typed in the address bar, or a browser that does not say
    if request.endpoint in PAGE_ENDPOINTS and request.headers.get("Sec-Fetch-Mode") == "navigate":
        return
    origin = request.headers.get("Origin")
    if origin and allowed_origin(origin):
        return
    raise RequestError(403, "This request comes from another site; its origin is not allowed", type="permission")


def principal() -> str | None:
    """Who is calling (None with authentication off): the owner of what this request starts."""
    who: str | None = g.get("principal")
    return who


def client_key() -> str:
    """Who counts against SLUICE_MAX_STREAMS_PER_CLIENT: the principal, else the address."""
    who = principal()
    return f"principal:{who}" if who else f"ip:{request.remote_addr or '-'}"


STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'; object-src 'none'"
)


def add_cors(response: Response) -> None:
    """CORS for the GET streams, for SLUICE_ALLOWED_ORIGINS only, with credentials (cookies).

    The Fetch standard's rules for a credentialed response: the exact origin (never `*`),
    `Access-Control-Allow-Credentials: true`, and `Vary: Origin` so that no cache hands one
    origin's answer to another. Other routes never answer CORS: other origins may POST
    (SLUICE_ALLOWED_ORIGINS passes the same-site check) but not read the answer.
    """
    if not _CORS_PATHS.fullmatch(request.path):
        return
    preflight = request.method == "OPTIONS"
    if not preflight and request.method not in ("GET", "HEAD"):
        return
    response.vary.add("Origin")
    origin = request.headers.get("Origin")
    if not origin or not allowed_origin(origin):
        return
    if preflight and request.headers.get("Access-Control-Request-Method", "GET") != "GET":
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Credentials"] = "true"
    if preflight:
        response.headers["Access-Control-Allow-Methods"] = "GET"
        response.headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"


def add_headers(response: Response) -> Response:
    """CORS for the GET streams; a strict CSP on HTML pages that did not set their own."""
    add_cors(response)
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", STRICT_CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def init_app(app: Flask) -> None:
    """Install the checks on every request, and the session routes; warn if left open."""
    session.init_app(app)
    exposure.warn_if_exposed(app.config["SLUICE_SETTINGS"])

    @app.before_request
    def _guard() -> Response | None:
        page = authenticate()
        if page is None:
            check_same_site()
            check_fetch_site()
        return page

    app.after_request(add_headers)
