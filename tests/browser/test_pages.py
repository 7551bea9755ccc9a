"""The pages, as a person sees them in Chromium: the answer grows, Cancel stops the model,
closing the tab stops it too, a dropped stream resumes with no gap, model output is text."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import HeldScript, artifact
from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import ROOT, Gunicorn
from tests.support.tcp_proxy import CuttableProxy

pytestmark = pytest.mark.timeout(90)


def expected(n: int) -> str:
    return "".join(f"t{i} " for i in range(n))


def state(page: Any) -> str:
    return str(page.get_attribute("#status", "data-state"))


def wait_state(page: Any, value: str, timeout: float = 10.0) -> None:
    page.wait_for_selector(f'#status[data-state="{value}"]', timeout=timeout * 1000)


def wait_answer(page: Any, text: str, timeout: float = 10.0) -> None:
    # A text matcher, not wait_for_function: the page's CSP forbids the eval that would need.
    expect(page.locator("#answer")).to_contain_text(text, timeout=timeout * 1000)


def send(page: Any, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.click("#send")


def test_the_answer_grows_on_screen_then_stats_appear(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    assert state(page) == "idle"
    send(page, "hello [fake tokens=30 pace=0.06]")
    wait_state(page, "streaming")
    lengths = []
    for _ in range(6):
        time.sleep(0.25)
        lengths.append(len(page.text_content("#answer") or ""))
    growing = all(b > a for a, b in zip(lengths, lengths[1:], strict=False))
    assert growing, f"the answer must grow while streaming: {lengths}"
    page.screenshot(path=str(artifact("chat-mid-answer.png")))
    wait_state(page, "done")
    assert page.get_attribute("#answer", "data-text") == expected(30)
    stats = page.text_content("#stats") or ""
    assert page.is_visible("#stats")
    for word in ("in", "out", "first token", "/s"):
        assert word in stats, stats
    assert not page.js_errors


def test_cancel_during_a_stall_stops_the_model(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    send(page, "x [fake tokens=50 stall_after=3]")
    wait_answer(page, "t2 ")
    assert fresh.wait_open(1, 2)
    t0 = time.monotonic()
    page.click("#cancel")
    wait_state(page, "cancelled", timeout=1.0)
    assert time.monotonic() - t0 < 1.0
    assert fresh.wait_closed(1), "Cancel must close the upstream connection"
    page.screenshot(path=str(artifact("chat-after-cancel.png")))
    assert page.get_attribute("#answer", "data-text") == expected(3)


def test_cancel_right_after_send_before_the_first_token(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    send(page, "x [fake first_delay=10]")
    page.click("#cancel")
    wait_state(page, "cancelled", timeout=2.0)
    # Either the upstream call never started (tombstone) or it was closed.
    assert fresh.wait_closed(2)
    assert (page.text_content("#answer") or "") == ""


def test_closing_the_tab_closes_the_upstream(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    send(page, "x [fake stall_after=2]")
    wait_answer(page, "t1 ")
    assert fresh.wait_open(1, 2)
    page.close()
    # SLUICE_DISCONNECT_GRACE_SECONDS=1: closed within grace + 1 s.
    assert fresh.wait_closed(2.5)


def test_a_503_on_attach_is_recovered(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    calls = {"n": 0}

    def flaky(route: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            route.fulfill(status=503, body="upstream restarting", headers={"Retry-After": "1"})
        else:
            route.continue_()

    page.route("**/streams/*/events*", flaky)
    page.goto(web.url + "/")
    send(page, "x [fake tokens=20 pace=0.05]")
    wait_state(page, "done", timeout=20)
    assert calls["n"] >= 2
    assert page.get_attribute("#answer", "data-text") == expected(20)
    assert fresh.request_count == 1


def test_a_connection_cut_mid_answer_resumes_without_gap_or_duplicate(
    upstream: FakeUpstream, fresh: FakeUpstream, page: Any
) -> None:
    # A grace longer than the outage, so the generation waits for the browser to come back.
    with Gunicorn(sluice_env(upstream, SLUICE_DISCONNECT_GRACE_SECONDS="8")) as server:
        proxy = CuttableProxy(server.port)
        try:
            page.goto(proxy.url + "/")
            send(page, "x [fake tokens=40 pace=0.1]")
            wait_answer(page, "t5 ")
            proxy.cut()
            wait_state(page, "reconnecting", timeout=5)
            wait_state(page, "done", timeout=30)
            assert page.get_attribute("#answer", "data-text") == expected(40)
            assert fresh.request_count == 1, "the reconnect resumed; it did not generate again"
        finally:
            proxy.close()


def test_model_output_is_shown_as_text_and_runs_nothing(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>'
    page.goto(web.url + "/")
    send(page, f"x [fake say={quote(evil, safe='')}]")
    wait_state(page, "done")
    assert page.get_attribute("#answer", "data-text") == evil
    assert (page.text_content("#answer") or "").strip() == evil  # shown as text, not markup
    assert page.query_selector("#answer img") is None and page.query_selector("#answer script") is None
    assert page.query_selector("#answer b") is None
    assert page.evaluate("window.__pwned") is None


def test_multi_turn_sends_the_history(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    send(page, "first question [fake tokens=3]")
    wait_state(page, "done")
    send(page, "second question [fake tokens=2]")
    wait_state(page, "done")
    messages = fresh.last_request.json["messages"]
    text = str(messages)
    assert "first question" in text and "t0 t1 t2" in text and "second question" in text
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert "first question" in (page.text_content("#history") or "")


def test_controls_are_labelled_and_the_answer_is_a_live_region(web: Gunicorn, page: Any) -> None:
    page.goto(web.url + "/")
    assert page.get_by_label("Message").evaluate("el => el.id") == "prompt"
    assert page.get_attribute("#answer", "aria-live") == "polite"
    assert page.get_by_role("button", name="Send").is_visible()
    assert page.get_by_role("button", name="Cancel").count() == 1
    # Keyboard only: type, Enter sends.
    page.focus("#prompt")
    page.keyboard.type("keyboard [fake tokens=2]")
    page.keyboard.press("Enter")
    wait_state(page, "done")
    assert page.get_attribute("#answer", "data-text") == expected(2)


def test_send_waits_for_the_page_script(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    """On a slow connection the form shows before chat.js has run: Send is not pressable until
    then (a native submit would reload the page and lose the message)."""
    held = HeldScript(page, "**/js/chat.js")
    page.goto(web.url + "/", wait_until="commit")
    expect(page.locator("#send")).to_be_disabled()
    page.fill("#prompt", "early [fake tokens=3]")
    held.release()
    page.click("#send")  # Playwright waits until the button can be pressed
    wait_state(page, "done")
    assert page.get_attribute("#answer", "data-text") == expected(3)
    assert page.url == web.url + "/"


def test_the_page_has_no_inline_script(web: Gunicorn, page: Any) -> None:
    response = page.goto(web.url + "/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    inline = page.evaluate("[...document.scripts].filter(s => !s.src).length")
    assert inline == 0


def test_the_example_page_streams_and_cancels(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/examples/eventsource")
    send(page, "x [fake tokens=6 pace=0.02]")
    wait_state(page, "done")
    assert page.text_content("#answer") == expected(6)
    send(page, "x [fake stall_after=2]")
    wait_answer(page, "t1 ")
    page.click("#cancel")
    wait_state(page, "cancelled", timeout=2)
    assert fresh.wait_closed(1)
    assert not page.js_errors


def test_screenshot_for_the_readme(page: Any) -> None:
    """The demo model, as a first-time user sees it. SLUICE_UPDATE_SCREENSHOT=1 refreshes
    docs/screenshot.png; otherwise the picture is only a test artifact."""
    import os

    from tests.support.servers import base_env

    with Gunicorn(base_env(SLUICE_DEMO_TOKENS_PER_SECOND="400")) as server:
        page.goto(server.url + "/")
        send(page, "What does Sluice do for my old server-rendered pages?")
        wait_state(page, "done")
        assert "What does Sluice do" in (page.text_content("#answer") or "")
        if os.environ.get("SLUICE_UPDATE_SCREENSHOT"):
            target = ROOT / "docs" / "screenshot.png"
        else:
            target = artifact("chat-demo.png")
        page.screenshot(path=str(target))
        assert target.stat().st_size > 10_000


def test_errors_are_shown_in_words(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    send(page, "x [fake status=429]")
    wait_state(page, "error")
    message = page.text_content("#error") or ""
    assert "too many requests" in message.lower() and "429" not in message.split(".")[0]


def test_tool_calls_and_results_are_shown(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    page.get_by_label("calculate").check()
    send(page, 'what is 6*7 [fake tool=calculate args={"expression":"6*7"} tokens=1]')
    wait_state(page, "done")
    tools = page.text_content("#tools") or ""
    assert "calculate" in tools and "6*7" in tools and "42" in tools
    assert page.get_attribute("#answer", "data-text") == "result: 42 t0 "
    assert [t["name"] for t in fresh.requests[0].json["tools"]] == ["calculate"]


@pytest.mark.parametrize("method", ["get", "post", "fetch"])
def test_sluice_js_modes_stream_and_cancel(web: Gunicorn, fresh: FakeUpstream, page: Any, method: str) -> None:
    page.goto(web.url + "/")
    run = """([method, prompt]) => new Promise(function (resolve) {
        var out = {text: "", states: [], end: null};
        window.__s = Sluice.stream({prompt: prompt, method: method,
          onText: function (t) { out.text += t; },
          onState: function (s) { out.states.push(s); },
          onDone: function (ev) { out.end = ev.type; resolve(out); },
          onCancelled: function (ev) { out.end = ev.type + ":" + ev.reason; resolve(out); },
          onError: function (err) { out.end = "error"; resolve(out); }});
        window.__out = out;
      })"""
    out = page.evaluate(run, [method, "x [fake tokens=12 pace=0.01]"])
    assert out["text"] == expected(12) and out["end"] == "done" and out["states"][-1] == "done"
    # cancel() mid-stream, in the same mode
    page.evaluate(
        "([method, prompt]) => { window.__p = (" + run + ")([method, prompt]); }", [method, "x [fake stall_after=2]"]
    )
    page.wait_for_timeout(500)
    page.evaluate("window.__s.cancel()")
    out = page.evaluate("window.__p")
    assert out["end"] == "cancelled:user" and out["text"] == expected(2)
    assert fresh.wait_closed(1)


@pytest.mark.parametrize("method", ["get", "post"])
def test_sluice_js_json_mode_fills_a_form_as_the_value_grows(web: Gunicorn, fresh: FakeUpstream, page: Any,
                                                              method: str) -> None:
    """Issue 20: onJson gets a short object several times as it grows; onText gets every fragment
    of the JSON text, and stream.text is that text so far (the documented use, sluice.js header)."""
    page.goto(web.url + "/")
    text = '{"title": "Sluice", "tags": ["a", "b"], "score": 7}'
    prompt = "x [fake say=" + quote(text, safe="") + " parts=15]"
    out = page.evaluate("""([method, prompt]) => new Promise(function (resolve) {
        var out = {values: [], fragments: [], soFar: [], end: null};
        Sluice.stream({prompt: prompt, method: method, response_format: "json",
          onJson: function (value, complete) { out.values.push([value, complete]); },
          onText: function (fragment, ev, stream) { out.fragments.push(fragment); out.soFar.push(stream.text); },
          onDone: function () { out.end = "done"; resolve(out); },
          onError: function (err) { out.end = "error"; resolve(out); }});
      })""", [method, prompt])
    assert out["end"] == "done", out
    assert len(out["fragments"]) == 15 and "".join(out["fragments"]) == text
    assert out["soFar"][-1] == text and all(text.startswith(s) for s in out["soFar"])
    partial = [v for v, complete in out["values"] if not complete]
    assert len(partial) >= 3, out["values"]
    assert partial[0]["title"] and "Sluice".startswith(partial[0]["title"]), "the first value comes early"
    assert out["values"][-1] == [json.loads(text), True]
    assert not page.js_errors
