"""static/js/sse-parser.js alone, in Chromium: the event-stream rules (WHATWG) that sluice.js
relies on when it reads a stream with fetch, as an input → events table, fed whole, split,
and one byte at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.servers import Gunicorn

pytestmark = pytest.mark.timeout(90)

# Feeds each chunk (a string, or a list of byte values), then end(); returns what came out.
PARSE = """([chunks, end]) => {
  const events = [];
  const parser = new SluiceSSE.Parser((ev) => events.push([ev.event, ev.data, ev.id]));
  for (const c of chunks) parser.feed(typeof c === "string" ? c : new Uint8Array(c));
  if (end) parser.end();
  return {events, retry: parser.retry, lastEventId: parser.lastEventId};
}"""

# (name, stream, events as [event, data, id]); retry and lastEventId are checked where it matters.
TABLE: list[tuple[str, str, list[list[str]]]] = [
    ("lf", "data: a\n\ndata: b\n\n", [["message", "a", ""], ["message", "b", ""]]),
    ("crlf", "data: a\r\n\r\ndata: b\r\n\r\n", [["message", "a", ""], ["message", "b", ""]]),
    ("cr", "data: a\r\rdata: b\r\r", [["message", "a", ""], ["message", "b", ""]]),
    ("mixed line ends", "data: a\r\ndata: b\rdata: c\n\r\n", [["message", "a\nb\nc", ""]]),
    ("multi-line data", "data: one\ndata:two\ndata:  three\ndata\n\n", [["message", "one\ntwo\n three\n", ""]]),
    ("only one space is dropped", "data:\t tab\ndata:   \n\n", [["message", "\t tab\n  ", ""]]),
    ("comments", ": ping\n\n:\ndata: x\n: between\ndata: y\n\n", [["message", "x\ny", ""]]),
    ("blank lines alone dispatch nothing", "\n\n\r\n\r\r", []),
    ("id persists until changed",
     "id: s:1\ndata: a\n\ndata: b\n\nid: s:2\ndata: c\n\nid\ndata: d\n\n",
     [["message", "a", "s:1"], ["message", "b", "s:1"], ["message", "c", "s:2"], ["message", "d", ""]]),
    ("an id with NUL is ignored",
     "id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n", [["message", "a", "1"], ["message", "b", "1"]]),
    ("event names one event", "event: tick\ndata: 1\n\ndata: 2\n\n", [["tick", "1", ""], ["message", "2", ""]]),
    ("a blank line without data resets the event", "event: lost\n\ndata: 3\n\n", [["message", "3", ""]]),
    ("fields without a colon", "data\n\nevent\ndata: x\n\n", [["message", "", ""], ["message", "x", ""]]),
    ("unknown fields are ignored", "foo: bar\nData: no\ndata : no\ndata: yes\n\n", [["message", "yes", ""]]),
    ("a leading BOM is dropped", "\ufeffdata: a\n\n", [["message", "a", ""]]),
    ("only one leading BOM", "\ufeff\ufeffdata: a\n\ndata: b\n\n", [["message", "b", ""]]),
    ("a BOM later is not dropped", "data: a\n\n\ufeffdata: b\n\n", [["message", "a", ""]]),
    ("a last event without its blank line is not dispatched", "data: a\n\ndata: b\n", [["message", "a", ""]]),
    ("nor one without its line end", "data: a\n\ndata: b", [["message", "a", ""]]),
    ("text beyond ASCII", "data: héllo — 日本 🐍\n\n", [["message", "héllo — 日本 🐍", ""]]),
    ("a Sluice stream",
     "retry: 3000\n\nid: abc:1\ndata: {\"type\":\"start\"}\n\n: ping\n\nid: abc:2\ndata: [DONE]\n\n",
     [["message", '{"type":"start"}', "abc:1"], ["message", "[DONE]", "abc:2"]]),
]
IDS = [name for name, _, _ in TABLE]


@pytest.fixture(scope="module")
def parser_page(browser: Any, web: Gunicorn) -> Iterator[Any]:
    """A blank page with only the parser, loaded from the running server."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_content("<!doctype html><title>parser</title>")
    page.add_script_tag(url=f"{web.url}/static/js/sse-parser.js")
    yield page
    assert errors == []
    context.close()


def parse(page: Any, chunks: list[Any], end: bool = True) -> dict[str, Any]:
    return page.evaluate(PARSE, [chunks, end])  # type: ignore[no-any-return]


def byte_chunks(text: str) -> list[list[int]]:
    return [[b] for b in text.encode("utf-8")]


@pytest.mark.parametrize(("stream", "events"), [(s, e) for _, s, e in TABLE], ids=IDS)
def test_events_from_a_stream_fed_whole(parser_page: Any, stream: str, events: list[list[str]]) -> None:
    assert parse(parser_page, [stream])["events"] == events


@pytest.mark.parametrize(("stream", "events"), [(s, e) for _, s, e in TABLE], ids=IDS)
def test_the_same_events_fed_one_byte_at_a_time(parser_page: Any, stream: str, events: list[list[str]]) -> None:
    assert parse(parser_page, byte_chunks(stream))["events"] == events


