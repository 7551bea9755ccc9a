"""Schema-driven fuzz of the HTTP API (schemathesis) against docs/openapi.yaml, on a real
gunicorn -k gevent whose providers point at the fake upstream.

For every request schemathesis makes (valid ones and, mostly, invalid ones): never a 500, a
status the document lists, a 4xx that is JSON in the contract's error shape, an invalid request
rejected, and no upstream call for a rejected request (counted at the fake upstream). Bounded:
a fixed number of examples per route, well under a minute in all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis import checks as st_checks

from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import ROOT, Gunicorn

pytestmark = pytest.mark.timeout(180)

SCHEMA = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.yaml")
SCHEMA.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
# An invalid request may be refused for its size before its content is read: a body past the
# limit is 413, a request line past gunicorn's is 414 (schemathesis's default list has neither).
_REJECTION = SCHEMA.config.checks.negative_data_rejection
_REJECTION.expected_statuses = [*_REJECTION.expected_statuses, "413", "414"]
EXAMPLES = 15
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.negative_data_rejection,
]
RESUME_SKIPS = [st_checks.negative_data_rejection]
START_ROUTES = {("GET", "/stream"), ("POST", "/stream"), ("POST", "/streams")}
ERROR_TYPES = {"invalid_request", "authentication", "permission", "not_found", "rate_limit", "overloaded",
               "budget_exceeded"}


@pytest.fixture(scope="module")
def api(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    env = sluice_env(upstream, SLUICE_MAX_STREAMS_PER_CLIENT="100000",
                     SLUICE_MAX_RESPONSES_PER_CLIENT="100000", SLUICE_DEMO_TOKENS_PER_SECOND="5000")
    with Gunicorn(env) as server:
        yield server


def settle(api: Gunicorn, response: Any) -> None:
    """A generation created without a reader calls upstream later: wait until it has ended, so
    that the next case's count of upstream calls is its own."""
    if response.status_code not in (200, 201) or "status_url" not in response.text:
        return
    url = api.url + response.json()["status_url"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and requests.get(url, timeout=5).json()["state"] == "running":
        time.sleep(0.02)


@SCHEMA.exclude(path="/session").parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_holds_against_its_schema(case: Any, api: Gunicorn, upstream: FakeUpstream) -> None:
    before = upstream.request_count
    response = case.call(base_url=api.url, timeout=20)
    resuming = "Last-Event-ID" in (case.headers or {}) or "last_event_id" in (case.query or {})
    # A resume never starts anything, so it does not read the other parameters (contract):
    # invalid ones there are not rejected, the answer is 204 or the resumed stream.
    case.validate_response(response, checks=[c for c in CHECKS if not (resuming and c in RESUME_SKIPS)])
    status = response.status_code
    if status >= 400 and status != 414:  # 414 comes from gunicorn, before the app
        kind = response.headers.get("content-type", [""])[0]  # schemathesis: lowercase keys, lists
        assert kind.startswith("application/json"), (status, case.method, case.path, response.text[:200])
        error = response.json()["error"]
        assert error["type"] in ERROR_TYPES and error["message"], error
        assert upstream.request_count == before, f"a rejected request ({status}) reached the upstream"
    if (case.method, case.path) in START_ROUTES:
        settle(api, response)
