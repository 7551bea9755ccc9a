"""Budgets in Redis (issue 23): a restart of Sluice loses nothing Redis holds, and with Redis
unreachable a request that needs a budget is refused (503) rather than run unmetered."""

from __future__ import annotations

import pytest
import requests

from tests.contract.conftest import no_upstream_call
from tests.fake_upstream import FakeUpstream
from tests.support.sse import open_stream

from .conftest import wait_for

pytestmark = pytest.mark.timeout(120)

BUDGET = "5000"


def usage(url: str) -> requests.Response:
    return requests.get(url + "/usage", timeout=5)


def test_budget_survives_a_restart_and_fails_closed_without_redis(
    redis_server, start_sluice, quiet_fake: FakeUpstream
) -> None:
    first = start_sluice(redis_server.url, workers=2, SLUICE_BUDGET_TOKENS=BUDGET)
    events = open_stream(first.url + "/stream", params={"prompt": "a [fake tokens=20]"}).rest()
    spent = events[-2].json["usage"]["input_tokens"] + events[-2].json["usage"]["output_tokens"]
    assert usage(first.url).json()["used_tokens"] == spent
    first.stop()

    second = start_sluice(redis_server.url, workers=1, SLUICE_BUDGET_TOKENS=BUDGET)
    assert usage(second.url).json()["used_tokens"] == spent  # kept in Redis, not in the workers

    redis_server.stop()
    marker = "unmetered-7c1e"
    refused = requests.get(second.url + "/stream", params={"prompt": f"{marker} [fake tokens=5]"}, timeout=10)
    assert refused.status_code == 503 and refused.headers["Retry-After"], refused.text
    assert refused.json()["error"]["type"] == "overloaded"
    no_upstream_call(quiet_fake, marker=marker)
    assert usage(second.url).status_code == 503

    redis_server.start()
    assert wait_for(lambda: requests.get(second.url + "/readyz", timeout=5).status_code == 200, 20)
    again = open_stream(second.url + "/stream", params={"prompt": "b [fake tokens=5]"}).rest()
    assert again[-2].type == "done"
