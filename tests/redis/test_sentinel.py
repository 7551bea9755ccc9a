"""Issue 22 item 3: a Sentinel-managed primary (`redis+sentinel://`). Two Sluice hosts (two
workers each) share a primary, its replica and three sentinels (Debian's redis-sentinel, started
once for the module): everything that works across hosts works the same, and a
`SENTINEL FAILOVER` in the middle of streams loses nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.fake_upstream.script import answer_tokens
from tests.support.servers import Gunicorn
from tests.support.sse import Event, Stream, open_stream, text_of

from .conftest import follow_to_end, redis_env, two_hosts, wait_for
from .sentinel import SentinelTopology

pytestmark = pytest.mark.timeout(180)

KEY_A, KEY_B, KEY_C = "sentinel-key-alpha-0123456789", "sentinel-key-bravo-9876543210", "sentinel-key-limit-5555555555"
A, B, C = ({"Authorization": f"Bearer {k}"} for k in (KEY_A, KEY_B, KEY_C))
LIMIT = 6


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    topo = SentinelTopology(tmp_path_factory.mktemp("sentinel")).start()
    yield topo
    topo.stop()


@pytest.fixture(scope="module")
def hosts(topology: SentinelTopology, fake: FakeUpstream) -> Iterator[tuple[Gunicorn, Gunicorn]]:
    env = redis_env(
        fake, None,
        SLUICE_API_KEYS=f"{KEY_A},{KEY_B},{KEY_C}",
        SLUICE_SECRET_KEY="sentinel-shared-secret-" + "k" * 20,
        SLUICE_MAX_STREAMS_PER_CLIENT=str(LIMIT),
    )
    with two_hosts(env, workers=2, redis_url=topology.url) as both:
        yield both


def cancel(host: Gunicorn, sid: str, headers: dict[str, str] = A) -> requests.Response:
    return requests.post(host.url + "/cancel", json={"stream_id": sid}, headers=headers, timeout=10)


def stalled_stream(host: Gunicorn) -> Stream:
    """A stream that stalls after its first tokens, until it is cancelled."""
    s = open_stream(host.url + "/stream", method="POST", headers=A, json={"prompt": "x [fake stall_after=2]"},
                    timeout=60)
    s.until("text")
    return s


def cancelled_through(host: Gunicorn, stream: Stream) -> None:
    """A cancel through `host` reaches the stream's owner within seconds (202 "pending" while
    that host's Redis connections are being rebuilt), and the stream ends `cancelled`."""
    assert wait_for(lambda: cancel(host, stream.stream_id).json().get("status") == "cancelled", 20, interval=0.2)
    end = stream.rest()
    assert [e.type for e in end[-2:]] == ["cancelled", "[DONE]"] and end[-2].json["reason"] == "user"


def assert_whole(events: list[Event], tokens: int) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), [e.seq for e in events]
    assert [e.type for e in events[-2:]] == ["done", "[DONE]"], [e.type for e in events[-4:]]
    assert text_of(events) == "".join(answer_tokens(tokens))


def test_both_hosts_are_ready_through_sentinel(hosts: tuple[Gunicorn, Gunicorn], topology: SentinelTopology) -> None:
    for host in hosts:
        resp = requests.get(host.url + "/readyz", headers=A, timeout=10)
        assert resp.status_code == 200, resp.text
    # Sluice writes to the primary Sentinel names, and the replica has it too.
    assert wait_for(lambda: topology.servers[1].client().keys("sluice:*"), 10)


def test_cancel_on_the_other_host(hosts: tuple[Gunicorn, Gunicorn], quiet_fake: FakeUpstream) -> None:
    one, two = hosts
    s = open_stream(one.url + "/stream", method="POST", headers=A, json={"prompt": "x [fake stall_after=2]"})
    s.until("text")
    resp = cancel(two, s.stream_id)
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled", resp.text
    events = s.rest()
    assert [e.type for e in events[-2:]] == ["cancelled", "[DONE]"] and events[-2].json["reason"] == "user"
    assert quiet_fake.wait_closed(5)


