"""Signing in and out of the chat page in Chromium, on a server with SLUICE_API_KEYS: the key is
pasted once and sent in a header; the page then works with its HttpOnly session cookie."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import HeldScript
from tests.fake_upstream import FakeUpstream
from tests.security.conftest import KEY_A, locked_env
from tests.support.servers import Gunicorn

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def locked_web(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    with Gunicorn(locked_env(upstream)) as server:
        yield server


def test_sign_in_use_the_page_and_sign_out(locked_web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    url = locked_web.url
    sent: list[tuple[str, dict[str, str]]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers)))

    first = page.goto(url + "/")
    assert first.status == 401
    expect(page.locator("#signin-form")).to_be_visible()
    assert page.locator("#prompt").count() == 0

    page.fill("#api-key", "not-the-key-0000000000")
    page.click("#signin")
    expect(page.locator("#signin-error")).to_have_text("That key was not accepted.")

    page.fill("#api-key", KEY_A)
    with page.expect_navigation():
        page.click("#signin")
    expect(page.locator("#prompt")).to_be_visible()
    expect(page.locator("#signout")).to_be_visible()

    # The cookie: HttpOnly (no script sees it), SameSite=Strict, and not the key.
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["sluice_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and KEY_A not in session["value"]
    assert page.evaluate("document.cookie") == ""

    # The page works as before: an answer streams, with the cookie alone.
    page.fill("#prompt", "hello [fake tokens=5]")
    page.click("#send")
    page.wait_for_selector('#status[data-state="done"]', timeout=10000)
    assert page.get_attribute("#answer", "data-text") == "".join(f"t{i} " for i in range(5))

    # The example page too (same session).
    page.goto(url + "/examples/eventsource")
    page.fill("#prompt", "x [fake tokens=3]")
    page.click("#send")
    page.wait_for_selector('#status[data-state="done"]', timeout=10000)

    page.goto(url + "/")
    with page.expect_navigation():
        page.click("#signout")
    expect(page.locator("#signin-form")).to_be_visible()
    assert "sluice_session" not in {c["name"] for c in page.context.cookies()}

    # The key left the page once, in a header of POST /session; never in a URL.
    assert not [u for u, _ in sent if KEY_A in u]
    carrying = [u for u, h in sent if KEY_A in " ".join(h.values())]
    assert carrying == [url + "/session"], carrying
    assert not page.js_errors


def test_a_session_that_ends_while_the_page_is_open(locked_web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    url = locked_web.url
    page.goto(url + "/")
    page.fill("#api-key", KEY_A)
    with page.expect_navigation():
        page.click("#signin")
    # Signed out elsewhere (another tab): the open page is told, in words, to sign in again.
    assert page.context.request.delete(url + "/session").status == 204
    page.fill("#prompt", "hello [fake tokens=2]")
    page.click("#send")
    page.wait_for_selector('#status[data-state="error"]', timeout=10000)
    expect(page.locator("#error")).to_contain_text("sign in")
    page.reload()
    expect(page.locator("#signin-form")).to_be_visible()
    assert fresh.request_count == 0


def test_a_key_typed_before_the_script_ran_never_goes_into_a_url(locked_web: Gunicorn, browser: Any) -> None:
    """With JavaScript off, or before signin.js has run, Enter in the key box must not submit the
    form natively: that would put the key in the URL (history, proxy and access logs)."""
    for scripts in (False, True):
        context = browser.new_context(java_script_enabled=scripts)
        page = context.new_page()
        sent: list[str] = []
        page.on("request", lambda r, sent=sent: sent.append(r.url))
        held = HeldScript(page, "**/js/signin.js") if scripts else None
        page.goto(locked_web.url + "/", wait_until="commit")
        page.fill("#api-key", KEY_A)
        page.press("#api-key", "Enter")
        if held is not None:
            held.release()
        page.wait_for_load_state("load")
        assert not [u for u in sent if KEY_A in u], sent
        assert KEY_A not in page.url
        if held is None:
            expect(page.locator("#signin")).to_be_disabled()  # and the notice says why
            expect(page.locator("noscript")).to_have_count(1)
        else:
            page.fill("#api-key", KEY_A)  # the page still works once its script is there
            with page.expect_navigation():
                page.click("#signin")
            expect(page.locator("#signout")).to_be_visible()
        context.close()
