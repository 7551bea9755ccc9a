"""Issue 9, the bug the chaos test found: a worker that drains (SIGTERM: a stop, or the old
worker of a reload) and finishes a stream while Redis is down must not exit before its mirror
has written the ending, when Redis comes back within the drain deadline. Otherwise a client
that resumes through another host gets 204 ("nothing more") and never sees how it ended.

If Redis does not come back in time, the worker still exits inside gunicorn's graceful
timeout, and says in its log what other hosts will miss."""

from __future__ import annotations

import signal
import time

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream

from .conftest import redis_env, wait_for

pytestmark = pytest.mark.timeout(120)

GRACEFUL = 10  # gunicorn's graceful_timeout: streams may run 7.5 s, the mirror be flushed until 7.5 s
SETTLE_LOG = "waiting for redis to take"  # logged by a drain that holds the worker for its mirror


def readyz(url: str) -> int:
    return requests.get(url + "/readyz", timeout=5).status_code


def start_host(fake: FakeUpstream, redis_url: str, **env: str) -> Gunicorn:
    return Gunicorn(redis_env(fake, redis_url, **env), workers=1, graceful_timeout=GRACEFUL).start()


def test_draining_worker_writes_the_ending_once_redis_is_back(redis_server, quiet_fake: FakeUpstream) -> None:
    a = start_host(quiet_fake, redis_server.url)
    b = start_host(quiet_fake, redis_server.url)
    try:
        local = open_stream(a.url + "/stream", params={"prompt": "x [fake tokens=40 pace=0.05]"}, timeout=20)
        local.until("text")
        redis_server.stop()
        assert a.proc is not None
        a.signal(signal.SIGTERM)  # A drains: its one stream runs on to the end, Redis down
        events = local.rest()
        assert [e.type for e in events[-2:]] == ["done", "[DONE]"]
        # The stream has ended on A and Redis is still down. A fixed worker holds on for its
        # mirror (and says so); the bug was that it exited here, its ending never written.
        wait_for(lambda: a.proc.poll() is not None or SETTLE_LOG in a.log(), 5)
        redis_server.start()  # the same port, empty (no persistence): A must write it all again
        assert a.proc.wait(GRACEFUL + 5) == 0
        assert wait_for(lambda: readyz(b.url) == 200, 15)
        # The browser lost its connection after the last text; it reconnects through host B.
        seen = events[-3]
        assert seen.type == "text"
        resumed = open_stream(
            b.url + f"/streams/{local.stream_id}/events", headers={"Last-Event-ID": seen.id}, timeout=10
        )
        assert resumed.response.status_code == 200, (resumed.response.status_code, a.log()[-3000:])
        tail = resumed.rest()
        assert [(e.type, e.id) for e in tail] == [(e.type, e.id) for e in events[-2:]]
        status = requests.get(b.url + f"/streams/{local.stream_id}", timeout=5).json()
        assert status["state"] == "done" and status["events"] == len(events)
    finally:
        if redis_server.proc is None:
            redis_server.start()
        a.stop()
        b.stop()


def test_draining_worker_gives_up_on_redis_at_its_deadline(redis_server, quiet_fake: FakeUpstream) -> None:
    a = start_host(quiet_fake, redis_server.url)
    try:
        local = open_stream(a.url + "/stream", params={"prompt": "x [fake tokens=20 pace=0.05]"}, timeout=20)
        local.until("text")
        redis_server.stop()
        a.signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert [e.type for e in local.rest()][-2:] == ["done", "[DONE]"]
        assert a.proc is not None and a.proc.wait(GRACEFUL + 5) == 0
        # Inside gunicorn's graceful timeout (the worker is not killed), and it says why it waited.
        assert time.monotonic() - t0 < GRACEFUL
        log = a.log()
        assert "Worker graceful timeout" not in log and "Worker exiting" in log  # not killed
        assert "redis did not take" in log and "1 generation" in log, log[-3000:]
    finally:
        if redis_server.proc is None:
            redis_server.start()
        a.stop()
