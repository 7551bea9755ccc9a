"""Cursor (app.delivery.cursor): what a stream response writes next, whichever driver writes it.

A scripted feed (a list of entries, closed or not, counting its reads) and the exact bytes the
cursor hands out: the first write, batches up to `max_write`, `[DONE]`, the end, the heartbeat.
"""

from __future__ import annotations

import gevent
import pytest
from gevent import socket
from gevent.event import Event

from app import sse
from app.delivery.cursor import Cursor
from app.sse import Entry, make_entry
from tests.unit.test_loop_writer import CountingSlot, subscribers

pytestmark = pytest.mark.timeout(30)


class ListFeed:
    """A feed over a list of entries: what is after a seq, closed or not; counts reads."""

    def __init__(self, entries: list[Entry], closed: bool = False) -> None:
        self.entries = entries
        self.closed = closed
        self.reads = self.attached = self.detached = 0

    def wait_after(self, seq: int, timeout: float | None, interrupt: Event | None = None) -> list[Entry]:
        self.reads += 1
        return [e for e in self.entries if e.seq > seq]

    def attach(self) -> None:
        self.attached += 1

    def detach(self) -> None:
        self.detached += 1


def texts(n: int, size: int = 100, start: int = 1) -> list[Entry]:
    return [make_entry("s" * 22, start + i, sse.dumps({"type": "text", "content": "x" * size})) for i in range(n)]


def done(seq: int) -> Entry:
    return make_entry("s" * 22, seq, sse.DONE)


def cursor(feed: ListFeed, after_seq: int = 0, **options: object) -> Cursor:
    return Cursor(feed, after_seq, heartbeat=options.pop("heartbeat", 15), **options)  # type: ignore[arg-type]


def test_the_first_write_is_retry_and_every_ready_event() -> None:
    entries = texts(3)
    c = cursor(ListFeed(entries))
    assert c.first() == b"retry: 3000\n" + b"".join(e.wire for e in entries)
    assert c.seq == 3 and not c.done


def test_the_first_write_with_nothing_ready_is_the_retry_field_alone() -> None:
    c = cursor(ListFeed([]))
    assert c.first() == b"retry: 3000\n\n"
    assert c.next() == b"" and not c.done, "nothing yet: the driver waits"


def test_ready_events_are_batched_up_to_max_write_and_at_least_one_each_time() -> None:
    entries = texts(10, size=400) + texts(1, size=5000, start=11)  # ~430 bytes each, then one too big
    feed = ListFeed(entries)
    c = cursor(feed, max_write=1000)
    chunks = []
    while chunk := c.next():
        chunks.append(chunk)
    assert b"".join(chunks) == b"".join(e.wire for e in entries), "every event, once, in order"
    assert [chunk.count(b"\ndata: ") for chunk in chunks] == [2, 2, 2, 2, 2, 1]
    assert all(len(chunk) <= 1000 for chunk in chunks[:-1]) and len(chunks[-1]) > 5000
    assert feed.reads == 2, "one read for the backlog, one that found nothing more"
    assert c.seq == 11 and not c.done


def test_nothing_is_taken_after_done() -> None:
    entries = [*texts(2), done(3), *texts(2, start=4)]
    c = cursor(ListFeed(entries))
    assert c.next() == b"".join(e.wire for e in entries[:3])
    assert c.done and c.seq == 3
    assert c.next() is None


def test_a_closed_feed_with_nothing_after_seq_is_the_end() -> None:
    c = cursor(ListFeed([*texts(2), done(3)], closed=True), after_seq=99)
    assert c.first() == b"retry: 3000\n\n"
    assert c.done and c.next() is None


def test_a_feed_not_closed_with_nothing_after_seq_is_a_wait_not_the_end() -> None:
    c = cursor(ListFeed(texts(2)), after_seq=99)
    assert c.next() == b"" and not c.done


def test_what_a_driver_read_while_waiting_is_written_and_an_empty_read_of_a_closed_feed_reads_again() -> None:
    feed = ListFeed(texts(2))
    c = cursor(feed, after_seq=2)
    assert c.next([]) == b"" and feed.reads == 0, "the driver's read: not read again while open"
    late = done(3)
    assert c.next([late]) == late.wire and c.done
    # Closed after the driver's wait found nothing: an event appended just before the close.
    feed = ListFeed([*texts(2), done(3)], closed=True)
    c = cursor(feed, after_seq=2)
    assert c.next([]) == feed.entries[2].wire and feed.reads == 1 and c.done


def test_a_heartbeat_is_due_after_the_interval_since_the_last_write() -> None:
    c = cursor(ListFeed([]), heartbeat=10)
    c.last_write = 100.0
    assert c.heartbeat_in(100.0) == 10.0
    assert c.heartbeat_in(104.0) == 6.0
    assert c.heartbeat_in(110.0) == 0.0 and c.heartbeat_in(125.0) == 0.0
    assert c.heartbeat_in(109.95) == 0.0, "a timer that fires a hair early finds it due"
    assert c.heartbeat_in(109.5) == pytest.approx(0.5)


def test_attach_detach_the_gauge_and_the_slot_once() -> None:
    feed, slot = ListFeed([]), CountingSlot()
    before = subscribers()
    c = cursor(feed, slot=slot)
    c.attach()
    c.attach()
    assert (feed.attached, subscribers()) == (1, before + 1)
    c.close()
    c.close()
    assert (feed.detached, slot.released, subscribers()) == (1, 1, before)
    c.attach()  # closed: never attached again
    assert feed.attached == 1


def test_attached_by_the_route_is_counted_at_once_and_undone_at_close() -> None:
    feed, slot = ListFeed([]), CountingSlot()
    before = subscribers()
    c = cursor(feed, attached=True, slot=slot)
    c.attach()
    assert (feed.attached, subscribers()) == (0, before + 1)
    c.close()
    assert (feed.detached, slot.released, subscribers()) == (1, 1, before)


def test_never_attached_closes_without_a_detach() -> None:
    feed, slot = ListFeed([]), CountingSlot()
    before = subscribers()
    cursor(feed, slot=slot).close()
    assert (feed.detached, slot.released, subscribers()) == (0, 1, before)


def test_the_client_closing_its_socket_sets_gone_and_calls_back_once() -> None:
    ours, theirs = socket.socketpair()
    calls: list[Event] = []
    c = cursor(ListFeed([]))
    c.watch(ours, calls.append)
    theirs.close()
    assert c.gone.wait(2) and c.gone.is_set()
    gevent.sleep(0.05)  # the callback runs in the hub
    assert calls == [c.gone]
    c.close()
    ours.close()


def test_a_closed_cursor_no_longer_watches_its_client() -> None:
    ours, theirs = socket.socketpair()
    calls: list[Event] = []
    c = cursor(ListFeed([]))
    c.watch(ours, calls.append)
    c.close()
    theirs.close()
    assert not c.gone.wait(0.1) and calls == []
    ours.close()
