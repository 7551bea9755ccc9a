"""Cancel, attach, resume and ownership "whichever worker or host holds the generation": two
Sluice hosts sharing one Redis and one session secret (CONTRACT "Identity, reconnects and cancel",
"Authentication and ownership")."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import sluice_env
from tests.contract.conftest import attach, check_well_formed, expected, kinds, terminal, text
from tests.fake_upstream import FakeUpstream
from tests.redis.conftest import two_hosts
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream

pytestmark = pytest.mark.timeout(60)

KEY_A, KEY_B = "two-hosts-key-alpha-0123456789", "two-hosts-key-bravo-9876543210"
A, B = {"Authorization": f"Bearer {KEY_A}"}, {"Authorization": f"Bearer {KEY_B}"}


@pytest.fixture(scope="module")
def hosts(upstream: FakeUpstream) -> Iterator[tuple[Gunicorn, Gunicorn]]:
    env = sluice_env(
        upstream,
        SLUICE_API_KEYS=f"{KEY_A},{KEY_B}",
        SLUICE_SECRET_KEY="two-hosts-shared-secret-" + "k" * 20,
        SLUICE_MAX_STREAMS_PER_CLIENT="50", SLUICE_MAX_RESPONSES_PER_CLIENT="50",
    )
    with two_hosts(env) as both:
        yield both


def test_readyz_with_the_backend_up(hosts: tuple[Gunicorn, Gunicorn]) -> None:
    for host in hosts:
        assert requests.get(host.url + "/readyz", headers=A, timeout=10).status_code == 200


def test_cancel_on_the_other_host(hosts: tuple[Gunicorn, Gunicorn], fresh: FakeUpstream) -> None:
    one, two = hosts
    stream = open_stream(
        one.url + "/stream", method="POST", headers=A, json={"prompt": "x [fake tokens=50 stall_after=2]"}
    )
    stream.until("text")
    assert fresh.wait_open(1, 5)
    resp = requests.post(two.url + "/cancel", json={"stream_id": stream.stream_id}, headers=A, timeout=10)
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled", resp.text
    end = terminal(check_well_formed(stream.rest()))
    assert end["type"] == "cancelled" and end["reason"] == "user"
    assert fresh.wait_closed(5)


def test_attach_resume_and_status_on_the_other_host(hosts: tuple[Gunicorn, Gunicorn], fresh: FakeUpstream) -> None:
    one, two = hosts
    made = requests.post(one.url + "/streams", json={"prompt": "x [fake tokens=30 pace=0.04]"}, headers=A, timeout=10)
    sid = made.json()["stream_id"]
    first = attach(two, sid, headers=A)
    first.until(lambda e: e.seq >= 4)
    first.close()
    seen = [e for e in first.events if e.seq <= 4]
    rest = attach(two, sid, last=f"{sid}:4", headers=A).rest()
    events = check_well_formed(seen + rest, sid)
    assert text(events) == expected(30)
    st = requests.get(f"{two.url}/streams/{sid}", headers=A, timeout=10).json()
    assert st["state"] == "done" and st["usage"]["output_tokens"] == 30
    assert fresh.request_count == 1


def test_a_session_from_one_host_works_on_the_other(hosts: tuple[Gunicorn, Gunicorn], fresh: FakeUpstream) -> None:
    one, two = hosts
    s = requests.Session()
    assert s.post(one.url + "/session", headers=A, timeout=10).status_code == 204
    made = s.post(two.url + "/streams", json={"prompt": "x [fake tokens=2]"}, timeout=10)
    assert made.status_code == 201, made.text


def test_a_stranger_on_the_other_host_sees_nothing_and_cancels_nothing(
    hosts: tuple[Gunicorn, Gunicorn], fresh: FakeUpstream
) -> None:
    one, two = hosts
    stream = open_stream(
        one.url + "/stream", method="POST", headers=A, json={"prompt": "x [fake tokens=50 stall_after=2]"}
    )
    try:
        stream.until("text")
        sid = stream.stream_id
        assert requests.get(f"{two.url}/streams/{sid}", headers=B, timeout=10).status_code == 404
        assert requests.get(f"{two.url}/streams/{sid}/events", headers=B, timeout=10).status_code == 404
        c = requests.post(two.url + "/cancel", json={"stream_id": sid}, headers=B, timeout=10)
        assert c.status_code == 202 and c.json()["status"] == "pending"
        time.sleep(0.5)  # a cancel that wrongly took effect would show by now
        assert requests.get(f"{two.url}/streams/{sid}", headers=A, timeout=10).json()["state"] == "running"
    finally:
        requests.post(two.url + "/cancel", json={"stream_id": stream.stream_id}, headers=A, timeout=10)
    assert terminal(stream.rest())["reason"] == "user"


def test_an_early_cancel_on_one_host_stops_a_start_on_the_other(
    hosts: tuple[Gunicorn, Gunicorn], fresh: FakeUpstream
) -> None:
    one, two = hosts
    sid = "two-hosts-early-cancel-0001"
    assert requests.post(two.url + "/cancel", json={"stream_id": sid}, headers=A, timeout=10).status_code == 202
    events = check_well_formed(
        open_stream(
            one.url + "/stream", method="POST", headers=A, json={"prompt": "x [fake tokens=3]", "stream_id": sid}
        ).rest(),
        sid,
    )
    assert kinds(events) == ["start", "cancelled", "[DONE]"]
    time.sleep(0.3)
    assert fresh.request_count == 0
