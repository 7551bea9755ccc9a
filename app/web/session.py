"""Browser sessions: a key sent once, in a header, to `POST /session` becomes a cookie.

An `EventSource` cannot send headers, so a page needs something the browser sends by itself.
The cookie holds a signed, expiring session id and the principal it was issued to — never the
key:

    sluice_session = base64({"sid": <128 random bits>, "p": "key:<digest of the key>", "exp": <unix time>})
                     .<time>.<signature>

itsdangerous signs it with SLUICE_SECRET_KEY (HMAC-SHA256 under a key derived from the secret
and a salt, with the issue time), so every host that shares the secret accepts it and nobody
without the secret can make one. It is HttpOnly (no script reads it), SameSite=Strict (no
other site's page makes the browser send it) and Secure over HTTPS.

Ending a session. A signed cookie stays valid by itself until it expires, so `DELETE /session`
does two things: it clears the cookie in the browser, and it puts the session id on a
revocation list until the time the cookie would have expired: the backend's `revocations`
(app.backends.base.Revocations). With SLUICE_REDIS_URL it lives in Redis
(app.backends.redis.revocations), so a copied cookie stops working on every worker and host;
without Redis it lives in this process only. A
session whose key was removed from SLUICE_API_KEYS stops working at once, everywhere.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable

from flask import Blueprint, Flask, Response, current_app, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.backends.base import Revocations
from app.config import Settings
from app.errors import RequestError
from app.lifecycle.registry import Registry

log = logging.getLogger("sluice.security")

bp = Blueprint("session", __name__)

COOKIE = "sluice_session"
_SALT = "sluice.session.v1"


class Sessions:
    """Issues, checks and ends session cookies (see the module docstring)."""

    def __init__(self, settings: Settings, revocations: Callable[[], Revocations]) -> None:
        secret = settings.secret_key
        if secret is None:
            secret = secrets.token_urlsafe(32)
            if settings.api_keys:
                log.warning(
                    "SLUICE_SECRET_KEY is not set: session cookies are signed with a key made for "
                    "this process only; a session made on another worker or host, or before a "
                    "restart, is refused (401). Set SLUICE_SECRET_KEY, the same on every host."
                )
        self.max_age = settings.session_seconds
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256})
        self._revocations = revocations

    def issue(self, principal: str) -> str:
        """A new cookie value for `principal`."""
        expires = round(time.time() + self.max_age, 3)
        return self._serializer.dumps({"sid": secrets.token_urlsafe(16), "p": principal, "exp": expires})

    def _load(self, value: str) -> tuple[str, str, float] | None:
        """(session id, principal, expiry) of a genuine, unexpired cookie, else None.

        Trap: the expiry is the signed `exp`, not itsdangerous' `max_age`, which counts whole
        seconds (a 1 s session would live up to 2 s) and refuses a cookie stamped a moment
        "in the future" by a host whose clock runs a little ahead. The signed issue time still
        ends sessions older than a lifetime that was shortened since they were made.
        """
        try:
            data, issued = self._serializer.loads(value, return_timestamp=True)
        except BadSignature:  # forged, tampered with, or signed with another secret
            return None
        if not isinstance(data, dict):
            return None
        sid, principal, expires = data.get("sid"), data.get("p"), data.get("exp")
        if not isinstance(sid, str) or not isinstance(principal, str) or not isinstance(expires, (int, float)):
            return None
        now = time.time()
        if now >= expires or now - issued.timestamp() > self.max_age + 1:
            return None
        return sid, principal, float(expires)

    def principal(self, value: str) -> str | None:
        """The principal of a valid, unrevoked session cookie; None for anything else."""
        loaded = self._load(value)
        if loaded is None or self.revoked(loaded[0]):
            return None
        return loaded[1]

    def end(self, value: str) -> None:
        """Revoke the session of this cookie value (if it is a genuine one) until it expires."""
        loaded = self._load(value)
        if loaded is None:
            return
        sid, _, until = loaded
        self._revocations().revoke(sid, until)

    def revoked(self, sid: str) -> bool:
        """True when `sid` was ended here or (with Redis) anywhere."""
        return self._revocations().revoked(sid)


def sessions() -> Sessions:
    """This app's sessions."""
    return current_app.extensions["sluice_sessions"]  # type: ignore[no-any-return]


def cookie_value() -> str | None:
    """The session cookie sent with this request, if any."""
    return request.cookies.get(COOKIE)


@bp.post("/session")
def create() -> Response:
    """Exchange a key (in a header) for a session cookie: 204."""
    cfg: Settings = current_app.config["SLUICE_SETTINGS"]
    if not cfg.api_keys:
        raise RequestError(404, "Sessions are not used here: SLUICE_API_KEYS is not set", type="not_found")
    if g.get("auth_via") != "key":
        # A session must not renew itself: a stolen cookie would then never expire.
        raise RequestError(401, "Send an API key in the Authorization header (Bearer) or in X-API-Key",
                           type="authentication", headers={"WWW-Authenticate": 'Bearer realm="sluice"'})
    resp = Response(status=204, headers={"Cache-Control": "no-store"})
    resp.set_cookie(COOKIE, sessions().issue(g.principal), max_age=int(sessions().max_age), path="/",
                    httponly=True, samesite="Strict", secure=request.is_secure)
    return resp


@bp.delete("/session")
def end() -> Response:
    """End this browser's session: revoke it and clear the cookie (204, also without one)."""
    value = cookie_value()
    if value:
        sessions().end(value)
    resp = Response(status=204, headers={"Cache-Control": "no-store"})
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=request.is_secure)
    return resp


def init_app(app: Flask) -> None:
    """Make this app's `Sessions` and add the routes."""

    def revocations() -> Revocations:
        registry: Registry = app.extensions["sluice"]
        registry.ensure_started()  # the shared backend connects on first use, not at import
        return registry.backend.revocations

    app.extensions["sluice_sessions"] = Sessions(app.config["SLUICE_SETTINGS"], revocations)
    app.register_blueprint(bp)