def test_resume_attach_and_status_on_the_other_host(hosts: tuple[Gunicorn, Gunicorn],
                                                   quiet_fake: FakeUpstream) -> None:
    one, two = hosts
    s = open_stream(one.url + "/stream", method="POST", headers=A, json={"prompt": "x [fake tokens=30 pace=0.03]"})
    s.until(lambda e: e.seq >= 8)
    s.close()  # the browser's connection drops; it comes back through the other host
    first = [e for e in s.events if e.seq <= 8]
    rest = open_stream(f"{two.url}/streams/{s.stream_id}/events", headers={**A, "Last-Event-ID": first[-1].id}).rest()
    assert_whole(first + rest, 30)
    attached = open_stream(f"{two.url}/streams/{s.stream_id}/events", headers=A).rest()
    assert_whole(attached, 30)
    status = requests.get(f"{two.url}/streams/{s.stream_id}", headers=A, timeout=10).json()
    assert status["state"] == "done" and status["usage"]["output_tokens"] == 30
    assert quiet_fake.request_count == 1


def test_an_early_cancel_on_one_host_stops_a_start_on_the_other(hosts: tuple[Gunicorn, Gunicorn],
                                                                quiet_fake: FakeUpstream) -> None:
    one, two = hosts
    sid = "sentinel-early-cancel-0001"
    assert cancel(two, sid).status_code == 202
    s = open_stream(one.url + "/stream", method="POST", headers=A,
                    json={"prompt": "x [fake tokens=3]", "stream_id": sid})
    events = s.rest()
    assert [e.type for e in events] == ["start", "cancelled", "[DONE]"]
    assert quiet_fake.request_count == 0


def test_a_stranger_on_the_other_host_sees_nothing_and_cancels_nothing(hosts: tuple[Gunicorn, Gunicorn],
                                                                       quiet_fake: FakeUpstream) -> None:
    one, two = hosts
    s = open_stream(one.url + "/stream", method="POST", headers=A, json={"prompt": "x [fake tokens=40 pace=0.03]"})
    s.until("text")
    sid = s.stream_id
    assert requests.get(f"{two.url}/streams/{sid}", headers=B, timeout=10).status_code == 404
    assert requests.get(f"{two.url}/streams/{sid}/events", headers=B, timeout=10).status_code == 404
    assert cancel(two, sid, B).json()["status"] == "pending"
    assert_whole(s.rest(), 40)  # the stranger's cancel did not take


def test_sign_out_on_one_host_ends_the_session_on_the_other(hosts: tuple[Gunicorn, Gunicorn]) -> None:
    one, two = hosts
    browser = requests.Session()
    assert browser.post(one.url + "/session", headers=A, timeout=10).status_code == 204
    value = browser.cookies["sluice_session"]
    assert requests.get(two.url + "/readyz", cookies={"sluice_session": value}, timeout=10).status_code == 200
    assert browser.delete(two.url + "/session", timeout=10).status_code == 204
    for host in (one, two):
        assert requests.get(host.url + "/readyz", cookies={"sluice_session": value}, timeout=10).status_code == 401


def test_the_per_client_limit_holds_across_hosts(hosts: tuple[Gunicorn, Gunicorn], quiet_fake: FakeUpstream) -> None:
    urls = [h.url for h in hosts]

    def create(n: int) -> requests.Response:
        return requests.post(f"{urls[n % 2]}/streams", json={"prompt": "x [fake stall_after=0]"}, headers=C, timeout=30)

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(create, range(24)))
    assert sorted(r.status_code for r in answers) == [201] * LIMIT + [429] * (24 - LIMIT)
    made = [r.json()["stream_id"] for r in answers if r.status_code == 201]
    for n, sid in enumerate(made):  # cancelled through either host: the places are given back
        assert cancel(hosts[n % 2], sid, C).json()["status"] == "cancelled"
    again: list[str] = []

    def one_more() -> bool:
        resp = create(len(again))
        if resp.status_code == 201:
            again.append(resp.json()["stream_id"])
        return len(again) == LIMIT

    assert wait_for(one_more, 15)
    assert create(0).status_code == 429
    for sid in again:
        assert cancel(hosts[0], sid, C).json()["status"] == "cancelled"


