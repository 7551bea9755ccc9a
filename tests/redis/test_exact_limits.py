"""Issue 22 item 1: the generation limits are exact under parallel requests with Redis (a reserve
that nothing can slip through between the check and the count), on one worker and across two."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn

pytestmark = pytest.mark.timeout(120)

PARALLEL = 40


@pytest.fixture(autouse=True)
def empty_redis(redis_server) -> None:  # type: ignore[no-untyped-def]
    """Each test on an empty Redis: the stalled streams of the one before were on a host that
    was stopped at once (SIGQUIT), whose places stay held until its liveness lapses (15 s)."""
    redis_server.client().flushall()


def create_many(urls: list[str]) -> list[int]:
    def one(n: int) -> int:
        resp = requests.post(f"{urls[n % len(urls)]}/streams", json={"prompt": "x [fake stall_after=0]"}, timeout=30)
        return resp.status_code

    with ThreadPoolExecutor(PARALLEL) as pool:
        return sorted(pool.map(one, range(PARALLEL)))


def test_the_per_client_limit_is_exact_across_hosts(redis_server, start_sluice: Callable[..., Gunicorn],  # type: ignore[no-untyped-def]
                                                    quiet_fake: FakeUpstream) -> None:
    hosts = [start_sluice(redis_server.url, SLUICE_MAX_STREAMS_PER_CLIENT="8") for _ in range(2)]
    statuses = create_many([h.url for h in hosts])
    assert statuses == [201] * 8 + [429] * (PARALLEL - 8), statuses


def test_the_per_worker_limit_is_exact(redis_server, start_sluice: Callable[..., Gunicorn],  # type: ignore[no-untyped-def]
                                       quiet_fake: FakeUpstream) -> None:
    host = start_sluice(redis_server.url, SLUICE_MAX_STREAMS="5")
    statuses = create_many([host.url])
    assert statuses == [201] * 5 + [503] * (PARALLEL - 5), statuses
