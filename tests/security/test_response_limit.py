"""SLUICE_MAX_RESPONSES_PER_CLIENT: open event-stream responses (streams and attaches together)
per principal, under real gunicorn. One key cannot hold a worker's connections by attaching to
its own generation again and again. (Across workers and hosts with Redis:
tests/redis/test_response_limit.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import Stream, open_stream, types

from .conftest import KEY_A, KEY_B, SECRET, bearer

pytestmark = pytest.mark.timeout(90)

LIMIT = 4


def attach(server: Gunicorn, sid: str, key: str) -> Stream:
    return open_stream(f"{server.url}/streams/{sid}/events", headers=bearer(key))


def refused(resp: requests.Response) -> bool:
    return resp.status_code == 429 and resp.headers["Retry-After"].isdigit() \
        and resp.json()["error"]["type"] == "rate_limit"


def until_opens(opener: Callable[[], Stream], seconds: float = 10) -> Stream:
    """Open again until the server has noticed a closed response and lets one more in."""
    deadline = time.monotonic() + seconds
    while True:
        stream = opener()
        if stream.response.status_code == 200 or time.monotonic() > deadline:
            return stream
        stream.close()
        time.sleep(0.05)


@pytest.mark.parametrize("direct", ["1", "0"])
def test_one_principal_cannot_hold_more_open_responses(start_sluice: Callable[..., Gunicorn],
                                                       fresh: FakeUpstream, direct: str) -> None:
    server = start_sluice(SLUICE_API_KEYS=f"{KEY_A},{KEY_B}", SLUICE_SECRET_KEY=SECRET,
                          SLUICE_MAX_RESPONSES_PER_CLIENT=str(LIMIT), SLUICE_DIRECT_WRITE=direct)
    # One stream (a response) and attaches to it, all A's: LIMIT responses in all.
    first = open_stream(f"{server.url}/stream", params={"prompt": "x [fake stall_after=1]"}, headers=bearer(KEY_A))
    first.until("text")
    sid = first.stream_id
    held = [attach(server, sid, KEY_A) for _ in range(LIMIT - 1)]
    for stream in held:
        assert stream.response.status_code == 200
        stream.until("text")
    over = attach(server, sid, KEY_A).response
    assert refused(over), over.status_code
    # A new stream of A's is refused the same way, before anything reaches the model.
    before = fresh.request_count
    assert refused(requests.post(f"{server.url}/stream", json={"prompt": "y"}, headers=bearer(KEY_A), timeout=5))
    assert fresh.request_count == before
    # Another principal is not held up.
    other = open_stream(f"{server.url}/stream", params={"prompt": "z [fake tokens=3]"}, headers=bearer(KEY_B))
    assert types(other.rest())[-2:] == ["done", "[DONE]"]
    # A client that goes away gives its place back.
    held.pop().close()
    again = until_opens(lambda: attach(server, sid, KEY_A))
    assert again.response.status_code == 200
    # And every place comes back once the generation ends.
    cancel = requests.post(f"{server.url}/cancel", json={"stream_id": sid}, headers=bearer(KEY_A), timeout=5)
    assert cancel.json()["status"] == "cancelled"
    for stream in (first, *held, again):
        assert types(stream.rest())[-1] == "[DONE]"
    for _ in range(LIMIT):
        replay = until_opens(lambda: attach(server, sid, KEY_A))
        assert types(replay.rest())[-1] == "[DONE]"
    opened = [until_opens(lambda: attach(server, sid, KEY_A)) for _ in range(LIMIT)]
    assert all(s.response.status_code == 200 for s in opened)
    for s in opened:
        s.close()


def test_the_default_is_32(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream) -> None:
    server = start_sluice()
    first = open_stream(f"{server.url}/stream", params={"prompt": "x [fake stall_after=1]"})
    first.until("text")
    held = [open_stream(f"{server.url}/streams/{first.stream_id}/events") for _ in range(31)]
    assert all(s.response.status_code == 200 for s in held)
    assert refused(open_stream(f"{server.url}/streams/{first.stream_id}/events").response)
    requests.post(f"{server.url}/cancel", json={"stream_id": first.stream_id}, timeout=5)
    for s in (first, *held):
        s.close()
