"""An existing server-rendered Flask site (its own users, login and session) that adds a streamed
answer with a Cancel button to one page, with Sluice running beside it as its own service.

nginx (nginx.conf beside this file) sends Sluice's paths to Sluice and the rest here. Before a
Sluice request, nginx asks this site who the user is (`auth_request` to `/auth`, with the
browser's cookie) and passes the answer to Sluice in `X-Sluice-User`, which Sluice believes only
from the proxy (SLUICE_TRUSTED_USER_HEADER + SLUICE_PROXY_COUNT). No API key reaches a browser,
and each user owns the generations they start.

Run it (docs/integrate.md): `gunicorn -b 127.0.0.1:8001 examples.existing_site.site:app`
"""

from __future__ import annotations

import os
import secrets
from functools import wraps
from typing import Any

from flask import Flask, Response, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

app = Flask(__name__)
# A real site has its own secret; several site processes must share it.
app.secret_key = os.environ.get("SITE_SECRET_KEY") or secrets.token_hex(32)
app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")

# Stand-in for the site's user table. The demo passwords are the user names reversed.
USERS = {name: generate_password_hash(name[::-1]) for name in ("alice", "bob")}


def login_required(view: Any) -> Any:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if "user" not in session:
            return redirect(url_for("login", next=request.path))
        return view(*args, **kwargs)

    return wrapped


@app.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        name = request.form.get("username", "")
        if name in USERS and check_password_hash(USERS[name], request.form.get("password", "")):
            session.clear()
            session["user"] = name
            target = request.args.get("next", "")
            return redirect(target if target.startswith("/") and not target.startswith("//") else url_for("ask"))
        error = "Wrong user name or password."
    return render_template("login.html", error=error)


@app.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("login"))


@app.get("/")
@login_required
def ask() -> str:
    """The site's page that gains a streamed answer and a Cancel button."""
    return render_template("ask.html", user=session["user"])


@app.get("/auth")
def auth() -> Response:
    """For nginx's auth_request only: 200 with the user's id, or 401. Never a page."""
    user = session.get("user")
    if not user:
        return Response(status=401)
    return Response(status=200, headers={"X-Site-User": user})
