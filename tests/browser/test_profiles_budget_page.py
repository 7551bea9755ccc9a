"""The chat page under profiles and a budget, as a person sees it in Chromium: the profiles are
offered, what the budget has left is shown, and a spent budget is a plain sentence with the
time it comes back (issue 23)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn

pytestmark = pytest.mark.timeout(90)

BUDGET = 250


@pytest.fixture(scope="module")
def site(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    path: Path = tmp_path_factory.mktemp("page") / "profiles.toml"
    path.write_text(
        '[profiles.support]\ndescription = "Product help"\nmax_tokens = 100\nsystem = "SECRET-PAGE-PROMPT"\n'
        'allow = ["reasoning"]\n\n[profiles.other]\ndescription = "Other"\nmax_tokens = 100\n'
    )
    env = sluice_env(upstream, SLUICE_PROFILES=str(path), SLUICE_DEFAULT_PROFILE="support",
                     SLUICE_BUDGET_TOKENS=str(BUDGET), SLUICE_BUDGET_WINDOW_SECONDS="86400")
    with Gunicorn(env) as server:
        yield server


def test_profiles_offered_budget_shown_and_a_refusal_in_words(site: Gunicorn, page: Any) -> None:
    page.goto(site.url + "/")
    options = page.locator("#profile option")
    expect(options).to_have_count(2)  # no "none": a default profile restricts every request
    assert page.input_value("#profile") == "support"
    assert page.is_disabled("#provider") and page.is_disabled("#model")  # fixed by the profile
    assert not page.is_disabled("#reasoning-effort")  # allowed
    assert "SECRET-PAGE-PROMPT" not in page.content()
    expect(page.locator("#budget")).to_have_text(re.compile(rf"^{BUDGET} of {BUDGET} tokens left until \d"))

    page.fill("#prompt", "hello [fake tokens=90]")
    page.click("#send")
    page.wait_for_selector('#status[data-state="done"]', timeout=15000)
    expect(page.locator("#budget")).to_have_text(re.compile(rf"^\d+ of {BUDGET} tokens left"))
    left = int((page.text_content("#budget") or "").split()[0])
    assert 0 < left < BUDGET

    # The next answer needs more than is left: refused before it starts, in a sentence.
    page.fill("#prompt", "again [fake tokens=90]")
    page.click("#send")
    page.wait_for_selector('#status[data-state="error"]', timeout=15000)
    expect(page.locator("#error")).to_have_text(
        re.compile(r"You have used up your token budget for now\. It comes back at \d")
    )
    assert page.js_errors == []
