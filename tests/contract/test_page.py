"""The page, in Chromium (CONTRACT "The page"; issue 12's Markdown answers; issue 14's reasoning)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from tests.conftest import sluice_env
from tests.contract.conftest import expected
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.tcp_proxy import CuttableProxy

pytestmark = pytest.mark.timeout(90)

STATES = {"idle", "streaming", "reconnecting", "done", "cancelled", "error"}


@pytest.fixture(scope="module")
def web(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    # OpenAI-compatible provider: it may send reasoning unasked, which the page must keep apart.
    # A grace longer than EventSource's 3 s retry, so a cut connection can come back in time.
    env = sluice_env(
        upstream, SLUICE_PROVIDER="openai", SLUICE_MAX_STREAMS_PER_CLIENT="50",
        SLUICE_MAX_RESPONSES_PER_CLIENT="50", SLUICE_DISCONNECT_GRACE_SECONDS="8"
    )
    with Gunicorn(env) as server:
        yield server


def state(page: Any) -> str:
    return str(page.get_attribute("#status", "data-state"))


def wait_state(page: Any, value: str, timeout: float = 15.0) -> None:
    page.wait_for_selector(f'#status[data-state="{value}"]', timeout=timeout * 1000, state="attached")


def wait_end(page: Any, timeout: float = 15.0) -> str:
    """Wait for the page to reach an end state; return it."""
    ends = ", ".join(f'#status[data-state="{s}"]' for s in ("done", "cancelled", "error"))
    page.wait_for_selector(ends, timeout=timeout * 1000, state="attached")
    return state(page)


def send(page: Any, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.click("#send")


def say(markdown: str) -> str:
    return f"x [fake say={quote(markdown, safe='')}]"


def test_the_page_has_its_stable_ids_and_starts_idle(web: Gunicorn, page: Any) -> None:
    page.goto(web.url + "/")
    for ident in ("#prompt", "#send", "#cancel", "#answer", "#status"):
        assert page.locator(ident).count() == 1, ident
    assert state(page) == "idle"


def test_send_streams_then_done(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    send(page, "hello [fake tokens=25 pace=0.05]")
    wait_state(page, "streaming")
    wait_state(page, "done")
    assert (page.text_content("#answer") or "").strip() == expected(25).strip()
    assert not page.js_errors


def test_cancel_stops_the_model(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    send(page, "x [fake tokens=50 stall_after=3]")
    expect(page.locator("#answer")).to_contain_text("t2", timeout=15000)
    assert fresh.wait_open(1, 5)
    page.click("#cancel")
    wait_state(page, "cancelled", timeout=5)
    assert fresh.wait_closed(3), "Cancel must close the upstream connection"


def test_an_upstream_failure_shows_the_error_state(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    send(page, "x [fake status=401]")
    wait_state(page, "error")


def test_a_dropped_connection_reconnects_and_completes(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    proxy = CuttableProxy(web.port)
    try:
        page.goto(proxy.url + "/")
        send(page, "x [fake tokens=60 pace=0.05]")
        expect(page.locator("#answer")).to_contain_text("t5 ", timeout=15000)
        proxy.cut()
        wait_state(page, "reconnecting", timeout=5)
        wait_state(page, "done", timeout=30)
        assert (page.text_content("#answer") or "").strip() == expected(60).strip()
        assert fresh.request_count == 1, "a reconnect resumes; it never starts a second generation"
    finally:
        proxy.close()


def test_every_state_seen_is_a_contract_state(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    seen = {state(page)}
    send(page, "x [fake tokens=10 pace=0.05]")
    for _ in range(40):
        seen.add(state(page))
        if "done" in seen:
            break
        page.wait_for_timeout(50)
    assert seen <= STATES, seen


# -- Markdown (issue 12) ---------------------------------------------------------------------------

MARKDOWN = "Some **bold** and *soft* text with `inline`.\n\n- one\n- two\n\n```python\nprint(1)\n```\n"


def test_markdown_renders_and_the_plain_text_stays_available(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    send(page, say(MARKDOWN))
    assert wait_end(page) == "done"
    answer = page.locator("#answer")
    expect(answer.locator("strong")).to_have_text("bold")
    expect(answer.locator("em")).to_have_text("soft")
    assert answer.locator("li").count() == 2
    assert "print(1)" in (answer.locator("pre code").first.text_content() or "")
    assert "**" not in (answer.text_content() or "")
    # The plain-text answer: in a data- attribute, or behind a "copy as text" action.
    attrs = page.evaluate(
        "() => Array.from(document.querySelectorAll('*')).flatMap(el => Array.from(el.attributes)"
        ".filter(a => a.name.startsWith('data-')).map(a => a.value))"
    )
    has_plain = any("**bold**" in v for v in attrs)
    has_action = (
        page.get_by_text("copy as text", exact=False).count() > 0
        or page.locator("[aria-label*='text' i][aria-label*='copy' i], [title*='text' i][title*='copy' i]").count() > 0
    )
    assert has_plain or has_action, "the plain-text answer must stay available"
    assert not page.js_errors


XSS = [
    "<img src=x onerror=\"document.title='pwned'\">",
    "<script>document.title='pwned'</script>",
    "[click](javascript:document.title='pwned')",
    "[click](data:text/html,<script>document.title='pwned'</script>)",
    "![x](x \"title\" onerror=document.title='pwned')",
    "[ref]\n\n[ref]: javascript:document.title='pwned'",
    "<javascript:document.title='pwned'>",
    "[x](&#106;avascript:document.title='pwned')",
    "<a href=\"javascript:document.title='pwned'\">a</a>",
    "<svg onload=\"document.title='pwned'\"></svg>",
]


def test_markdown_runs_nothing(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(web.url + "/")
    title = page.title()
    send(page, say("\n\n".join(XSS) + "\n\nend"))
    assert wait_end(page) == "done"
    page.wait_for_timeout(200)
    assert page.title() == title and not dialogs
    answer = page.locator("#answer")
    assert answer.locator("script, img, svg, iframe, object, embed").count() == 0
    for link in answer.locator("a").all():
        href = (link.get_attribute("href") or "").strip().lower()
        assert href.startswith(("http://", "https://")) or href == "", href


def test_raw_html_is_shown_as_text_and_links_are_safe(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    send(page, say("<b>not bold</b> see [site](https://example.com/x)"))
    assert wait_end(page) == "done"
    answer = page.locator("#answer")
    assert answer.locator("b").count() == 0
    assert "<b>not bold</b>" in (answer.text_content() or "")
    link = answer.locator("a")
    assert link.count() == 1 and link.get_attribute("href") == "https://example.com/x"
    rel = set((link.get_attribute("rel") or "").split())
    assert {"noopener", "noreferrer"} <= rel


def test_code_blocks_get_a_copy_button(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    send(page, say("```\ncode here\n```\n"))
    assert wait_end(page) == "done"
    assert (
        page.locator("#answer button", has_text="Copy").count() >= 1
        or page.locator("#answer button[aria-label*='opy']").count() >= 1
    )


# -- reasoning (issue 14) --------------------------------------------------------------------------


def test_reasoning_is_shown_apart_from_the_answer(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    send(page, "x [fake think=4 think_as=reasoning tokens=3]")
    assert wait_end(page) == "done"
    assert (page.text_content("#answer") or "").strip() == expected(3).strip()
    expect(page.locator("body")).to_contain_text("r3")  # shown, somewhere else than #answer


def test_a_refusal_is_shown(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    send(page, "x [fake stop=refusal say=I%20cannot%20help.]")
    assert wait_end(page) == "done"
    expect(page.locator("#answer")).to_contain_text("I cannot help.")


# -- sign-in with auth on (issue 11) ---------------------------------------------------------------

PAGE_KEY = "page-sign-in-key-" + "M" * 20


def test_sign_in_stream_and_sign_out_with_auth_on(upstream: FakeUpstream, fresh: FakeUpstream, page: Any) -> None:
    import re

    env = sluice_env(upstream, SLUICE_API_KEYS=PAGE_KEY, SLUICE_SECRET_KEY="page-secret-" + "s" * 30)
    with Gunicorn(env) as server:
        page.goto(server.url + "/")
        key_box = page.locator("input[type=password]")
        assert key_box.count() == 1, "a sign-in form: a box to paste a key"
        key_box.fill(PAGE_KEY)
        page.get_by_role("button", name=re.compile(r"sign in|log in", re.I)).click()
        page.wait_for_selector("#prompt", state="visible", timeout=10000)
        send(page, "x [fake tokens=4]")
        try:
            assert wait_end(page, timeout=30) == "done"
        except Exception as exc:
            status = page.text_content("#status")
            raise AssertionError(f"status {state(page)!r} {status!r}, js errors {page.js_errors}: {exc}") from exc
        assert (page.text_content("#answer") or "").strip() == expected(4).strip()
        assert PAGE_KEY not in page.url
        assert PAGE_KEY not in page.evaluate(
            "() => document.cookie + JSON.stringify(localStorage) + JSON.stringify(sessionStorage)"
        )
        cookies = page.context.cookies()
        assert cookies and all(PAGE_KEY not in c["value"] for c in cookies)
        assert all(c["httpOnly"] and c["sameSite"] == "Strict" for c in cookies)
        page.get_by_role("button", name=re.compile(r"sign out|log out", re.I)).click()
        page.wait_for_selector("input[type=password]", state="visible", timeout=10000)
        resp = page.request.get(server.url + "/streams/unknownStreamId_0123456789")
        assert resp.status == 401
