"""The chat page in Chromium with a model that thinks: the thinking streams in its own block,
apart from the answer, and folds away once the answer starts; a refusal reads as a sentence."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import artifact
from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def thinking_web(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    """The demo model as the default, paced so that its thinking can be watched."""
    env = sluice_env(upstream, SLUICE_PROVIDER="demo", SLUICE_DEMO_TOKENS_PER_SECOND="40")
    with Gunicorn(env) as server:
        yield server


def test_thinking_streams_apart_then_folds_when_the_answer_starts(thinking_web: Gunicorn, page: Any) -> None:
    page.goto(thinking_web.url + "/")
    page.select_option("#reasoning-effort", "high")
    page.fill("#prompt", "why is the sky blue")
    page.click("#send")
    thinking = page.locator("#reasoning")
    expect(page.locator("#reasoning-text")).to_contain_text("The question is", timeout=10_000)
    # While the model thinks: the block is open and the answer is still empty.
    expect(thinking).to_have_attribute("open", "")
    assert page.text_content("#answer") == ""
    page.screenshot(path=str(artifact("chat-thinking.png")))
    expect(page.locator("#answer")).to_contain_text("Sluice is streaming", timeout=15_000)
    expect(thinking).not_to_have_attribute("open", "")
    page.wait_for_selector('#status[data-state="done"]', timeout=30_000)
    thought = page.text_content("#reasoning-text") or ""
    answer = page.text_content("#answer") or ""
    assert "why is the sky blue" in thought and "Now to write the answer." in thought
    assert "The question is" not in answer and "Now to write" not in answer
    # The folded thinking opens on a click.
    page.click("#reasoning summary")
    expect(thinking).to_have_attribute("open", "")
    assert page.is_hidden("#stop-note")
    assert "thinking)" in (page.text_content("#stats") or "")  # "N tokens out (M thinking)"
    assert not page.js_errors


def test_without_thinking_there_is_no_thinking_block(thinking_web: Gunicorn, page: Any) -> None:
    page.goto(thinking_web.url + "/")
    assert page.input_value("#reasoning-effort") == "off"
    page.fill("#prompt", "hello")
    page.click("#send")
    page.wait_for_selector('#status[data-state="done"]', timeout=30_000)
    assert page.is_hidden("#reasoning")
    assert not page.js_errors


@pytest.mark.parametrize(("provider", "stop", "sentence"), [
    ("anthropic", "refusal", "declined"),
    ("openai", "content_filter", "content filter"),
])
def test_a_refusal_reads_as_a_plain_sentence(thinking_web: Gunicorn, fresh: FakeUpstream, page: Any,
                                             provider: str, stop: str, sentence: str) -> None:
    page.goto(thinking_web.url + "/")
    page.select_option("#provider", provider)
    page.fill("#prompt", f"x [fake tokens=2 stop={stop}]")
    page.click("#send")
    page.wait_for_selector('#status[data-state="done"]', timeout=30_000)
    expect(page.locator("#stop-note")).to_be_visible()
    assert sentence in (page.text_content("#stop-note") or "")
    assert not page.js_errors
