"""The registry against a fake shared backend: admission, cancel, tombstones, drain.

The backend is `tests.unit.fakes.FakeBackend`: "the other workers" are dicts the test fills,
so each case says exactly what exists where, and no Redis is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent
import pytest

from app.config import Settings
from app.errors import RequestError
from app.lifecycle.registry import Registry
from app.lifecycle.spec import GenerationSpec
from app.providers.base import Message
from tests.unit.fakes import Elsewhere, FakeBackend, GatedProvider


def make(**env: str) -> tuple[Registry, FakeBackend, GatedProvider]:
    settings = Settings.from_env({"SLUICE_PROVIDER": "demo", **env})
    backend, provider = FakeBackend(), GatedProvider()
    reg = Registry(settings, backend, lambda name: provider)
    reg.ensure_started()
    return reg, backend, provider


def spec(stream_id: str | None = None) -> GenerationSpec:
    return GenerationSpec(provider="demo", model="gated", messages=(Message("user", "x"),), max_tokens=10,
                          stream_id=stream_id)


def events_of(reg: Registry, stream_id: str, principal: str | None = None) -> list[str]:
    """The event types of a local generation's journal, `[DONE]` as "DONE"."""
    feed = reg.feed(stream_id, principal)
    assert feed is not None
    return ["DONE" if e.done else e.data.split('"type":"', 1)[1].split('"', 1)[0]
            for e in feed.wait_after(0, timeout=0)]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.01)
    return True


# -- admission --------------------------------------------------------------------------------


def test_a_started_generation_is_mirrored_as_a_view_with_its_status() -> None:
    reg, backend, _ = make()
    gen = reg.create(spec(), owner="alice", client="c", attached=True)
    view = backend.mirror.views[gen.id]
    assert not hasattr(view, "cancel"), "the backend sees a view, not the Generation"
    assert (view.owner, view.client, view.running, view.ended) == ("alice", "c", True, False)
    assert view.status()["state"] == "running"
    assert [e.seq for e in view.events_after(0)] == [1]  # `start`
    assert reg.status(gen.id, "alice") == gen.status()
    assert reg.status(gen.id, "bob") is None, "another principal's generation is unknown to bob"


def test_admission_refuses_past_capacity_per_client_and_a_taken_id() -> None:
    reg, backend, _ = make(SLUICE_MAX_STREAMS="2", SLUICE_MAX_STREAMS_PER_CLIENT="2")
    reg.create(spec(), owner=None, client="c", attached=True)
    backend.slots.elsewhere["generations", "c"] = 1  # one more of client c runs on another worker
    with pytest.raises(RequestError) as per_client:
        reg.create(spec(), owner=None, client="c", attached=True)
    assert per_client.value.status == 429
    backend.ids.claimed_elsewhere.add("taken-elsewhere-0000000")
    with pytest.raises(RequestError) as taken:
        reg.create(spec("taken-elsewhere-0000000"), owner=None, client="d", attached=True)
    assert taken.value.status == 409
    gen = reg.create(spec("mine-000000000000000000"), owner=None, client="d", attached=True)
    with pytest.raises(RequestError) as full:
        reg.create(spec(), owner=None, client="e", attached=True)
    assert full.value.status == 503
    gen.cancel()
    gen.join(2)
    with pytest.raises(RequestError) as again:  # still in the registry, for replay
        reg.create(spec("mine-000000000000000000"), owner=None, client="d", attached=True)
    assert again.value.status == 409


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_of_a_local_generation_ends_it_before_answering() -> None:
    reg, backend, provider = make()
    gen = reg.create(spec(), owner="alice", client="c", attached=True)
    assert provider.waiting.wait(5)
    assert reg.cancel(gen.id, "bob") == (202, {"stream_id": gen.id, "status": "pending"})
    assert gen.running, "bob's cancel of alice's generation does nothing"
    assert reg.cancel(gen.id, "alice") == (200, {"stream_id": gen.id, "status": "cancelled"})
    assert events_of(reg, gen.id, "alice") == ["start", "cancelled", "DONE"]
    assert backend.mirror.views[gen.id].ended and backend.mirror.finished_ids == [gen.id]
    assert gen.id in backend.mirror.urgent, "the end is written to the mirror at once"
    assert reg.cancel(gen.id, "alice") == (200, {"stream_id": gen.id, "status": "finished"})


