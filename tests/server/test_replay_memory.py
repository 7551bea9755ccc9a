"""Issue 19, item 2 (and issue 25's note): what finished generations keep is capped per worker.

`SLUICE_REPLAY_MAX_BYTES` bounds the bytes a worker's finished generations hold for replay; past
it the oldest are forgotten first, and a resume of a forgotten one is answered as for an
unknown id (204). A finished generation keeps its (compressed) events and its status, not its
request: a flood of big prompts does not stay in memory for the replay TTL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, text_of

pytestmark = pytest.mark.timeout(180)


def _finish(url: str, prompt: str) -> tuple[str, list]:
    stream = open_stream(f"{url}/stream", method="POST", json={"prompt": prompt}, timeout=30)
    assert stream.response.status_code == 200
    events = stream.rest()
    assert events[-1].data == "[DONE]" and events[-2].json["type"] == "done"
    return events[0].json["stream_id"], events


def _worker_rss(server: Gunicorn) -> int:
    assert server.proc is not None
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    assert len(children) == 1, children
    for line in Path(f"/proc/{children[0]}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_the_oldest_finished_generation_is_forgotten_first(start_sluice, fresh) -> None:
    server = start_sluice(SLUICE_REPLAY_MAX_BYTES="16384")
    first, first_events = _finish(server.url, "first [fake tokens=60]")
    later = [_finish(server.url, f"n{i} [fake tokens=60]") for i in range(40)]
    # The oldest is gone: a resume is answered as for an unknown id, its status is 404.
    gone = requests.get(f"{server.url}/streams/{first}/events", headers={"Last-Event-ID": f"{first}:2"}, timeout=5)
    assert gone.status_code == 204
    assert requests.get(f"{server.url}/streams/{first}", timeout=5).status_code == 404
    # The newest is still replayed, byte for byte the same events after the client's seq.
    sid, events = later[-1]
    again = open_stream(f"{server.url}/streams/{sid}/events", headers={"Last-Event-ID": f"{sid}:3"})
    assert again.response.status_code == 200
    replayed = again.rest()
    assert [(e.id, e.data) for e in replayed] == [(e.id, e.data) for e in events[3:]]
    assert requests.get(f"{server.url}/streams/{sid}", timeout=5).json()["state"] == "done"
    assert text_of(first_events)  # the first one did answer


def test_a_finished_generation_replays_byte_for_byte(start_sluice, fresh) -> None:
    server = start_sluice()
    prompt = 'quotes " and \\ and \u00e9\u4e2d\U0001f600 [fake tokens=300]'
    sid, events = _finish(server.url, prompt)
    replay = open_stream(f"{server.url}/streams/{sid}/events")
    assert replay.response.status_code == 200
    assert [(e.id, e.data) for e in replay.rest()] == [(e.id, e.data) for e in events]
    beyond = requests.get(f"{server.url}/streams/{sid}/events",
                          headers={"Last-Event-ID": f"{sid}:{len(events)}"}, timeout=5)
    assert beyond.status_code == 204


def test_finished_generations_with_big_prompts_do_not_hold_their_prompts(start_sluice, fresh) -> None:
    # 1 MiB for replay; on main every 190 KB prompt stayed for the replay TTL (+19 MB here).
    server = start_sluice(SLUICE_REPLAY_MAX_BYTES=str(1 << 20))
    big = "x" * 190_000 + " [fake tokens=20]"
    for _ in range(20):
        _finish(server.url, big)
    before = _worker_rss(server)
    for _ in range(100):
        _finish(server.url, big)
    grown = _worker_rss(server) - before
    assert grown < 8 * 2**20, f"the worker grew {grown / 2**20:.1f} MB over 100 finished generations"
