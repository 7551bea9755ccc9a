"""Issue 9, a documented limit made a bound: a Redis that refuses every write for good (here:
out of memory under `noeviction`). The owner's mirror cannot write, so a follower on another
host sees no progress. It must not wait (or reconnect) forever: once the owner has not been
able to say it is alive for its alive-key TTL, the follower ends with `error` and `[DONE]`."""

from __future__ import annotations

import contextlib
import time

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.sse import open_stream

from .conftest import follow_to_end, wait_for

pytestmark = pytest.mark.timeout(120)


def test_follower_ends_when_redis_refuses_every_write(redis_server, start_sluice, quiet_fake: FakeUpstream) -> None:
    a, b = start_sluice(redis_server.url), start_sluice(redis_server.url)
    admin = redis_server.client()
    local = open_stream(a.url + "/stream", params={"prompt": "x [fake tokens=600 pace=0.05]"}, timeout=20)
    local.until("text")
    follower = open_stream(f"{b.url}/streams/{local.stream_id}/events", timeout=10)
    follower.until("text")
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")  # every write: OOM command not allowed
    try:
        t0 = time.monotonic()
        with contextlib.suppress(requests.RequestException):
            follower.rest()  # cut short, or ended
        seen = follow_to_end(b.url, local.stream_id, list(follower.events), 40)
        took = time.monotonic() - t0
        assert [e.type for e in seen[-2:]] == ["error", "[DONE]"], [e.type for e in seen[-4:]]
        error = seen[-2].json["error"]
        assert error["type"] == "internal" and error["retryable"] is True
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
        assert took < 25  # the owner's alive key (10 s), then the follower's next check (3 s)
        # The owner's own client is not affected.
        assert local.until("text")
    finally:
        admin.config_set("maxmemory", "0")
        local.close()
    assert wait_for(lambda: requests.get(a.url + "/readyz", timeout=5).status_code == 200, 10)