def test_cancel_of_a_generation_on_another_worker_goes_through_the_backend() -> None:
    reg, backend, _ = make()
    backend.remote.elsewhere["running-elsewhere-00000"] = running = Elsewhere(owner="alice")
    backend.remote.elsewhere["ended-elsewhere-0000000"] = Elsewhere(owner="alice", state="done")
    assert reg.cancel("running-elsewhere-00000", "bob")[0] == 202
    assert running.state == "running"
    assert reg.cancel("running-elsewhere-00000", "alice") == (
        200, {"stream_id": "running-elsewhere-00000", "status": "cancelled"})
    assert running.cancelled_by == ["user"]
    assert reg.cancel("ended-elsewhere-0000000", "alice")[1]["status"] == "finished"
    status = reg.status("ended-elsewhere-0000000", "alice")
    assert status is not None and status["state"] == "done" and "owner" not in status
    assert reg.status("ended-elsewhere-0000000", "bob") is None


def test_an_unknown_id_cancelled_early_starts_cancelled_for_its_canceller_only() -> None:
    reg, backend, provider = make()
    assert reg.cancel("early-00000000000000000", "alice") == (
        202, {"stream_id": "early-00000000000000000", "status": "pending"})
    assert reg.cancel("early-00000000000000001", "bob")[0] == 202
    gen = reg.create(spec("early-00000000000000000"), owner="alice", client="c", attached=True)
    assert gen.state == "cancelled"
    assert events_of(reg, gen.id, "alice") == ["start", "cancelled", "DONE"]
    # bob's tombstone does not stop alice's generation with that id
    other = reg.create(spec("early-00000000000000001"), owner="alice", client="c", attached=True)
    assert provider.waiting.wait(5) and other.running
    provider.gate.set()
    other.join(5)
    assert other.state == "done"


# -- what the backend asks on behalf of the other workers -------------------------------------


def test_a_cancel_from_another_worker_stops_only_its_principals_generation() -> None:
    reg, backend, provider = make()
    gen = reg.create(spec(), owner="alice", client="c", attached=True)
    assert provider.waiting.wait(5)
    assert backend.local is reg
    assert not reg.cancel_local(gen.id, "user", "bob") and gen.running
    assert not reg.cancel_local("nobody-here-00000000000", "user", "alice")
    assert reg.cancel_local(gen.id, "user", "alice")
    gen.join(2)
    assert gen.state == "cancelled"


def test_followers_on_other_workers_keep_a_generation_until_they_leave() -> None:
    reg, backend, provider = make(SLUICE_DISCONNECT_GRACE_SECONDS="0.05")
    gen = reg.create(spec(), owner=None, client="c", attached=True)
    assert provider.waiting.wait(5)
    backend.remote.followed_elsewhere.add(gen.id)
    gen.feed.detach()  # the last client here left; one still follows through another worker
    assert wait_until(lambda: reg.unattended() == [gen.id]), "the grace ran out without a cancel"
    assert gen.running
    backend.remote.followed_elsewhere.clear()
    reg.followers_left(gen.id)
    gen.join(5)
    assert gen.state == "cancelled" and events_of(reg, gen.id)[-2:] == ["cancelled", "DONE"]


# -- drain ------------------------------------------------------------------------------------


def test_drain_lets_generations_finish_then_cancels_the_rest_and_refuses_new_ones() -> None:
    reg, backend, provider = make()
    gen = reg.create(spec(), owner=None, client="c", attached=True)
    assert provider.waiting.wait(5)
    gevent.spawn_later(0.05, provider.gate.set)
    reg.drain(grace=5)
    assert gen.state == "done", "finished within the grace"
    assert backend.closed

    reg, backend, provider = make()
    gen = reg.create(spec(), owner=None, client="c", attached=True)
    assert provider.waiting.wait(5)
    reg.drain(grace=0.05)
    assert gen.state == "cancelled" and events_of(reg, gen.id)[-2:] == ["cancelled", "DONE"]
    assert backend.closed
    with pytest.raises(RequestError) as refused:
        reg.create(spec(), owner=None, client="c", attached=True)
    assert refused.value.status == 503


def test_drain_serves_a_request_it_had_read_before_it_refuses_or_closes() -> None:
    # Issue 19 (the chaos test's cut stream): a request the worker had read when the drain began
    # (waiting on Redis in the route) starts its generation after the drain found none running.
    # The drain waits for it, within its deadline: no 503, no backend closed under it.
    reg, backend, provider = make()
    serving = [1]  # the request, as gunicorn's pool counts it
    drain = gevent.spawn(reg.drain, 5, None, lambda: serving[0])
    gevent.sleep(0.2)
    assert not reg.closing and not backend.closed and not drain.dead
    gen = reg.create(spec(), owner=None, client="c", attached=True)
    serving[0] = 0  # its response is now written outside the pool (direct delivery) or ends
    assert provider.waiting.wait(5)
    gevent.sleep(0.2)
    assert not drain.dead, "the drain waits for the generation the request started"
    provider.gate.set()
    drain.join(5)
    assert gen.state == "done" and backend.closed
