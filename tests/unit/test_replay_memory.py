"""What an ended generation keeps (issue 19, item 2): a sealed journal that replays byte for
byte, and a registry that holds at most SLUICE_REPLAY_MAX_BYTES of them, oldest forgotten first."""

from __future__ import annotations

import gevent
import pytest

from app.lifecycle.ended import Ended
from app.lifecycle.journal import SEAL_BLOCK, Journal
from app.lifecycle.producer import TEXT_PIECES, Round
from app.sse import DONE
from tests.unit.test_registry import make, spec, wait_until

SID = "AAAAAAAAAAAAAAAAAAAAAA"


def _journal(texts: list[str]) -> Journal:
    journal = Journal(SID)
    journal.append({"type": "start", "stream_id": SID})
    for text in texts:
        journal.append_text(text)
    journal.append({"type": "text", "content": "two\nlines"})  # the generic encoder's path
    journal.append({"type": "done"}, bounded=False)
    journal.append(DONE, bounded=False)
    return journal


@pytest.mark.parametrize("texts", [[], ["hi"], [f"t{i} \u00e9\u4e2d\U0001f600" for i in range(300)],
                                   ["x" * 5000 + str(i) for i in range(40)]])
def test_a_sealed_journal_replays_every_slice_byte_for_byte(texts: list[str]) -> None:
    journal = _journal(texts)
    before = journal.entries
    raw = sum(len(e.wire) for e in before)
    held = journal.seal()
    assert journal.sealed and journal.closed and journal.last_seq == len(before)
    assert journal.entries == before
    for seq in range(0, len(before) + 2):
        assert journal.after(seq, 7) == before[seq:seq + 7]
    assert journal.wait_after(len(before), timeout=5) == []  # closed: never waits
    if raw > SEAL_BLOCK:
        assert held < raw / 3, (held, raw)


def test_a_short_answer_is_sealed_to_a_fraction_of_its_bytes() -> None:
    journal = _journal([f"t{i} " for i in range(200)])
    raw = sum(len(e.wire) for e in journal.entries)
    assert journal.seal() < raw / 4


def test_past_the_cap_the_oldest_ended_generation_is_forgotten_first() -> None:
    reg, backend, provider = make(SLUICE_REPLAY_MAX_BYTES="6000")
    provider.gate.set()
    ids = []
    for _ in range(5):
        gen = reg.create(spec(), owner=None, client="c")
        gen.join(5)
        ids.append(gen.id)
    assert wait_until(lambda: not reg.local)
    kept = [sid for sid in ids if sid in reg.replays]
    assert kept == ids[-len(kept):] and 0 < len(kept) < len(ids)
    assert reg.replays.nbytes <= 6000
    assert backend.mirror.forgotten_ids == ids[:len(ids) - len(kept)]
    assert reg.feed(ids[0]) is None and reg.status(ids[0]) is None
    ended = reg.feed(ids[-1])
    assert isinstance(ended, Ended) and ended.status()["state"] == "done"
    assert isinstance(backend.mirror.views[ids[-1]], Ended), "the mirror holds what is left, not the Generation"


def test_ended_generations_are_forgotten_after_the_replay_ttl_in_the_order_they_ended() -> None:
    reg, _, provider = make(SLUICE_REPLAY_TTL_SECONDS="1")
    provider.gate.set()
    first = reg.create(spec(), owner=None, client="c")
    first.join(5)
    gevent.sleep(0.4)
    second = reg.create(spec(), owner=None, client="c")
    second.join(5)
    assert first.id in reg.replays and second.id in reg.replays
    assert wait_until(lambda: first.id not in reg.replays, 3)
    assert second.id in reg.replays, "one timer for all, re-armed for the next to expire"
    assert wait_until(lambda: not reg.replays, 3) and reg.replays.nbytes == 0


def test_a_round_keeps_its_text_in_a_few_strings_not_one_per_delta() -> None:
    state = Round()
    deltas = [f"t{i} " for i in range(1000)]
    for delta in deltas:
        state.add(delta)
    assert state.answer == "".join(deltas)
    assert len(state.text) < TEXT_PIECES
