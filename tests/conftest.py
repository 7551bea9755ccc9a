"""Fixtures for tests that run Sluice for real: gunicorn -k gevent in front of the fake upstream."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn, base_env
from tests.support.system import in_ci, require_binary

UPSTREAM_KEY = "sk-ant-test-upstream-key-7Hq2"

# Property tests and the schema fuzz (hypothesis) search at random on a developer's machine, and
# from a fixed seed under CI: a case the search happens upon first fails a local run, never a
# landing that did not touch what it found. `HYPOTHESIS_PROFILE=explore` searches at random in CI too.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore")
if in_ci():
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each schemathesis item (one per API operation) its own node id.

    schemathesis names an item `test_x[GET /stream]` but leaves every one the node id of the
    function, and pytest-xdist schedules by node id: 11 operations ran as one."""
    for item in items:
        node = item._id  # pytest's NodeId (pinned pytest: 9.2)
        if node.params is None and node.names and item.name.startswith(f"{node.names[-1]}["):
            item._id = node.with_params(item.name[len(node.names[-1]) + 1 : -1])
    twice = [nodeid for nodeid, n in Counter(item.nodeid for item in items).items() if n > 1]
    if twice:
        raise pytest.UsageError(f"tests sharing a node id (pytest-xdist would run one of them): {twice[:5]}")


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    """One wire-level fake of both providers for the whole session."""
    with FakeUpstream() as server:
        yield server


def sluice_env(upstream: FakeUpstream, **overrides: str) -> dict[str, str]:
    """Environment for a Sluice server whose providers point at the fake upstream."""
    env = base_env(
        SLUICE_PROVIDER="anthropic",
        ANTHROPIC_API_KEY=UPSTREAM_KEY,
        ANTHROPIC_BASE_URL=upstream.anthropic_base_url,
        OPENAI_API_KEY=UPSTREAM_KEY,
        OPENAI_BASE_URL=upstream.openai_base_url,
        SLUICE_DISCONNECT_GRACE_SECONDS="1",
        SLUICE_HEARTBEAT_SECONDS="2",
    )
    env.update(overrides)
    return env


@pytest.fixture
def fresh(upstream: FakeUpstream) -> FakeUpstream:
    """The fake upstream with no open connection left by an earlier test, and no history."""
    upstream.wait_closed(5)
    upstream.reset()
    return upstream


@pytest.fixture
def start_sluice(upstream: FakeUpstream) -> Iterator[Callable[..., Gunicorn]]:
    """Start a gunicorn running Sluice with extra env; stopped at the end of the test."""
    servers: list[Gunicorn] = []

    def start(workers: int = 1, **env: str) -> Gunicorn:
        server = Gunicorn(sluice_env(upstream, **env), workers=workers).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def sluice(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    """One Sluice server per test module, with the defaults of `sluice_env`."""
    with Gunicorn(sluice_env(upstream)) as server:
        yield server


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
