"""Headless Chromium (Debian's, driven by Playwright; never a downloaded browser) against Sluice
under real gunicorn, whose providers point at the wire-level fake upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import ROOT, Gunicorn
from tests.support.system import require_binary

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # This machine has no internet: without these, Chromium keeps trying to reach Google.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = require_binary("chromium", "/usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    yield page
    context.close()


@pytest.fixture(scope="module")
def web(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    """Sluice for browser tests: 1 s disconnect grace, the fake upstream as Anthropic."""
    with Gunicorn(sluice_env(upstream, SLUICE_MAX_STREAMS_PER_CLIENT="50")) as server:
        yield server


def artifact(name: str) -> Path:
    """Where a test saves a screenshot (not committed)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
