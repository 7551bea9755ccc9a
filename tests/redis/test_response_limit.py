"""SLUICE_MAX_RESPONSES_PER_CLIENT across hosts: one principal's open responses are counted on
every worker and host sharing Redis, exactly (an atomic reserve), and a dead worker's places
come back once its liveness runs out."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.security.conftest import KEY_A, KEY_B, SECRET, bearer
from tests.security.test_response_limit import refused, until_opens
from tests.support.servers import Gunicorn
from tests.support.sse import Stream, open_stream, types

from .conftest import redis_env, wait_for

pytestmark = pytest.mark.timeout(120)

LIMIT = 4


@pytest.fixture
def hosts(redis_server, fake: FakeUpstream) -> Iterator[tuple[Gunicorn, Gunicorn]]:  # type: ignore[no-untyped-def]
    """Two hosts (one worker each) sharing Redis, keys A and B."""
    env = redis_env(fake, redis_server.url, SLUICE_API_KEYS=f"{KEY_A},{KEY_B}", SLUICE_SECRET_KEY=SECRET,
                    SLUICE_MAX_RESPONSES_PER_CLIENT=str(LIMIT))
    a, b = Gunicorn(env).start(), Gunicorn(env).start()
    yield a, b
    a.close()
    b.close()


def running(host: Gunicorn, key: str = KEY_A) -> Stream:
    stream = open_stream(f"{host.url}/stream", params={"prompt": "x [fake stall_after=1]"}, headers=bearer(key))
    stream.until("text")
    return stream


def attach(host: Gunicorn, sid: str, key: str = KEY_A) -> Stream:
    return open_stream(f"{host.url}/streams/{sid}/events", headers=bearer(key))


def worker_pid(host: Gunicorn) -> int:
    assert host.proc is not None
    children = Path(f"/proc/{host.proc.pid}/task/{host.proc.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_responses_are_counted_across_hosts(hosts: tuple[Gunicorn, Gunicorn], quiet_fake: FakeUpstream) -> None:
    a, b = hosts
    first = running(a)  # 1: a stream on A
    sid = first.stream_id
    held = [attach(b, sid), attach(b, sid), attach(a, sid)]  # 2 attaches through B (Redis), 1 on A
    for stream in held:
        assert stream.response.status_code == 200
        stream.until("text")
    for host in (a, b):
        over = attach(host, sid).response
        assert refused(over), over.status_code
    assert refused(requests.post(f"{b.url}/stream", json={"prompt": "y"}, headers=bearer(KEY_A), timeout=5))
    # Another principal streams on either host.
    for host in (a, b):
        other = open_stream(f"{host.url}/stream", params={"prompt": "z [fake tokens=2]"}, headers=bearer(KEY_B))
        assert types(other.rest())[-2:] == ["done", "[DONE]"]
    # A client of B's that goes away gives its place back, to a request on A.
    held.pop(0).close()
    again = until_opens(lambda: attach(a, sid))
    assert again.response.status_code == 200
    requests.post(f"{a.url}/cancel", json={"stream_id": sid}, headers=bearer(KEY_A), timeout=5)
    for stream in (first, *held, again):
        assert types(stream.rest())[-1] == "[DONE]"


def test_parallel_requests_on_both_hosts_get_exactly_the_limit(hosts: tuple[Gunicorn, Gunicorn],
                                                               quiet_fake: FakeUpstream) -> None:
    a, b = hosts
    sid = requests.post(f"{a.url}/streams", json={"prompt": "x [fake stall_after=1]"}, headers=bearer(KEY_A),
                        timeout=5).json()["stream_id"]

    def one(n: int) -> Stream:
        return attach((a, b)[n % 2], sid)

    with ThreadPoolExecutor(24) as pool:
        streams = list(pool.map(one, range(24)))
    statuses = sorted(s.response.status_code for s in streams)
    assert statuses == [200] * LIMIT + [429] * (24 - LIMIT), statuses
    requests.post(f"{a.url}/cancel", json={"stream_id": sid}, headers=bearer(KEY_A), timeout=5)
    for s in streams:
        s.close()


def test_a_dead_workers_places_come_back(hosts: tuple[Gunicorn, Gunicorn], quiet_fake: FakeUpstream) -> None:
    a, b = hosts
    sid = requests.post(f"{a.url}/streams", json={"prompt": "x [fake stall_after=1]"}, headers=bearer(KEY_A),
                        timeout=5).json()["stream_id"]
    on_b = [attach(b, sid) for _ in range(LIMIT)]
    assert all(s.response.status_code == 200 for s in on_b)
    assert refused(attach(a, sid).response)
    # B's worker dies without a word (its master starts another, which holds nothing).
    os.kill(worker_pid(b), signal.SIGKILL)
    start = time.monotonic()
    back = until_opens(lambda: attach(a, sid), seconds=40)
    assert back.response.status_code == 200, "a dead worker's places never came back"
    assert time.monotonic() - start < 30
    requests.post(f"{a.url}/cancel", json={"stream_id": sid}, headers=bearer(KEY_A), timeout=5)
    for s in (*on_b, back):
        s.close()
    assert wait_for(lambda: requests.get(f"{b.url}/healthz", timeout=2).status_code == 200, 20)


