"""Issue 22 item 2: while Redis fails, every answer says what really happened (503 with
`Retry-After` where Sluice cannot know), and a cancel answered through another host tells the
generation's true end. Each of these answered a guess before (a 201, a 202, a `cancelled`)."""

from __future__ import annotations

import os
import secrets
import signal

import pytest
import requests

from app.backends.redis.keys import worker_alive
from tests.fake_upstream import FakeUpstream
from tests.support.sse import open_stream

from .conftest import wait_for

pytestmark = pytest.mark.timeout(120)


def chosen_id() -> str:
    return "client-" + secrets.token_urlsafe(16)


@pytest.fixture
def hosts(redis_server, start_sluice, quiet_fake: FakeUpstream):  # type: ignore[no-untyped-def]
    """Host A and host B on one Redis, one worker each."""
    return start_sluice(redis_server.url, workers=1), start_sluice(redis_server.url, workers=1)


def test_a_client_chosen_id_cannot_start_twice_while_redis_is_down(redis_server, hosts) -> None:  # type: ignore[no-untyped-def]
    # The same client-chosen id on two hosts while Redis is down: neither can know whether the
    # other runs it, so neither starts it (before: both answered 201 and ran it twice).
    # A server-made id (128 random bits) is nobody else's: it still starts and streams locally.
    a, b = hosts
    sid = chosen_id()
    redis_server.stop()
    try:
        for host in (a, b):
            r = requests.post(host.url + "/streams", json={"prompt": "x", "stream_id": sid}, timeout=10)
            assert r.status_code == 503, (r.status_code, r.text)
            assert r.headers["Retry-After"] == "1" and r.json()["error"]["type"] == "overloaded"
            assert r.json()["error"]["field"] == "stream_id"
        local = open_stream(a.url + "/stream", params={"prompt": "hi [fake tokens=3]"})
        assert [e.type for e in local.rest()][-2:] == ["done", "[DONE]"]
    finally:
        redis_server.start()
    # Once Redis can tell again, the id starts once; the same id again is the idempotent retry
    # (200, the same body, nothing started), on the other host too.
    assert wait_for(lambda: requests.get(b.url + "/readyz", timeout=5).status_code == 200, 20)
    assert wait_for(lambda: requests.get(a.url + "/readyz", timeout=5).status_code == 200, 20)
    first = requests.post(a.url + "/streams", json={"prompt": "x", "stream_id": sid}, timeout=10)
    assert first.status_code == 201, first.text
    again = requests.post(b.url + "/streams", json={"prompt": "x", "stream_id": sid}, timeout=10)
    assert again.status_code == 200 and again.json() == first.json(), again.text


def test_a_cancel_of_an_unknown_id_while_redis_is_down_is_not_pending(redis_server, hosts) -> None:  # type: ignore[no-untyped-def]
    # 202 `pending` promises that the id is remembered and a generation that starts with it is
    # cancelled at once. With Redis down the early cancel cannot be kept where the other hosts
    # see it, and the id may run elsewhere: 503, send it again (before: 202, and nothing kept).
    a, _ = hosts
    sid = chosen_id()
    redis_server.stop()
    try:
        r = requests.post(a.url + "/cancel", json={"stream_id": sid}, timeout=10)
        assert r.status_code == 503, (r.status_code, r.text)
        assert r.headers["Retry-After"] == "1" and r.json()["error"]["type"] == "overloaded"
    finally:
        redis_server.start()
    assert wait_for(lambda: requests.get(a.url + "/readyz", timeout=5).status_code == 200, 20)
    r = requests.post(a.url + "/cancel", json={"stream_id": sid}, timeout=10)
    assert r.status_code == 202 and r.json()["status"] == "pending", r.text


def test_a_cancel_through_another_host_after_the_owner_died_says_finished(redis_server, hosts) -> None:  # type: ignore[no-untyped-def]
    # The worker that ran the generation was killed: nothing can stop it any more, and it no
    # longer runs. A cancel through host B must not claim it stopped it (before: `cancelled`).
    a, b = hosts
    owner = open_stream(a.url + "/stream", params={"prompt": "x [fake tokens=400 pace=0.05]"})
    owner.until("text")
    r = redis_server.client()
    worker = r.hget(f"sluice:{{{owner.stream_id}}}:meta", "worker")
    assert worker, "the generation is not mirrored"
    os.kill(int(worker.split("-")[-2]), signal.SIGKILL)  # <host>-<pid>-<hex>: host A's worker
    owner.close()
    assert wait_for(lambda: not r.exists(worker_alive(worker)), 20), "the dead worker's alive key never expired"
    answer = requests.post(b.url + "/cancel", json={"stream_id": owner.stream_id}, timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "finished", answer.text


def test_a_cancel_through_another_host_of_a_running_generation_says_cancelled(hosts) -> None:  # type: ignore[no-untyped-def]
    # The counterpart: a generation that the cancel did stop is `cancelled`, and its stream says so.
    a, b = hosts
    owner = open_stream(a.url + "/stream", params={"prompt": "x [fake tokens=400 pace=0.05]"})
    owner.until("text")
    answer = requests.post(b.url + "/cancel", json={"stream_id": owner.stream_id}, timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled", answer.text
    assert [e.type for e in owner.rest()][-2:] == ["cancelled", "[DONE]"]
