"""Operations routes: liveness, readiness, metrics."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from app.lifecycle.registry import Registry
from app.observability import metrics

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready to take streams: not draining, and the shared backend (if any) answers."""
    reg: Registry = current_app.extensions["sluice"]
    reg.ensure_started()
    if reg.draining:
        return jsonify({"status": "draining"}), 503
    ok, reason = reg.backend.ready()
    if not ok:
        return jsonify({"status": "unavailable", "reason": reason}), 503
    return jsonify({"status": "ready", "backend": reason}), 200


@bp.get("/metrics")
def metrics_view() -> Response:
    """Prometheus text format, merged across workers."""
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)
