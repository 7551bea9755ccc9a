"""A generation is its principal's: for anyone else it does not exist (one host; Redis: test_hosts)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, types

from .conftest import KEY_A, KEY_B, bearer, locked_env, sign_in

pytestmark = pytest.mark.timeout(60)


def _unknown_answers(url: str, headers: dict[str, str]) -> tuple[tuple[int, str], int, int]:
    """What a caller gets for an id nobody uses: (cancel status, cancel body status), status, events."""
    nobody = secrets.token_urlsafe(16)
    cancel = requests.post(f"{url}/cancel", json={"stream_id": nobody}, headers=headers, timeout=5)
    status = requests.get(f"{url}/streams/{nobody}", headers=headers, timeout=5)
    events = requests.get(f"{url}/streams/{nobody}/events", headers=headers, timeout=5)
    return (cancel.status_code, cancel.json()["status"]), status.status_code, events.status_code


def test_a_stranger_cannot_see_attach_to_or_cancel_a_generation(locked: Gunicorn, fresh: FakeUpstream) -> None:
    owner = open_stream(f"{locked.url}/stream", params={"prompt": "x [fake stall_after=1]"}, headers=bearer(KEY_A))
    owner.until("text")
    sid = owner.stream_id
    b_session = sign_in(locked.url, KEY_B).cookies["sluice_session"]
    for stranger in (bearer(KEY_B), {"Cookie": f"sluice_session={b_session}"}):
        cancel = requests.post(f"{locked.url}/cancel", json={"stream_id": sid}, headers=stranger, timeout=5)
        status = requests.get(f"{locked.url}/streams/{sid}", headers=stranger, timeout=5)
        events = requests.get(f"{locked.url}/streams/{sid}/events", headers=stranger, timeout=5)
        # Exactly as for an id that does not exist: nothing to probe.
        assert ((cancel.status_code, cancel.json()["status"]), status.status_code, events.status_code) == \
            _unknown_answers(locked.url, stranger) == ((202, "pending"), 404, 404)
        assert status.json()["error"]["type"] == "not_found"
        # A reconnect that names the stranger's id in Last-Event-ID is told to stop (204).
        resume = requests.get(f"{locked.url}/stream", headers={**stranger, "Last-Event-ID": f"{sid}:1"}, timeout=5)
        assert resume.status_code == 204
    # The owner's generation ran on, untouched.
    mine = requests.get(f"{locked.url}/streams/{sid}", headers=bearer(KEY_A), timeout=5).json()
    assert mine["state"] == "running" and "owner" not in mine
    done = requests.post(f"{locked.url}/cancel", json={"stream_id": sid}, headers=bearer(KEY_A), timeout=5)
    assert done.json()["status"] == "cancelled"
    assert types(owner.rest())[-2:] == ["cancelled", "[DONE]"]
    # Finished, it stays the owner's: a stranger still cannot replay it.
    assert requests.get(f"{locked.url}/streams/{sid}/events", headers=bearer(KEY_B), timeout=5).status_code == 404
    replay = open_stream(f"{locked.url}/streams/{sid}/events", headers=bearer(KEY_A)).rest()
    assert types(replay)[-2:] == ["cancelled", "[DONE]"]


def test_a_key_and_its_session_are_one_principal(locked: Gunicorn, fresh: FakeUpstream) -> None:
    browser = sign_in(locked.url, KEY_A)
    created = browser.post(f"{locked.url}/streams", json={"prompt": "x [fake tokens=2]"}, timeout=5).json()
    assert requests.get(locked.url + created["status_url"], headers=bearer(KEY_A), timeout=5).status_code == 200
    assert requests.get(locked.url + created["status_url"], headers=bearer(KEY_B), timeout=5).status_code == 404


def test_a_strangers_client_chosen_id_is_never_attached(locked: Gunicorn, fresh: FakeUpstream) -> None:
    sid = secrets.token_urlsafe(16)
    owner = open_stream(f"{locked.url}/stream", params={"prompt": "x [fake stall_after=1]", "stream_id": sid},
                        headers=bearer(KEY_A))
    owner.until("text")
    # The same id again from someone else: not a reattach (that would hand over the answer).
    again = requests.post(f"{locked.url}/streams", json={"prompt": "y", "stream_id": sid}, headers=bearer(KEY_B),
                          timeout=5)
    assert again.status_code == 409
    get = requests.get(f"{locked.url}/stream", params={"prompt": "y", "stream_id": sid}, headers=bearer(KEY_B),
                       timeout=5)
    assert get.status_code == 409
    requests.post(f"{locked.url}/cancel", json={"stream_id": sid}, headers=bearer(KEY_A), timeout=5)
    assert types(owner.rest())[-1] == "[DONE]"


def test_limits_count_per_principal(start_sluice: Callable[..., Gunicorn], upstream: FakeUpstream,
                                    fresh: FakeUpstream) -> None:
    env = {k: v for k, v in locked_env(upstream).items() if k.startswith("SLUICE_")}
    server = start_sluice(**env, SLUICE_MAX_STREAMS_PER_CLIENT="1")
    held = open_stream(f"{server.url}/stream", params={"prompt": "x [fake stall_after=0]"}, headers=bearer(KEY_A))
    held.until("start")
    # Same principal, through its session this time: over its limit.
    browser = sign_in(server.url, KEY_A)
    resp = browser.post(f"{server.url}/streams", json={"prompt": "y"}, timeout=5)
    assert resp.status_code == 429 and resp.json()["error"]["type"] == "rate_limit"
    # Another principal from the same address is not.
    other = open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=1]"}, headers=bearer(KEY_B))
    assert types(other.rest())[-1] == "[DONE]"
    requests.post(f"{server.url}/cancel", json={"stream_id": held.stream_id}, headers=bearer(KEY_A), timeout=5)
    held.rest()
