"""The lifecycle's races and bounds, in one process under gevent, with a gated fake provider.

The server tests cannot choose the instant a cancel lands; here the test holds the provider at
a gate and decides exactly what the producer and the cancel see.
"""

from __future__ import annotations

import tracemalloc

import gevent

from app import sse
from app.backends.memory import MemoryBackend
from app.backends.tombstones import Tombstones
from app.config import Settings
from app.lifecycle.journal import Journal
from app.lifecycle.registry import Registry
from app.lifecycle.spec import GenerationSpec
from app.providers.base import Message
from tests.unit.fakes import GatedProvider


def make_registry(provider: GatedProvider, **env: str) -> Registry:
    settings = Settings.from_env({"SLUICE_PROVIDER": "demo", **env})
    return Registry(settings, MemoryBackend(settings), lambda name: provider)


def spec() -> GenerationSpec:
    return GenerationSpec(provider="demo", model="gated", messages=(Message("user", "x"),), max_tokens=10)


def test_cancel_of_a_generation_that_finished_meanwhile_answers_finished() -> None:
    provider = GatedProvider()
    reg = make_registry(provider)
    gen = reg.create(spec(), owner=None, client="c", attached=True)
    assert provider.waiting.wait(5)
    # The upstream's last bytes are in: the producer is ready to run to the end. The cancel is
    # handled before it runs, so it still sees the generation running.
    provider.gate.set()
    status, body = reg.cancel(gen.id, None)
    assert gen.state == "done"
    assert (status, body["status"]) == (200, "finished")


def test_tombstones_expire_in_order_and_are_capped() -> None:
    now = [0.0]
    stones = Tombstones(max_count=3, clock=lambda: now[0])
    for i in range(5):
        stones.add(f"id{i}", ttl=10)
    assert len(stones) == 3, "the oldest are forgotten past the cap"
    assert not stones.take("id0") and stones.take("id4") and not stones.take("id4")
    now[0] = 11.0
    stones.add("late", ttl=10)
    assert len(stones) == 1 and stones.take("late")


def test_the_log_keeps_each_event_once_as_wire_bytes() -> None:
    journal = Journal("s" * 22)
    journal.append({"type": "start"})
    entry = journal.append_text('he said "hi"\n')
    assert entry.wire == b'id: ' + b"s" * 22 + b':2\ndata: {"type":"text","content":"he said \\"hi\\"\\n"}\n\n'
    assert entry.data == '{"type":"text","content":"he said \\"hi\\"\\n"}'
    assert not entry.done
    done = journal.append("[DONE]")
    assert done.done and journal.closed
    assert journal.nbytes >= sum(len(e.wire) for e in journal.after(0))
    assert not hasattr(entry, "__dict__")


def test_the_journal_hands_back_each_event_as_the_encoder_writes_it_and_stores_less() -> None:
    """Stored without its id line (and a text event without its JSON around the content), an
    event is read back byte for byte as `sse.encode` writes it (issue 19: memory per stream)."""
    sid = "s" * 22
    journal = Journal(sid)
    sent = [
        journal.append({"type": "start", "stream_id": sid}),
        *(journal.append_text(t) for t in ["t0 ", "", 'q"\\', "\u00e9\u4e2d\U0001f600", "two\nlines"]),
        journal.append({"type": "text", "content": "two\nlines"}),  # the generic encoder's path
        journal.append("a caller's\nown text"),  # several data lines
    ]
    for seq, entry in enumerate(sent, 1):
        data = entry.data
        assert entry.wire == sse.encode(data, id=f"{sid}:{seq}")
    assert journal.after(0) == sent
    for seq in range(len(sent) + 1):
        assert journal.after(seq, 2) == sent[seq:seq + 2]
    wire = 0
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200):
            wire += len(journal.append_text(f"t{i} ").wire)  # the entry itself is not kept
        stored = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert stored < wire / 3, (stored, wire)


class JournalFeed:
    """A bare Journal as a Feed (what a Generation is to its subscribers)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.wait_after = journal.wait_after

    @property
    def closed(self) -> bool:
        return self.journal.closed

    def attach(self) -> None:
        pass

    def detach(self) -> None:
        pass


def test_events_that_piled_up_share_one_write_within_the_write_bound() -> None:
    from app.delivery.cursor import Cursor
    from app.delivery.wsgi_body import WsgiBody

    journal = Journal("s" * 22)
    for i in range(50):
        journal.append_text(f"t{i} " * 100)  # ~420 bytes each
    journal.append({"type": "done"})
    journal.append("[DONE]")
    body = WsgiBody(Cursor(JournalFeed(journal), 0, heartbeat=5, max_write=4096))
    chunks = list(body)
    body.close()
    assert len(chunks) > 3 and all(len(c) <= 4096 + 16 for c in chunks)
    assert b"".join(chunks).count(b"\ndata: ") == 52, "every event, once, in order"
    assert chunks[-1].endswith(b"data: [DONE]\n\n")


def test_a_reader_beyond_the_end_of_a_closed_log_ends_at_once() -> None:
    from app.delivery.cursor import Cursor
    from app.delivery.wsgi_body import WsgiBody

    journal = Journal("s" * 22)
    journal.append({"type": "done"})
    journal.append("[DONE]")
    body = WsgiBody(Cursor(JournalFeed(journal), 99999, heartbeat=5))
    with gevent.Timeout(2):
        chunks = list(body)
    assert chunks == [b"retry: 3000\n\n"]
