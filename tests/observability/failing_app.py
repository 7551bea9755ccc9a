"""`wsgi:app` with one route that fails: for the test of how an unhandled error is logged."""

from __future__ import annotations

import os

from wsgi import app  # noqa: I001 (wsgi patches with gevent first)


@app.get("/fail")
def fail() -> None:
    """An unhandled error whose text holds the upstream key (as a provider's error may echo it)."""
    raise RuntimeError(f"the provider said: invalid x-api-key {os.environ['ANTHROPIC_API_KEY']}")
