"""Properties of the SSE encoder (hypothesis), read back by the WHATWG-conformant parser of the
tests: any payload round-trips, and nothing in a payload can add a line, an event or an id."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app import sse
from tests.support.sse import parse

# Any text: line breaks of every kind, NUL, BOM, lone surrogates (a model's text delta can end
# in half a surrogate pair, sent as a JSON escape by an OpenAI-compatible server).
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=60) | st.lists(
    st.sampled_from(["\r", "\n", "\r\n", "\0", "\ufeff", ":", "data: x", "id: y", "\ud800", "\udfff", "\u2028", "a"]),
    max_size=12,
).map("".join)
UNICODE_TEXT = st.text(st.characters(codec="utf-8"), max_size=60)
IDS = st.from_regex(r"\A[A-Za-z0-9_-]{16,64}:[0-9]{1,6}\Z")
PAYLOADS = st.fixed_dictionaries({"type": st.sampled_from(["text", "reasoning", "tool_result"]), "content": ANY_TEXT},
                                 optional={"name": ANY_TEXT, "arguments": st.dictionaries(ANY_TEXT, ANY_TEXT,
                                                                                          max_size=3)})

pytestmark = pytest.mark.timeout(120)
FAST = settings(max_examples=400, deadline=None)


def same_json(got: Any, sent: Any) -> bool:
    """`got` is what a JSON parser makes of `sent`. Compared decoded, as dicts: a lone-surrogate
    pair that `sent` holds as two code points ("\\ud800\\udc00") decodes to one (U+10000), as in
    every JSON parser and in a browser, and so sorts elsewhere among the keys."""
    return bool(got == json.loads(json.dumps(sent)))


@FAST
@given(st.lists(st.tuples(PAYLOADS, IDS), min_size=1, max_size=5))
@example([({"type": "text", "content": "", "arguments": {"\ud801": "", "\ud800\udc00": ""}}, "0000000000000000:1")])
def test_any_payload_round_trips_one_event_each(events: list[tuple[dict[str, Any], str]]) -> None:
    wire = b"".join(sse.encode(sse.dumps(payload), id=event_id) for payload, event_id in events)
    wire.decode("utf-8")  # valid UTF-8 on the wire, whatever the model sent
    parsed = parse(sse.retry(3000) + wire + sse.PING)
    assert len(parsed) == len(events)  # no event injected, none lost
    for (payload, event_id), got in zip(events, parsed, strict=True):
        assert got.id == event_id and got.event == "message"
        assert same_json(json.loads(got.data), payload)


@FAST
@given(UNICODE_TEXT, st.none() | IDS)
def test_any_text_round_trips_as_data(text: str, event_id: str | None) -> None:
    parsed = parse(sse.encode(text, id=event_id))
    assert len(parsed) == 1
    assert parsed[0].data == text.replace("\r\n", "\n").replace("\r", "\n")
    assert parsed[0].id == (event_id or "")


@FAST
@given(ANY_TEXT)
def test_an_id_is_kept_exactly_or_refused(event_id: str) -> None:
    try:
        wire = sse.encode("x", id=event_id)
    except UnicodeEncodeError:  # ids are made by Sluice: an id that is not text is a bug, loudly
        assert any("\ud800" <= c <= "\udfff" for c in event_id)
        return
    except ValueError:
        assert any(c in event_id for c in "\r\n\0")
        return
    (event,) = parse(wire)
    assert event.id == event_id and event.data == "x"


@FAST
@given(UNICODE_TEXT)
def test_a_comment_never_dispatches_an_event(text: str) -> None:
    try:
        wire = sse.comment(text)
    except ValueError:
        assert "\n" in text or "\r" in text
        return
    assert parse(wire) == []
