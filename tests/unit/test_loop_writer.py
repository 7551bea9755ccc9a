"""LoopWriter (app.delivery.loop_writer): a stream written from hub callbacks to a real socket.

The other end of a socket pair is the client: what it reads, and when; what the feed sees of
attach and detach, what the client's slot and the subscriber gauge see, whatever way the
stream ends.
"""

from __future__ import annotations

import _socket
import time

import gevent
import pytest
from gevent import socket
from prometheus_client import REGISTRY

from app.delivery.cursor import Cursor
from app.delivery.loop_writer import LoopWriter, LoopWriters
from app.delivery.wsgi_body import WsgiBody
from app.lifecycle.journal import Journal
from app.lifecycle.slots import Slot
from tests.support.sse import dechunk
from tests.unit.test_lifecycle import JournalFeed

pytestmark = pytest.mark.timeout(30)


class CountingFeed(JournalFeed):
    """A bare Journal as a local feed (with `listen`), counting attach and detach."""

    def __init__(self, journal: Journal) -> None:
        super().__init__(journal)
        self.listen = journal.listen
        self.attached = self.detached = 0

    def attach(self) -> None:
        self.attached += 1

    def detach(self) -> None:
        self.detached += 1


class CountingSlot(Slot):
    """A client's slot that counts how often it was really given back."""

    def __init__(self) -> None:
        self.released = 0
        super().__init__(self._give_back)

    def _give_back(self) -> None:
        self.released += 1


def subscribers() -> float:
    """The subscriber gauge (`sluice_active_subscribers`) of this process."""
    return REGISTRY.get_sample_value("sluice_active_subscribers") or 0.0


