"""Issue 22 item 4: two Sluice hosts on a real Redis Cluster (three primaries, a replica each)
do everything they do on one Redis, with no CROSSSLOT or moved-slot error, and a primary
failover in the middle of a stream loses nothing."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.fake_upstream.script import answer_tokens
from tests.security.conftest import KEY_A, KEY_B, SECRET, assert_sign_out_spreads, bearer
from tests.support.servers import Gunicorn
from tests.support.sse import Event, Stream, open_stream, text_of
from tests.support.system import require_binary

from .cluster_support import RedisClusterProcess
from .conftest import redis_env, start_together, wait_for
from .test_exact_limits import PARALLEL, create_many
from .test_two_hosts import _children

pytestmark = pytest.mark.timeout(180)

A = bearer(KEY_A)
B = bearer(KEY_B)
BUDGET = "10000000"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterProcess]:
    server = RedisClusterProcess(require_binary("redis-server", "/usr/bin/redis-server"),
                                 require_binary("redis-cli", "/usr/bin/redis-cli")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hosts(cluster: RedisClusterProcess, fake: FakeUpstream) -> Iterator[tuple[Gunicorn, Gunicorn]]:
    """Host A (one worker, so that B never holds A's generations) and host B (two workers)."""
    env = redis_env(fake, cluster.url, SLUICE_API_KEYS=f"{KEY_A},{KEY_B}", SLUICE_SECRET_KEY=SECRET,
                    SLUICE_BUDGET_TOKENS=BUDGET)
    a, b = Gunicorn(env, workers=1), Gunicorn(env, workers=2)
    try:
        start_together(a, b)
        for host in (a, b):
            assert requests.get(host.url + "/readyz", headers=A, timeout=5).status_code == 200, host.log()
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def clean_logs(hosts: tuple[Gunicorn, Gunicorn]) -> Iterator[None]:
    """After the test: no cluster error reached either host's log."""
    yield
    for host in hosts:
        log = host.log()
        for error in ("CROSSSLOT", "MOVED", "ASK ", "TRYAGAIN", "CLUSTERDOWN", "Traceback"):
            assert error not in log, log[-4000:]


def assert_continuous(events: list[Event], tokens: int) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), [e.seq for e in events]
    assert events[0].type == "start"
    assert [e.type for e in events[-2:]] == ["done", "[DONE]"]
    assert text_of(events) == "".join(answer_tokens(tokens))


def test_cancel_on_b_stops_a_generation_on_a(cluster, hosts, quiet_fake: FakeUpstream, clean_logs) -> None:
    a, b = hosts
    # Each started worker listens by sharded pub/sub, on one node; none by plain pub/sub.
    assert wait_for(lambda: len(cluster.shard_channels()) >= 2, 10), cluster.shard_channels()
    assert cluster.plain_channels() == []
    s = open_stream(a.url + "/stream", params={"prompt": "x [fake stall_after=2]"}, headers=A)
    s.until("text")
    t0 = time.monotonic()
    resp = requests.post(b.url + "/cancel", json={"stream_id": s.stream_id}, headers=A, timeout=5)
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled", resp.text
    events = s.rest()
    assert [e.type for e in events[-2:]] == ["cancelled", "[DONE]"]
    assert events[-2].at - t0 < 3.0
    assert quiet_fake.wait_closed(5)


def test_resume_on_b_and_attach_from_b(hosts, quiet_fake: FakeUpstream, clean_logs) -> None:
    a, b = hosts
    s = open_stream(a.url + "/stream", params={"prompt": "x [fake tokens=40 pace=0.03]"}, headers=A)
    first = []
    for ev in s:
        first.append(ev)
        if len(first) == 12:
            break
    s.close()
    r = open_stream(b.url + "/stream", params={"prompt": "ignored"}, headers={**A, "Last-Event-ID": first[-1].id})
    assert r.response.status_code == 200
    assert_continuous(first + r.rest(), 40)

    created = requests.post(a.url + "/streams", json={"prompt": "y [fake tokens=30 pace=0.03]"}, headers=A, timeout=5)
    assert created.status_code == 201
    sid = created.json()["stream_id"]
    assert requests.get(f"{b.url}/streams/{sid}", headers=A, timeout=5).json()["state"] == "running"
    assert_continuous(open_stream(f"{b.url}/streams/{sid}/events", headers=A).rest(), 30)
    assert requests.get(f"{b.url}/streams/{sid}", headers=A, timeout=5).json()["state"] == "done"
    assert quiet_fake.request_count == 2


def test_early_cancel_on_b_of_a_stream_started_on_a(hosts, quiet_fake: FakeUpstream, clean_logs) -> None:
    a, b = hosts
    sid = "cluster-early-cancel-0123456789"
    resp = requests.post(b.url + "/cancel", json={"stream_id": sid}, headers=A, timeout=5)
    assert resp.status_code == 202 and resp.json()["status"] == "pending"
    events = open_stream(a.url + "/stream", params={"prompt": "x [fake tokens=5]", "stream_id": sid}, headers=A).rest()
    assert [e.type for e in events] == ["start", "cancelled", "[DONE]"]
    assert quiet_fake.request_count == 0


