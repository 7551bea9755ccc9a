"""DirectDelivery (app.delivery.loop_writer): a stream written from hub callbacks to a real socket.

The other end of a socket pair is the client: what it reads, when, and what the feed sees of
attach/detach, whatever way the stream ends.
"""

from __future__ import annotations

import _socket
import time

import gevent
import pytest
from gevent import socket

from app.delivery import loop_writer as direct
from app.delivery.loop_writer import DirectDelivery
from app.lifecycle.journal import Journal
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


def pair(rcvbuf: int = 0) -> tuple[_socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    if rcvbuf:
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
    raw = _socket.socket(fileno=ours.detach())
    raw.setblocking(False)
    return raw, theirs


def started(head: bytes, **options: object) -> tuple[Journal, CountingFeed, socket.socket]:
    """A journal with its `start` event, and a direct delivery of it begun on a socket pair."""
    journal = Journal("s" * 22)
    journal.append({"type": "start"})
    feed = CountingFeed(journal)
    raw, client = pair()
    DirectDelivery(feed, 0, raw, send_timeout=5, max_write=65536, **options).start(head)  # type: ignore[arg-type]
    return journal, feed, client


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while piece := sock.recv(65536):
        data += piece
    return data


def test_replay_follow_and_end_with_the_connection() -> None:
    journal, feed, client = started(b"HEAD\r\n\r\n", heartbeat=60, attached=False)
    reader = gevent.spawn(read_all, client)
    for i in range(3):
        gevent.sleep(0.01)
        journal.append_text(f"t{i} ")
    journal.append({"type": "done"})
    journal.append("[DONE]")
    data = reader.get(timeout=5)
    head, _, body = data.partition(b"\r\n\r\n")
    payload = dechunk(body)
    assert head == b"HEAD" and payload.startswith(b"retry: 3000\nid: ")
    assert payload.count(b"\ndata: ") == 6 and payload.endswith(b"data: [DONE]\n\n")
    assert (feed.attached, feed.detached) == (1, 1)
    assert not direct.active()


def test_a_slow_reader_gets_everything_in_order_and_holds_one_write() -> None:
    journal = Journal("s" * 22)
    for i in range(200):
        journal.append_text(f"t{i} " + "x" * 1000)
    feed = CountingFeed(journal)
    raw, client = pair(rcvbuf=4096)
    delivery = DirectDelivery(feed, 0, raw, heartbeat=60, send_timeout=10, max_write=8192, attached=True)
    delivery.start(b"H\r\n\r\n")
    gevent.sleep(0.1)
    # Blocked on the socket: one write pending, not listening to the journal (no more taken).
    assert 0 < len(delivery._out) <= 8192 + 64 and delivery.seq < 200
    assert not journal._listeners
    journal.append({"type": "done"})
    journal.append("[DONE]")
    got = b""
    while piece := client.recv(2048):
        got += piece
        gevent.sleep(0.001)
    payload = dechunk(got.partition(b"\r\n\r\n")[2])
    texts = [line for line in payload.split(b"\n") if b'"type":"text"' in line]
    assert [t.split(b'"content":"')[1].split(b" ")[0] for t in texts] == [f"t{i}".encode() for i in range(200)]
    assert (feed.attached, feed.detached) == (0, 1)


def test_a_reader_that_stops_is_cut_after_the_send_timeout() -> None:
    journal = Journal("s" * 22)
    feed = CountingFeed(journal)
    raw, client = pair(rcvbuf=4096)
    delivery = DirectDelivery(feed, 0, raw, heartbeat=60, send_timeout=0.3, max_write=65536, attached=True)
    delivery.start(b"H\r\n\r\n")
    t0 = time.monotonic()
    for _ in range(100):
        journal.append_text("x" * 2000)
    while direct.active() and time.monotonic() - t0 < 5:
        gevent.sleep(0.05)
    assert not direct.active() and 0.25 < time.monotonic() - t0 < 2
    assert feed.detached == 1
    assert b"[DONE]" not in read_all(client)


def test_heartbeats_while_silent_and_a_client_gone_is_noticed() -> None:
    journal, feed, client = started(b"H\r\n\r\n", heartbeat=0.2, attached=True)
    got = b""
    t0 = time.monotonic()
    while got.count(b": ping") < 2 and time.monotonic() - t0 < 3:
        got += client.recv(65536)
    assert got.count(b": ping") >= 2 and time.monotonic() - t0 < 1.5
    client.close()
    t1 = time.monotonic()
    while direct.active() and time.monotonic() - t1 < 2:
        gevent.sleep(0.01)
    assert not direct.active() and time.monotonic() - t1 < 0.5
    assert feed.detached == 1
    journal.append_text("late")  # the journal's next call finds it closed: nothing happens
    gevent.sleep(0.01)
    assert feed.detached == 1
