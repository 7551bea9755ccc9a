"""Ownership and sessions on every worker and host: two hosts (one worker each) sharing Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.redis.conftest import RedisProcess, redis_server  # noqa: F401 (a fixture)
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, types

from .conftest import KEY_A, KEY_B, assert_sign_out_spreads, bearer, locked_env, sign_in

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def hosts(redis_server: RedisProcess, upstream: FakeUpstream) -> Iterator[tuple[Gunicorn, Gunicorn]]:  # noqa: F811
    env = locked_env(upstream, SLUICE_REDIS_URL=redis_server.url)
    with Gunicorn(env) as a, Gunicorn(env) as b:
        yield a, b


def test_a_stranger_on_another_host_gets_nothing(hosts: tuple[Gunicorn, Gunicorn], fresh: FakeUpstream) -> None:
    a, b = hosts
    owner = open_stream(f"{a.url}/stream", params={"prompt": "x [fake stall_after=1]"}, headers=bearer(KEY_A))
    owner.until("text")
    sid = owner.stream_id
    stranger = bearer(KEY_B)
    status = requests.get(f"{b.url}/streams/{sid}", headers=stranger, timeout=5)
    events = requests.get(f"{b.url}/streams/{sid}/events", headers=stranger, timeout=5)
    resume = requests.get(f"{b.url}/stream", headers={**stranger, "Last-Event-ID": f"{sid}:1"}, timeout=5)
    cancel = requests.post(f"{b.url}/cancel", json={"stream_id": sid}, headers=stranger, timeout=5)
    assert (status.status_code, events.status_code, resume.status_code) == (404, 404, 204)
    assert (cancel.status_code, cancel.json()["status"]) == (202, "pending")
    # The owner, on host B, sees it running (the cancel had no effect) and can stop it from there.
    mine = requests.get(f"{b.url}/streams/{sid}", headers=bearer(KEY_A), timeout=5)
    assert mine.status_code == 200 and mine.json()["state"] == "running" and "owner" not in mine.json()
    attached = open_stream(f"{b.url}/streams/{sid}/events", headers=bearer(KEY_A))
    attached.until("text")
    stop = requests.post(f"{b.url}/cancel", json={"stream_id": sid}, headers=bearer(KEY_A), timeout=5)
    assert stop.json()["status"] == "cancelled"
    assert types(owner.rest())[-2:] == ["cancelled", "[DONE]"]
    assert types(attached.rest())[-2:] == ["cancelled", "[DONE]"]
    # Finished: still nobody else's, on either host.
    for host in (a, b):
        assert requests.get(f"{host.url}/streams/{sid}", headers=stranger, timeout=5).status_code == 404
        assert requests.get(f"{host.url}/streams/{sid}/events", headers=stranger, timeout=5).status_code == 404


def test_a_stranger_on_the_owners_host_gets_nothing_either(hosts: tuple[Gunicorn, Gunicorn],
                                                           fresh: FakeUpstream) -> None:
    a, b = hosts
    browser = sign_in(b.url, KEY_A)
    created = browser.post(f"{b.url}/streams", json={"prompt": "x [fake stall_after=1]"}, timeout=5).json()
    sid = created["stream_id"]
    for host in (b, a):
        stranger = bearer(KEY_B)
        assert requests.get(f"{host.url}/streams/{sid}", headers=stranger, timeout=5).status_code == 404
        cancel = requests.post(f"{host.url}/cancel", json={"stream_id": sid}, headers=stranger, timeout=5)
        assert cancel.json()["status"] == "pending"
    assert browser.get(f"{b.url}/streams/{sid}", timeout=5).json()["state"] == "running"
    # The session cookie made on host B works on host A (the hosts share SLUICE_SECRET_KEY).
    stop = requests.post(f"{a.url}/cancel", json={"stream_id": sid}, cookies=browser.cookies, timeout=5)
    assert stop.json()["status"] == "cancelled"


def test_signing_out_on_one_host_ends_the_session_on_the_other(hosts: tuple[Gunicorn, Gunicorn]) -> None:
    a, b = hosts
    assert_sign_out_spreads(a.url, b.url, KEY_A, "/readyz")