def pair(rcvbuf: int = 0) -> tuple[_socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    if rcvbuf:
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
    raw = _socket.socket(fileno=ours.detach())
    raw.setblocking(False)
    return raw, theirs


class Started:
    """A journal with its `start` event, followed by a loop writer on a socket pair."""

    def __init__(self, head: bytes, *, heartbeat: float = 60, attached: bool = False, send_timeout: float = 5,
                 max_write: int = 65536, rcvbuf: int = 0, journal: Journal | None = None) -> None:
        if journal is None:
            journal = Journal("s" * 22)
            journal.append({"type": "start"})
        self.journal = journal
        self.feed = CountingFeed(journal)
        self.slot = CountingSlot()
        self.writers = LoopWriters()
        self.gauge = subscribers()
        raw, self.client = pair(rcvbuf)
        self.cursor = Cursor(self.feed, 0, heartbeat=heartbeat, max_write=max_write, attached=attached,
                             slot=self.slot)
        self.writer = LoopWriter(self.cursor, raw, send_timeout=send_timeout, writers=self.writers)
        self.writer.start(head)

    def wait_ended(self, limit: float) -> float:
        """Seconds until the writer has ended (at most `limit`)."""
        t0 = time.monotonic()
        while self.writers.writing() and time.monotonic() - t0 < limit:
            gevent.sleep(0.01)
        return time.monotonic() - t0

    def assert_ended_once(self, attached: int) -> None:
        """Ended, and everything it held given back once: the feed, the slot, the gauge."""
        assert not self.writers.writing()
        assert (self.feed.attached, self.feed.detached) == (attached, 1)
        assert self.slot.released == 1
        assert subscribers() == self.gauge
        self.writer.close()  # a second close changes nothing
        assert (self.feed.detached, self.slot.released, subscribers()) == (1, 1, self.gauge)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while piece := sock.recv(65536):
        data += piece
    return data


def test_replay_follow_and_end_with_the_connection() -> None:
    s = Started(b"HEAD\r\n\r\n", attached=False)
    assert s.writers.writing() == [s.writer] and subscribers() == s.gauge + 1
    reader = gevent.spawn(read_all, s.client)
    for i in range(3):
        gevent.sleep(0.01)
        s.journal.append_text(f"t{i} ")
    s.journal.append({"type": "done"})
    s.journal.append("[DONE]")
    data = reader.get(timeout=5)
    head, _, body = data.partition(b"\r\n\r\n")
    payload = dechunk(body)
    assert head == b"HEAD" and payload.startswith(b"retry: 3000\nid: ")
    assert payload.count(b"\ndata: ") == 6 and payload.endswith(b"data: [DONE]\n\n")
    s.assert_ended_once(attached=1)


def test_a_resume_beyond_the_end_of_a_closed_journal_ends_the_body_at_once() -> None:
    journal = Journal("s" * 22)
    journal.append("[DONE]")
    feed = CountingFeed(journal)
    raw, client = pair()
    writers = LoopWriters()
    LoopWriter(Cursor(feed, 99999, heartbeat=60), raw, send_timeout=5, writers=writers).start(b"H\r\n\r\n")
    with gevent.Timeout(2):
        data = read_all(client)
    assert data == b"H\r\n\r\n" + b"d\r\nretry: 3000\n\n\r\n" + b"0\r\n\r\n"
    assert not writers.writing() and (feed.attached, feed.detached) == (1, 1)


def test_a_response_handed_over_from_the_wsgi_body_is_counted_once() -> None:
    # The route attached the feed (it started the generation) and counted the subscriber; the
    # loop writer that takes the body's cursor over undoes both, once.
    journal = Journal("s" * 22)
    journal.append({"type": "start"})
    feed = CountingFeed(journal)
    slot = CountingSlot()
    before = subscribers()
    body = WsgiBody(Cursor(feed, 0, heartbeat=60, attached=True, slot=slot))
    assert subscribers() == before + 1
    raw, client = pair()
    writers = LoopWriters()
    LoopWriter(body.hand_over(), raw, send_timeout=5, writers=writers).start(b"H\r\n\r\n")
    body.close()  # handed over: does nothing
    assert (feed.detached, slot.released, subscribers()) == (0, 0, before + 1)
    journal.append("[DONE]")
    assert read_all(client).endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    assert not writers.writing()
    assert (feed.attached, feed.detached, slot.released, subscribers()) == (0, 1, 1, before)


def test_a_slow_reader_gets_everything_in_order_and_holds_one_write() -> None:
    journal = Journal("s" * 22)
    for i in range(200):
        journal.append_text(f"t{i} " + "x" * 1000)
    s = Started(b"H\r\n\r\n", attached=True, send_timeout=10, max_write=8192, rcvbuf=4096, journal=journal)
    gevent.sleep(0.1)
    # Blocked on the socket: what was taken from the journal and not yet sent is one write at
    # most, and events appended meanwhile are not taken either.
    taken = sum(len(e.wire) for e in journal.after(0, s.cursor.seq))
    assert 0 < s.cursor.seq < 200 and taken - s.writer.sent <= 8192 + 64
    seq = s.cursor.seq
    journal.append({"type": "done"})
    gevent.sleep(0.05)
    assert s.cursor.seq == seq
    journal.append("[DONE]")
    got = b""
    while piece := s.client.recv(2048):
        got += piece
        gevent.sleep(0.001)
    payload = dechunk(got.partition(b"\r\n\r\n")[2])
    texts = [line for line in payload.split(b"\n") if b'"type":"text"' in line]
    assert [t.split(b'"content":"')[1].split(b" ")[0] for t in texts] == [f"t{i}".encode() for i in range(200)]
    assert payload.endswith(b"data: [DONE]\n\n")
    s.assert_ended_once(attached=0)


def test_a_reader_that_stops_is_cut_after_the_send_timeout() -> None:
    journal = Journal("s" * 22)
    s = Started(b"H\r\n\r\n", attached=True, send_timeout=0.3, rcvbuf=4096, journal=journal)
    t0 = time.monotonic()
    for _ in range(100):
        journal.append_text("x" * 2000)
    s.wait_ended(5)
    assert 0.25 < time.monotonic() - t0 < 2
    s.assert_ended_once(attached=0)
    assert b"[DONE]" not in read_all(s.client)


def test_heartbeats_while_silent_and_a_client_gone_is_noticed() -> None:
    s = Started(b"H\r\n\r\n", heartbeat=0.2, attached=True)
    got = b""
    t0 = time.monotonic()
    while got.count(b": ping") < 2 and time.monotonic() - t0 < 3:
        got += s.client.recv(65536)
    assert got.count(b": ping") >= 2 and time.monotonic() - t0 < 1.5
    assert b"8\r\n: ping\n\n\r\n" in got  # a chunk of its own
    s.client.close()
    assert s.wait_ended(2) < 0.5
    s.assert_ended_once(attached=0)
    s.journal.append_text("late")  # the journal's next call finds it closed: nothing happens
    gevent.sleep(0.01)
    assert s.feed.detached == 1


def test_a_client_gone_before_the_start_is_ended_at_once() -> None:
    journal = Journal("s" * 22)
    feed = CountingFeed(journal)
    slot = CountingSlot()
    raw, client = pair()
    raw.close()  # no descriptor left to watch
    writers = LoopWriters()
    LoopWriter(Cursor(feed, 0, heartbeat=60, slot=slot), raw, send_timeout=5, writers=writers).start(b"H\r\n\r\n")
    assert not writers.writing() and (feed.attached, feed.detached, slot.released) == (1, 1, 1)
    client.close()


def test_a_writer_follows_a_local_journal_only() -> None:
    raw, client = pair()
    with pytest.raises(ValueError):
        LoopWriter(Cursor(JournalFeed(Journal("s" * 22)), 0, heartbeat=60), raw, send_timeout=5)
    raw.close()
    client.close()
