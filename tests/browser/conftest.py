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

# `browser` and `page` live in tests/conftest.py: Chromium is launched once per session for
# every folder (a second sync_playwright() while the first is alive fails in its asyncio loop).
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def web(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    """Sluice for browser tests: 1 s disconnect grace, the fake upstream as Anthropic."""
    with Gunicorn(sluice_env(upstream, SLUICE_MAX_STREAMS_PER_CLIENT="50",
                             SLUICE_MAX_RESPONSES_PER_CLIENT="50")) as server:
        yield server


def artifact(name: str) -> Path:
    """Where a test saves a screenshot (not committed)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


class HeldScript:
    """A page script the browser asked for and does not get until `release()`: the page is then
    parsed up to that script's tag, as on a slow connection, and stops there."""

    def __init__(self, page: Any, pattern: str) -> None:
        self.page, self.pattern = page, pattern
        self.routes: list[Any] = []
        page.route(pattern, self._hold)

    def _hold(self, route: Any) -> None:
        self.routes.append(route)

    def release(self) -> None:
        for route in self.routes:
            route.continue_()
        self.page.unroute(self.pattern)
