"""Sluice: stream LLM answers to ordinary web pages over Server-Sent Events."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from app.backends import build_backend
from app.backends.workers import MultiprocessCheck, warn_if_unshared
from app.config import Settings
from app.delivery import takeover
from app.delivery.loop_writer import LoopWriters
from app.lifecycle.registry import Registry
from app.observability.logging import adopt, configure_logging
from app.process import shutdown
from app.providers import ProviderPool
from app.seams import gevent as seams_gevent
from app.toolbox import toolbox_for
from app.web.proxy import TrustedProxyFix

ROOT = Path(__file__).resolve().parent.parent


def create_app(settings: Settings | None = None) -> Flask:
    """The app factory. Opens no connection: the backend starts on the first request."""
    # The profiles file is read here, in each worker as it starts: a reload re-reads it.
    # (Imported here: `python -m app.profiles` must find the module not yet imported.)
    from app import profiles

    settings = profiles.load(settings or Settings.from_env())
    configure_logging(secrets=settings.secrets)
    app = Flask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
        static_url_path="/static",
    )
    adopt(app.logger)  # Flask's own lines (an unhandled error's traceback): JSON, redacted
    app.config["SLUICE_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # "/streams//events" is an unknown stream (404 JSON), not an HTML redirect to another path.
    app.url_map.merge_slashes = False

    toolbox_for(settings)  # imports SLUICE_TOOLS now: a bad entry stops the worker, with its name
    providers = ProviderPool(settings)
    providers.warm()  # checks the SDKs' and HTTP client's internals (app/seams) too
    seams_gevent.check()  # the real socket under gevent's (the EOF watch)
    registry = Registry(settings, build_backend(settings), providers)
    app.extensions["sluice"] = registry
    # The streams written from the event loop (app.delivery.takeover): the drain waits for them.
    writers = LoopWriters()
    worker = shutdown.install(registry, settings.shutdown_grace_seconds, writers)

    from app.web import bodies, errors, hosts, ops, pages, quota, security, streams

    hosts.init_app(app)  # first: a Host this server does not answer is refused before anything else
    bodies.init_app(app)
    security.init_app(app)
    errors.init_app(app)
    app.register_blueprint(streams.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(quota.bp)
    if settings.proxy_count > 0:
        # X-Forwarded-* only from the proxy's own address (FORWARDED_ALLOW_IPS): app.web.proxy.
        app.wsgi_app = TrustedProxyFix(app.wsgi_app, settings.proxy_count, settings.proxy_addresses)  # type: ignore[method-assign]
    takeover.install(app, worker, writers)  # outermost: it sees the response every other layer has finished
    if not registry.backend.shared:
        if worker is not None:
            warn_if_unshared(int(worker.cfg.workers))
        else:
            app.wsgi_app = MultiprocessCheck(app.wsgi_app)  # type: ignore[method-assign]
    # The worker freezes the heap this left once it is loaded (worker start: app.process.worker).
    return app