def test_with_every_sentinel_down_sluice_keeps_the_primary_it_knows(topology: SentinelTopology,
                                                                    fake: FakeUpstream) -> None:
    # One worker per host: a worker learns the primary on its first request, and one that never
    # reached a sentinel cannot know it.
    env = redis_env(fake, None, SLUICE_API_KEYS=KEY_A, SLUICE_SECRET_KEY="sentinel-shared-secret-" + "k" * 20)
    primary = topology.primary()
    replica = next(s for s in topology.servers if s is not primary)
    with two_hosts(env, workers=1, redis_url=topology.url) as (one, two):
        for host in (one, two):
            assert requests.get(host.url + "/readyz", headers=A, timeout=10).status_code == 200
        for s in topology.sentinels:
            s.stop()
        try:
            stalled = stalled_stream(one)
            # Every connection Sluice holds is cut: the new ones cannot ask a sentinel.
            for kind in ("normal", "pubsub"):
                primary.client().client_kill_filter(_type=kind, skipme=True)
            cancelled_through(two, stalled)
            for host in (one, two):
                ready = host.url + "/readyz"
                assert wait_for(lambda u=ready: requests.get(u, headers=A, timeout=10).status_code == 200, 10)
        finally:
            for s in topology.sentinels:
                s.start()
            topology.wait_settled(primary, replica)


def test_a_failover_mid_stream_loses_nothing(hosts: tuple[Gunicorn, Gunicorn], topology: SentinelTopology,
                                             quiet_fake: FakeUpstream) -> None:
    one, two = hosts
    tokens = 120
    running = open_stream(one.url + "/stream", method="POST", headers=A,
                          json={"prompt": f"x [fake tokens={tokens} pace=0.05]"}, timeout=30)
    running.until("text")
    follower = open_stream(f"{two.url}/streams/{running.stream_id}/events", headers=A, timeout=30)
    follower.until("text")
    stalled = stalled_stream(one)

    new, old = topology.failover()
    cancelled_through(two, stalled)

    # The running stream went on: whole on its own host, and whole for the follower on the
    # other (cut by the failover maybe, then resumed with Last-Event-ID as EventSource does).
    assert_whole(running.rest(), tokens)
    with contextlib.suppress(requests.RequestException):
        follower.rest()
    seen = follow_to_end(two.url, running.stream_id, list(follower.events), 30, headers=A)
    assert_whole(seen, tokens)
    status = requests.get(f"{two.url}/streams/{running.stream_id}", headers=A, timeout=10).json()
    assert status["state"] == "done" and status["events"] == len(seen), status
    assert topology.primary() is new and old is not new

    # A new stream after the failover: resumed and attached through the other host.
    later = open_stream(one.url + "/stream", method="POST", headers=A, json={"prompt": "x [fake tokens=20 pace=0.03]"})
    later.until(lambda e: e.seq >= 5)
    later.close()
    first = [e for e in later.events if e.seq <= 5]
    resumed = {**A, "Last-Event-ID": first[-1].id}
    rest = open_stream(f"{two.url}/streams/{later.stream_id}/events", headers=resumed).rest()
    assert_whole(first + rest, 20)


def test_the_primary_dies_mid_stream(hosts: tuple[Gunicorn, Gunicorn], topology: SentinelTopology,
                                     quiet_fake: FakeUpstream) -> None:
    """Last in the module: the primary is gone for good, and Sentinel promotes the replica."""
    one, two = hosts
    dead = topology.primary()
    heir = next(s for s in topology.servers if s is not dead)
    tokens = 100
    running = open_stream(one.url + "/stream", method="POST", headers=A,
                          json={"prompt": f"x [fake tokens={tokens} pace=0.05]"}, timeout=30)
    running.until("text")
    stalled = stalled_stream(one)
    dead.stop()
    assert wait_for(lambda: all(s.master_port() == heir.port for s in topology.sentinels), 30, interval=0.1)
    cancelled_through(two, stalled)
    assert_whole(running.rest(), tokens)
    # The other host replays the whole answer from the new primary.
    replay = open_stream(f"{two.url}/streams/{running.stream_id}/events", headers=A, timeout=30).rest()
    assert_whole(replay, tokens)