def test_another_key_can_neither_see_nor_cancel_it(hosts, quiet_fake: FakeUpstream, clean_logs) -> None:
    a, b = hosts
    s = open_stream(a.url + "/stream", params={"prompt": "x [fake tokens=30 pace=0.03]"}, headers=A)
    s.until("text")
    sid = s.stream_id
    assert requests.get(f"{b.url}/streams/{sid}", headers=B, timeout=5).status_code == 404
    other = requests.post(b.url + "/cancel", json={"stream_id": sid}, headers=B, timeout=5)
    assert other.json()["status"] != "cancelled"
    assert open_stream(f"{b.url}/streams/{sid}/events", headers=B).response.status_code == 404
    assert s.rest()[-2].type == "done"


def test_sign_out_on_a_ends_the_session_on_b(hosts, clean_logs) -> None:
    a, b = hosts
    assert_sign_out_spreads(a.url, b.url, KEY_A, "/usage")


def test_a_budget_is_shared_by_both_hosts(hosts, quiet_fake: FakeUpstream, clean_logs) -> None:
    a, b = hosts
    before = requests.get(f"{b.url}/usage", headers=B, timeout=5).json()["used_tokens"]
    events = open_stream(a.url + "/stream", params={"prompt": "a [fake tokens=20]"}, headers=B).rest()
    spent = events[-2].json["usage"]["input_tokens"] + events[-2].json["usage"]["output_tokens"]
    assert requests.get(f"{b.url}/usage", headers=B, timeout=5).json()["used_tokens"] == before + spent


def test_the_per_client_limit_is_exact_across_hosts(cluster, start_sluice, quiet_fake: FakeUpstream) -> None:
    two = [start_sluice(cluster.url, SLUICE_MAX_STREAMS_PER_CLIENT="8") for _ in range(2)]
    statuses = create_many([h.url for h in two])
    assert statuses == [201] * 8 + [429] * (PARALLEL - 8), statuses
    for host in two:
        assert "CROSSSLOT" not in host.log() and "MOVED" not in host.log()


def test_a_primary_failover_mid_stream_loses_nothing(cluster, hosts, quiet_fake: FakeUpstream, clean_logs) -> None:
    a, b = hosts
    s, follower = start_followed(a.url, b.url, 300)
    sid = s.stream_id
    # The primary of the slot that carries A's messages hands over to its replica: A's
    # subscription moves along. Then the primary of the generation's slot (if another).
    assert a.proc is not None
    pid = _children(a.proc.pid)[0]
    channel = next(ch for ch in cluster.shard_channels() if f"-{pid}-" in ch)
    _, new = cluster.fail_over(channel)
    assert wait_for(lambda: channel in cluster.shard_channels(new), 10), "A's subscription did not move"
    key = f"sluice:{{{sid}}}:events"
    if cluster.primary_of(key) is not new:
        cluster.fail_over(key)
    # Status through B: at once, or (a 503 while B found Redis moving) within seconds.
    assert wait_for(lambda: requests.get(f"{b.url}/streams/{sid}", headers=A, timeout=5).json().get("state")
                    == "running", 10), requests.get(f"{b.url}/streams/{sid}", headers=A, timeout=5).text
    assert_both_got_all(s, follower, b.url, 300)
    # A cancel across hosts reaches A on the new primary.
    t = open_stream(a.url + "/stream", params={"prompt": "x [fake stall_after=2]"}, headers=A)
    t.until("text")
    resp = requests.post(b.url + "/cancel", json={"stream_id": t.stream_id}, headers=A, timeout=5)
    assert resp.json()["status"] == "cancelled"
    assert t.rest()[-2].type == "cancelled"


def test_a_slot_migration_mid_stream_loses_nothing(cluster, hosts, quiet_fake: FakeUpstream, clean_logs) -> None:
    a, b = hosts
    s, follower = start_followed(a.url, b.url, 200)
    sid = s.stream_id
    key = f"sluice:{{{sid}}}:events"
    _, target = cluster.migrate_slot(key)
    assert cluster.primary_of(key) is target
    assert_both_got_all(s, follower, b.url, 200)
    assert requests.get(f"{b.url}/streams/{sid}", headers=A, timeout=5).json()["state"] == "done"


def start_followed(url_a: str, url_b: str, tokens: int) -> tuple[Stream, Stream]:
    """A paced answer on A, and a follower of it on B, both under way."""
    s = open_stream(url_a + "/stream", params={"prompt": f"x [fake tokens={tokens} pace=0.03]"}, headers=A)
    s.until("text")
    follower = open_stream(f"{url_b}/streams/{s.stream_id}/events", headers=A, timeout=30)
    follower.until("text")
    return s, follower


def assert_both_got_all(direct: Stream, follower: Stream, url: str, tokens: int) -> None:
    """The client on A and the follower on B (resuming, as EventSource does, if its read was
    cut short) both get the whole answer, the same events."""
    events = direct.rest()
    assert_continuous(events, tokens)
    with contextlib.suppress(requests.RequestException):
        follower.rest()
    assert [e.data for e in follow_on(url, direct.stream_id, follower.events, 30)] == [e.data for e in events]


def follow_on(url: str, sid: str, events: list[Event], seconds: float) -> list[Event]:
    """Resume with Last-Event-ID (as key A) until `[DONE]` or time is up."""
    deadline = time.monotonic() + seconds
    while events[-1].data != "[DONE]" and time.monotonic() < deadline:
        s = open_stream(f"{url}/streams/{sid}/events", headers={**A, "Last-Event-ID": events[-1].id}, timeout=10)
        assert s.response.status_code == 200, s.response.status_code
        with contextlib.suppress(requests.RequestException):
            s.rest()
        events = [*events, *s.events]
    return events
