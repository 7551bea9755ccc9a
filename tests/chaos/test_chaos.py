"""Issue 9: chaos under load, bounded in time.

Streams run through nginx on 2 gunicorn workers sharing Redis while the test reloads gunicorn
twice (HUP), kills the upstream mid-stream, restarts Redis, and has clients leave at random
and come back with Last-Event-ID (as EventSource does). Then:

- every stream ends with exactly one terminal event then `[DONE]`, its events in order with
  no gap and no duplicate, whether read in one go or resumed;
- no request fails: every stream request is answered 200, during the reloads too;
- the workers' memory comes back near where it was before the faults (loosely: RSS).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.deploy.conftest import fake_env
from tests.support.sse import Event, open_stream

pytestmark = pytest.mark.timeout(150)

CLIENTS = 6
# Long enough for a resume that waits for a new worker to start (over 10 s on a loaded machine)
# to find a stream that ended on an old one meanwhile; shorter, it is (rightly) 204, expired.
REPLAY_TTL = 15
TERMINAL = ("done", "error", "cancelled")


def workers_of(master: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()}
    except OSError:
        return set()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def check_events(events: list[Event]) -> str | None:
    """None when the events are one whole stream: in order, one terminal event, then [DONE]."""
    kinds = [e.type for e in events]
    seqs = [e.seq for e in events if e.data != "[DONE]"]
    if seqs != list(range(1, len(seqs) + 1)):
        return f"gap or duplicate: {seqs}"
    if kinds[-1:] != ["[DONE]"] or sum(k in TERMINAL for k in kinds) != 1 or kinds[-2] not in TERMINAL:
        return f"ending {kinds[-4:]} ({sum(k in TERMINAL for k in kinds)} terminal)"
    return None


class Load:
    """CLIENTS threads starting streams through nginx until stopped; they record every fault."""

    def __init__(self, base: str, seed: int) -> None:
        self.base = base
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.finished = 0
        self.resumed = 0
        self.phase = "start"  # what the test is doing to the stack now (for failure messages)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def client(self, n: int) -> None:
        i = n
        while not self.stop.is_set():
            with self.lock:
                leave = self.rng.random() < 0.3
            try:
                error = self.leave_and_resume(i) if leave else self.read_whole(i)
            except requests.RequestException as exc:
                error = f"request failed: {exc!r}"
            with self.lock:
                self.finished += 1
            if error:
                self.fail(f"{error} (during {self.phase})")
            i += CLIENTS
            self.stop.wait(0.05)

    def start(self, prompt: str) -> Any:
        s = open_stream(self.base + "/stream", params={"prompt": prompt}, verify=False, timeout=30)
        if s.response.status_code != 200:
            raise AssertionError(f"{s.response.status_code} {s.response.text[:200]}")
        return s

    def read_whole(self, i: int) -> str | None:
        try:
            s = self.start(f"r{i} [fake tokens=20 pace=0.05]")
        except AssertionError as exc:
            return f"GET /stream: {exc}"
        return check_events(s.rest())

    def leave_and_resume(self, i: int) -> str | None:
        """Leave after a few events; come back with Last-Event-ID (to any worker), as
        EventSource does, until [DONE]: a response that ends early is resumed again."""
        try:
            s = self.start(f"l{i} [fake tokens=40 pace=0.05]")
        except AssertionError as exc:
            return f"GET /stream: {exc}"
        events = []
        for ev in s:
            events.append(ev)
            if len(events) >= 3 or ev.data == "[DONE]":
                break
        s.close()
        left_during = self.phase
        sid = events[0].json["stream_id"]
        deadline = time.monotonic() + 30
        trail: list[str] = []  # each resume: status, events received, during which fault
        while events[-1].data != "[DONE]":
            if time.monotonic() > deadline:
                return f"never resumed to the end: {[e.type for e in events][-3:]}"
            r = open_stream(self.base + f"/streams/{sid}/events", verify=False, timeout=30,
                            headers={"Last-Event-ID": events[-1].id})
            if r.response.status_code in (404, 503):  # Redis restarting: not found elsewhere yet
                trail.append(f"{r.response.status_code}@{self.phase}")
                r.close()
                time.sleep(0.5)
                continue
            if r.response.status_code != 200:
                return (f"resume {r.response.status_code} {r.response.text[:200]} after {trail}"
                        f" (left during {left_during}, at {events[-1].id})")
            with contextlib.suppress(requests.RequestException):
                r.rest()  # a response cut short is resumed on the next turn
            events += r.events
            last = r.events[-1].type if r.events else "-"
            trail.append(f"{r.response.status_code}:{len(r.events)}:{last}@{self.phase}")
            if not r.events:  # an empty 200: "come back later" (its `retry` field)
                time.sleep(0.5)
                continue
            with self.lock:
                self.resumed += 1
        return check_events(events)


def wait_reloaded(master: int, before: set[int], load: Load, timeout: float = 40) -> None:
    """The old workers left, two new ones serve, and requests complete through them."""
    deadline = time.monotonic() + timeout
    while not (workers_of(master).isdisjoint(before) and len(workers_of(master)) == 2):
        assert time.monotonic() < deadline, "the old workers did not leave"
        time.sleep(0.1)
    started = load.finished
    while load.finished < started + CLIENTS:
        assert time.monotonic() < deadline, "no stream completed after the reload"
        time.sleep(0.05)


def active_generations(base: str) -> float:
    text = requests.get(base + "/metrics", verify=False, timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("sluice_active_generations"))


def test_chaos_under_load(make_stack, fake, redis_server) -> None:  # type: ignore[no-untyped-def]
    env = fake_env(
        fake,
        SLUICE_REDIS_URL=redis_server.url,
        SLUICE_MAX_STREAMS_PER_CLIENT="500", SLUICE_MAX_RESPONSES_PER_CLIENT="500",
        SLUICE_DISCONNECT_GRACE_SECONDS="3",
        SLUICE_REPLAY_TTL_SECONDS=str(REPLAY_TTL),
        SLUICE_HEARTBEAT_SECONDS="1",
    )
    stack = make_stack(workers=2, env=env)
    master = stack.gunicorn.proc.pid
    load = Load(stack.url, seed=int(os.environ.get("SLUICE_CHAOS_SEED", "9")))
    t0 = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        clients = [pool.submit(load.client, n) for n in range(CLIENTS)]
        try:
            # Two reloads under load.
            for n in range(2):
                load.phase = f"reload {n + 1}"
                before = workers_of(master)
                os.kill(master, signal.SIGHUP)
                wait_reloaded(master, before, load)
            # The workers that will live through the other faults, warm: their baseline.
            load.phase = "baseline"
            workers = workers_of(master)
            started, deadline = load.finished, time.monotonic() + 60
            while load.finished < started + 2 * CLIENTS:
                assert time.monotonic() < deadline, f"no stream completed after the reloads: {load.failures}"
                time.sleep(0.05)
            baseline = {pid: rss_mb(pid) for pid in workers}

            # The upstream dies mid-stream (every open upstream connection cut), then returns.
            load.phase = "upstream killed"
            fake.stop()
            time.sleep(0.3)
            fake.start()
            load.phase = "upstream back"

            # Redis restarts (empty: no persistence).
            load.phase = "redis down"
            redis_server.stop()
            time.sleep(1.0)
            redis_server.start()
            load.phase = "redis back"
            ready = time.monotonic() + 20
            while requests.get(stack.url + "/readyz", verify=False, timeout=5).status_code != 200:
                assert time.monotonic() < ready, "a worker never saw Redis again"
                time.sleep(0.2)
            load.phase = "after the faults"
            # More load after the faults: every client completes at least one more stream.
            started, deadline = load.finished, time.monotonic() + 60
            while load.finished < started + CLIENTS:
                assert time.monotonic() < deadline, f"streams stopped completing after the faults: {load.failures}"
                time.sleep(0.05)
        finally:
            load.stop.set()
            for c in clients:
                c.result(timeout=60)
    assert load.failures == [], f"{len(load.failures)} of {load.finished} streams failed: {load.failures[:5]}"
    assert load.finished > 5 * CLIENTS and load.resumed > 0
    assert workers_of(master) == workers, "a worker died under the faults"

    # Nothing left running, replays expired: memory comes back near the baseline (RSS, loosely).
    deadline = time.monotonic() + 20
    while active_generations(stack.url) > 0:
        assert time.monotonic() < deadline, "generations still running"
        time.sleep(0.2)
    time.sleep(REPLAY_TTL + 1)  # the finished generations are forgotten
    for pid, before_mb in baseline.items():
        after = rss_mb(pid)
        assert after < before_mb * 1.3 + 25, f"worker {pid}: {before_mb:.0f} MB before, {after:.0f} MB after"
    assert time.monotonic() - t0 < 90 + REPLAY_TTL
