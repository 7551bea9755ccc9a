"""Issue 19, item 2: the replay cap with Redis, and gaps that must never be silent.

A generation the worker forgot (SLUICE_REPLAY_MAX_BYTES) is still replayed from Redis while its
keys live. A resume that Redis cannot serve in full (its events stream trimmed by MAXLEN) is
answered as for an unknown id, never with a jump in `seq`.
"""

from __future__ import annotations

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.redis.conftest import wait_for
from tests.support.sse import open_stream

pytestmark = pytest.mark.timeout(120)


def _finish(url: str, prompt: str) -> list:
    stream = open_stream(f"{url}/stream", params={"prompt": prompt}, timeout=30)
    assert stream.response.status_code == 200
    events = stream.rest()
    assert events[-1].data == "[DONE]"
    return events


def test_a_generation_forgotten_by_its_worker_is_replayed_from_redis(
    redis_server, start_sluice, quiet_fake: FakeUpstream
) -> None:
    server = start_sluice(redis_server.url, SLUICE_REPLAY_MAX_BYTES="16384")
    first = _finish(server.url, "first [fake tokens=60]")
    sid = first[0].json["stream_id"]
    for i in range(40):
        _finish(server.url, f"n{i} [fake tokens=60]")
    resumed = open_stream(f"{server.url}/streams/{sid}/events", headers={"Last-Event-ID": f"{sid}:3"})
    assert resumed.response.status_code == 200
    assert [(e.id, e.data) for e in resumed.rest()] == [(e.id, e.data) for e in first[3:]]
    status = requests.get(f"{server.url}/streams/{sid}", timeout=5)
    assert status.status_code == 200 and status.json()["state"] == "done"


def test_a_resume_into_a_trimmed_stream_is_204_never_a_jump(
    redis_server, start_sluice, quiet_fake: FakeUpstream
) -> None:
    a = start_sluice(redis_server.url)
    b = start_sluice(redis_server.url)
    events = _finish(a.url, "x [fake tokens=120]")
    sid = events[0].json["stream_id"]
    key = f"sluice:{{{sid}}}:events"
    r = redis_server.client()
    assert wait_for(lambda: r.xlen(key) == len(events), 5)
    # What MAXLEN does to a long answer: the oldest entries are gone.
    r.xtrim(key, maxlen=20, approximate=False)
    last = len(events)
    for seq in (0, 5, last - 25):
        headers = {"Last-Event-ID": f"{sid}:{seq}"} if seq else {}
        resp = requests.get(f"{b.url}/streams/{sid}/events", headers=headers, timeout=5)
        # As for an unknown id: 204 on a resume, 404 on an attach from the start.
        assert resp.status_code == (204 if seq else 404), (seq, resp.status_code, resp.text[:200])
    # What is still there in full is replayed, from the seq asked for.
    tail = open_stream(f"{b.url}/streams/{sid}/events", headers={"Last-Event-ID": f"{sid}:{last - 10}"})
    assert tail.response.status_code == 200
    assert [(e.id, e.data) for e in tail.rest()] == [(e.id, e.data) for e in events[last - 10:]]