@pytest.mark.parametrize(("stream", "events"), [(s, e) for _, s, e in TABLE], ids=IDS)
def test_the_same_events_fed_one_character_at_a_time(parser_page: Any, stream: str, events: list[list[str]]) -> None:
    assert parse(parser_page, list(stream))["events"] == events


def test_a_crlf_split_across_two_feeds_is_one_line_end(parser_page: Any) -> None:
    # Read as two line ends, "\r" then "\n" would be a blank line and dispatch "a" alone.
    out = parse(parser_page, ["data: a\r", "\ndata: b\r", "\n\r", "\n"])
    assert out["events"] == [["message", "a\nb", ""]]
    # A CR that ends a feed, followed by something else, is a line end of its own.
    out = parse(parser_page, ["data: a\r", "\r", "data: b\r", "\n"])
    assert out["events"] == [["message", "a", ""]]


def test_a_bom_in_bytes_is_dropped_once(parser_page: Any) -> None:
    bom = [0xEF, 0xBB, 0xBF]
    assert parse(parser_page, [bom + list(b"data: a\n\n")])["events"] == [["message", "a", ""]]
    assert parse(parser_page, [[b] for b in bom] + [list(b"data: a\n\n")])["events"] == [["message", "a", ""]]
    assert parse(parser_page, [bom + bom + list(b"data: a\n\ndata: b\n\n")])["events"] == [["message", "b", ""]]


def test_retry_takes_only_ascii_digits(parser_page: Any) -> None:
    out = parse(parser_page, ["retry: 1500\n\n"])
    assert out == {"events": [], "retry": 1500, "lastEventId": ""}
    for bad in ("retry: 2x", "retry: -1", "retry:", "retry: 1.5", "retry: ١٢", "retry:  7"):
        out = parse(parser_page, [f"retry: 1500\n{bad}\ndata: a\n\n"])
        assert out["retry"] == 1500, bad
        assert out["events"] == [["message", "a", ""]], bad
    assert parse(parser_page, ["retry: 1500\nretry:0\n"])["retry"] == 0


def test_the_last_event_id_is_kept_even_without_data(parser_page: Any) -> None:
    out = parse(parser_page, ["id: s:1\ndata: a\n\nid: s:2\n\n"])
    assert out["events"] == [["message", "a", "s:1"]]
    assert out["lastEventId"] == "s:2"


def test_end_drops_the_unfinished_event_and_keeps_the_id(parser_page: Any) -> None:
    """After end(), the parser reads a new body (a reconnect): nothing of the old half event
    leaks into it, the last id stays, and a BOM at the new start is dropped again."""
    out = parser_page.evaluate("""() => {
      const events = [];
      const parser = new SluiceSSE.Parser((ev) => events.push([ev.event, ev.data, ev.id]));
      parser.feed("id: s:1\\ndata: a\\n\\nevent: half\\nid: s:9\\ndata: b\\r");
      parser.end();
      parser.feed("\\ufeffdata: c\\n\\n");
      return events;
    }""")
    assert out == [["message", "a", "s:1"], ["message", "c", "s:1"]]


def test_a_character_cut_off_at_the_end_is_dropped(parser_page: Any) -> None:
    snake = list("🐍".encode())
    out = parser_page.evaluate(
        """(bytes) => {
          const events = [];
          const parser = new SluiceSSE.Parser((ev) => events.push(ev.data));
          parser.feed(new Uint8Array(bytes));
          parser.end();
          parser.feed(new TextEncoder().encode("data: next\\n\\n"));
          return events;
        }""",
        list(b"data: ok\n\ndata: ") + snake[:2],
    )
    assert out == ["ok", "next"]


def test_sluice_js_without_the_parser_says_what_is_missing(web: Gunicorn, page: Any) -> None:
    page.set_content("<!doctype html><title>no parser</title>")
    for name in ("sluice.js", "sluice-stream.js", "sluice-transport.js"):
        page.add_script_tag(url=f"{web.url}/static/js/{name}")
    assert page.evaluate("typeof Sluice.Stream.prototype.start") == "undefined", "the transport did not load"
    assert any("load /static/js/sse-parser.js before it" in e for e in page.js_errors), page.js_errors


def test_sluice_js_without_its_other_files_says_what_is_missing(web: Gunicorn, page: Any) -> None:
    """sluice.js alone signs in and cancels; streaming says which files it needs, as does a
    file loaded before the one it needs."""
    page.set_content("<!doctype html><title>sluice.js alone</title>")
    page.add_script_tag(url=f"{web.url}/static/js/sse-parser.js")
    page.add_script_tag(url=f"{web.url}/static/js/sluice-transport.js")
    assert any("load them before it" in e for e in page.js_errors), page.js_errors
    page.add_script_tag(url=f"{web.url}/static/js/sluice.js")
    assert page.evaluate("typeof Sluice.signIn + ' ' + typeof Sluice.cancel") == "function function"
    message = page.evaluate(
        "() => { try { Sluice.stream({prompt: 'x'}); return null; } catch (e) { return e.message; } }")
    assert message is not None and "sluice-stream.js and sluice-transport.js" in message
