"""Issue 9: a Last-Event-ID beyond the end of a generation that runs on another host.

The response waits while the generation runs (the events may not have reached Redis yet), and
ends when it ends: it neither spins nor waits forever.
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.sse import open_stream

pytestmark = pytest.mark.timeout(120)


def test_a_follower_beyond_the_end_on_another_host_ends_with_the_generation(
    redis_server, start_sluice, quiet_fake: FakeUpstream
) -> None:
    a = start_sluice(redis_server.url)
    b = start_sluice(redis_server.url)
    stream = open_stream(f"{a.url}/stream", params={"prompt": "x [fake tokens=10 pace=0.05]"})
    stream.until("start")
    sid = stream.stream_id
    ahead = open_stream(f"{b.url}/streams/{sid}/events", headers={"Last-Event-ID": f"{sid}:99999"}, timeout=15)
    assert ahead.response.status_code == 200, "a running generation: the response waits"
    stream.rest()
    t0 = time.monotonic()
    assert ahead.rest() == []
    assert time.monotonic() - t0 < 8, "the response ends soon after the generation"
    assert requests.get(f"{b.url}/healthz", timeout=2).status_code == 200
    again = requests.get(f"{b.url}/streams/{sid}/events", headers={"Last-Event-ID": f"{sid}:99999"}, timeout=5)
    assert again.status_code == 204
