"""The server-rendered pages: the chat page (`/`) and the smallest integration example.

The chat page carries no inline script or style, so it runs under the strict policy the app
sets on `/`. The example page is deliberately one file with one inline script; it gets a fresh
nonce per response and its own Content-Security-Policy header, set here in the view.
"""

from __future__ import annotations

import secrets

from flask import Blueprint, Response, current_app, g, render_template

from app.toolbox import toolbox_for

bp = Blueprint("pages", __name__)

# Everything but the script source is the same strict policy as on `/`.
_CSP = (
    "default-src 'self'; script-src {script_src}; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


@bp.get("/")
def index() -> Response:
    """The chat page: prompt, provider and model choice, Send, Cancel, the streamed answer."""
    settings = current_app.config["SLUICE_SETTINGS"]
    providers = settings.providers_available()
    # Suggestions for the model box: the configured defaults, then any named allowed model.
    models: list[str] = []
    for name in [model for _, model in providers] + list(settings.allowed_models):
        if name != "*" and name not in models:
            models.append(name)
    # A browser signed in with a session gets a Sign out button (app.web.session).
    signed_in = g.get("auth_via") == "session"
    # Every tool a request may name (built-in and SLUICE_TOOLS), its description as a tooltip.
    toolbox = toolbox_for(settings)
    tools = [(name, toolbox.spec(name).description) for name in sorted(toolbox.names())]
    profiles = [p.public() for _, p in sorted(settings.profiles.items())]
    html = render_template("index.html", providers=providers, models=models, tools=tools, signed_in=signed_in,
                           profiles=profiles, default_profile=settings.default_profile,
                           budgets=settings.budget_tokens is not None or any(
                               p.budget_tokens is not None for p in settings.profiles.values()))
    return Response(html, mimetype="text/html")


@bp.get("/examples/eventsource")
def example_eventsource() -> Response:
    """Native EventSource on `GET /stream`, in about twenty lines of inline script."""
    nonce = secrets.token_urlsafe(16)
    html = render_template("examples/eventsource.html", nonce=nonce)
    resp = Response(html, mimetype="text/html")
    # Trap: the app-wide policy must not replace this one (two policies are both enforced,
    # and one without the nonce blocks the inline script).
    resp.headers["Content-Security-Policy"] = _CSP.format(script_src=f"'self' 'nonce-{nonce}'")
    resp.headers["Cache-Control"] = "no-store"
    return resp
