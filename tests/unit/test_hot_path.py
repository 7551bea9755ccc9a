"""The hot path's cheap waits keep their promises: deadlines on time, heartbeats, a client gone.

The producer's first-token and idle deadlines are one timer per round that re-arms itself
(app.lifecycle.deadlines); a local subscriber waits on a Waiter that the journal, its EOF watch
or its heartbeat timer wakes (app.delivery.wsgi_body). These pin what a user sees of them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from typing import Any

import gevent
import pytest
from gevent import socket

from app.config import Settings
from app.delivery.cursor import Cursor
from app.delivery.wsgi_body import WsgiBody
from app.lifecycle.generation import Generation
from app.lifecycle.journal import Journal
from app.providers.base import Finish, ProviderEvent, ProviderRequest, TextDelta
from app.validation import parse_spec
from tests.unit.test_lifecycle import JournalFeed

pytestmark = pytest.mark.timeout(30)


class Paced:
    """Yields each (delay, text) after sleeping `delay` seconds, then finishes."""

    name = "anthropic"

    def __init__(self, steps: list[tuple[float, str]]) -> None:
        self.steps = steps

    def stream(self, request: ProviderRequest) -> Generator[ProviderEvent, None, None]:
        for delay, text in self.steps:
            gevent.sleep(delay)
            yield TextDelta(text)
        yield Finish("end_turn")


def run(provider: Paced, **env: str) -> tuple[list[dict[str, Any]], float]:
    settings = Settings.from_env({"SLUICE_PROVIDER": "demo", "ANTHROPIC_API_KEY": "k", "SLUICE_ALLOWED_MODELS": "*",
                                  **env})
    spec = parse_spec({"prompt": "hi", "provider": "anthropic", "model": "m"}, settings)
    gen = Generation("s" * 22, spec, settings, lambda name: provider)
    gen.feed.attach()
    started = time.monotonic()
    gen.start()
    gen.join(20)
    events = [json.loads(e.data) for e in gen.journal.entries if e.data != "[DONE]"]
    return events, time.monotonic() - started


def test_the_idle_deadline_applies_from_the_first_token_even_when_the_first_token_one_is_longer() -> None:
    # The round's timer starts at the first-token deadline (5 s): the first token must re-arm it
    # at the idle deadline, or a model that goes silent would be noticed 5 s late.
    events, took = run(Paced([(0, "Hello"), (3, " late")]), SLUICE_FIRST_TOKEN_TIMEOUT="5", SLUICE_IDLE_TIMEOUT="0.3")
    assert [e["type"] for e in events] == ["start", "text", "error"]
    assert events[-1]["error"]["type"] == "timeout" and "went silent within 0.3 s" in events[-1]["error"]["message"]
    assert took < 2


def test_the_idle_deadline_counts_from_the_last_event_not_from_the_start() -> None:
    # Eight tokens 0.2 s apart: 1.6 s in all, each gap well within the 0.5 s idle deadline.
    events, _ = run(Paced([(0.2, f"t{i} ") for i in range(8)]), SLUICE_IDLE_TIMEOUT="0.5")
    assert [e["type"] for e in events][-1] == "done"
    assert "".join(e["content"] for e in events if e["type"] == "text") == "".join(f"t{i} " for i in range(8))


def test_a_first_token_that_never_comes_is_a_first_token_timeout() -> None:
    events, took = run(Paced([(3, "late")]), SLUICE_FIRST_TOKEN_TIMEOUT="0.3", SLUICE_IDLE_TIMEOUT="5")
    assert [e["type"] for e in events] == ["start", "error"]
    assert "no first token within 0.3 s" in events[-1]["error"]["message"]
    assert took < 2


class LocalFeed(JournalFeed):
    """A bare Journal as a local Feed, with the journal's cheap wait (`listen`), as a generation's `LocalFeed` is."""

    def __init__(self, journal: Journal) -> None:
        super().__init__(journal)
        self.listen = journal.listen


def test_a_follower_gets_heartbeats_while_silent_then_every_event_at_once() -> None:
    journal = Journal("s" * 22)
    journal.append({"type": "start"})
    body = WsgiBody(Cursor(LocalFeed(journal), 0, heartbeat=0.25))
    chunks: list[tuple[float, bytes]] = []

    def read() -> None:
        for chunk in body:
            chunks.append((time.monotonic(), chunk))

    reader = gevent.spawn(read)
    gevent.sleep(0.9)  # the model's silence: about three heartbeats
    pings = sum(chunk.count(b": ping") for _, chunk in chunks)
    assert 2 <= pings <= 4
    sent = time.monotonic()
    journal.append_text("Hello")
    with gevent.Timeout(2):
        while not chunks[-1][1].endswith(b'"content":"Hello"}\n\n'):
            gevent.sleep(0.005)
    assert chunks[-1][0] - sent < 0.1, "woken by the event, not by the next heartbeat"
    journal.append({"type": "done"})
    journal.append("[DONE]")
    reader.join(2)
    body.close()
    assert reader.dead and chunks[-1][1].endswith(b"data: [DONE]\n\n")


def test_a_follower_waiting_for_a_silent_model_ends_when_its_client_closes() -> None:
    journal = Journal("s" * 22)
    journal.append({"type": "start"})
    ours, theirs = socket.socketpair()
    body = WsgiBody(Cursor(LocalFeed(journal), 0, heartbeat=60), client_socket=ours)
    reader = gevent.spawn(lambda: list(body))
    gevent.sleep(0.1)
    assert not reader.dead, "waiting for the model"
    closed = time.monotonic()
    theirs.close()
    reader.join(2)
    body.close()
    ours.close()
    assert reader.dead and time.monotonic() - closed < 0.5
