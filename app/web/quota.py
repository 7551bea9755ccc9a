"""What a caller may ask for and spend: `GET /profiles` and `GET /usage`."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.web.security import settings

bp = Blueprint("quota", __name__)


@bp.get("/profiles")
def profiles() -> Response:
    """The profiles a request may name: name, description, what a client may still set."""
    return jsonify({"profiles": [p.public() for _, p in sorted(settings().profiles.items())]})
