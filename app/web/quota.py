"""What a caller may ask for and spend: `GET /profiles` and `GET /usage`."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from app.lifecycle.registry import Registry
from app.web.security import client_key, principal, settings

bp = Blueprint("quota", __name__)


@bp.get("/profiles")
def profiles() -> Response:
    """The profiles a request may name: name, description, what a client may still set."""
    return jsonify({"profiles": [p.public() for _, p in sorted(settings().profiles.items())]})


@bp.get("/usage")
def usage() -> Response:
    """The caller's own budget in this window: used, reserved, remaining (per profile too)."""
    reg: Registry = current_app.extensions["sluice"]
    reg.ensure_started()
    return jsonify(reg.budgets.usage(principal() or client_key()))
