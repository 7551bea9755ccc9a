"""examples/existing_site end to end, in Chromium through the real nginx of
examples/existing_site/nginx.conf: sign in on the site, stream an answer from Sluice, cancel it;
another user of the site can neither see, attach to nor cancel it; no key in the browser; every
request runs under the site's default profile and within each user's token budget."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import HeldScript
from tests.deploy.conftest import Nginx
from tests.support.servers import ROOT, VENV_BIN, Gunicorn, base_env, free_port

pytestmark = pytest.mark.timeout(120)

CONF = ROOT / "examples" / "existing_site" / "nginx.conf"
BUDGET = 1500  # tokens per user and day: a few short answers


def render(conf: str, *, site: int, sluice: int, port: int) -> str:
    """The shipped example config with its "# EDIT" values swapped for test ports."""
    for old, new in (
        ("server 127.0.0.1:8001;", f"server 127.0.0.1:{site};"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{sluice};"),
        ("listen 8080;", f"listen 127.0.0.1:{port};"),
    ):
        assert conf.count(old) == 1, old
        conf = conf.replace(old, new)
    return conf


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    site_port, port = free_port(), free_port()
    site = subprocess.Popen(
        [str(VENV_BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{site_port}", "examples.existing_site.site:app"],
        cwd=ROOT, env=base_env(SITE_SECRET_KEY="test-site-secret"), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sluice = Gunicorn(base_env(
        SLUICE_TRUSTED_USER_HEADER="X-Sluice-User",
        SLUICE_PROXY_COUNT="1",
        SLUICE_DEMO_TOKENS_PER_SECOND="5",  # ~15 s an answer: still running at the cancel
        SLUICE_PROFILES=str(ROOT / "examples" / "existing_site" / "profiles.toml"),
        SLUICE_DEFAULT_PROFILE="site-help",
        SLUICE_BUDGET_TOKENS=str(BUDGET),
    ))
    nginx = Nginx(Path(tmp_path_factory.mktemp("site-nginx")),
                  render(CONF.read_text(), site=site_port, sluice=sluice.port, port=port))
    try:
        sluice.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"http://127.0.0.1:{site_port}/login", timeout=1)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, "the example site did not start"
                time.sleep(0.1)
        nginx.start((port,))
        yield {"url": f"http://127.0.0.1:{port}", "sluice": sluice}
    finally:
        nginx.stop()
        sluice.stop()
        site.terminate()
        site.wait(10)


def sign_in(browser: Any, url: str, user: str) -> Any:
    context = browser.new_context()
    page = context.new_page()
    page.goto(url + "/")
    assert "/login" in page.url  # the site's own login guards the page
    page.fill("#username", user)
    page.fill("#password", user[::-1])
    page.click("#sign-in")
    expect(page.locator("#user")).to_have_text(user)
    return page


def fetch_status(page: Any, method: str, path: str, body: Any = None) -> int:
    return int(page.evaluate(
        """([method, path, body]) => fetch(path, {method, headers: {"Content-Type": "application/json"},
                                                 body: body ? JSON.stringify(body) : undefined})
                                        .then(r => r.status)""",
        [method, path, body],
    ))


def test_a_site_user_streams_and_cancels_and_another_cannot_touch_it(stack: dict[str, Any], browser: Any) -> None:
    url = stack["url"]
    alice = sign_in(browser, url, "alice")
    alice.fill("#question", "Tell me about streaming")
    alice.click("#ask")
    expect(alice.locator("#answer")).to_contain_text("Sluice", timeout=15_000)
    stream_id = alice.get_attribute("#answer", "data-stream-id")
    assert stream_id

    bob = sign_in(browser, url, "bob")
    # Another user of the site: the generation does not exist for him.
    assert fetch_status(bob, "GET", f"/streams/{stream_id}") == 404
    assert fetch_status(bob, "GET", f"/streams/{stream_id}/events") == 404
    assert fetch_status(bob, "POST", "/cancel", {"stream_id": stream_id}) == 202
    assert alice.get_attribute("#state", "data-state") == "streaming"  # bob's cancel did nothing

    # A client that names itself in the header, straight to Sluice, is not believed.
    direct = requests.get(f"{stack['sluice'].url}/streams/{stream_id}", headers={"X-Sluice-User": "alice"}, timeout=5)
    assert direct.status_code in (401, 404)
    # Nor through nginx, which replaces the header with the site's answer.
    forged = bob.evaluate(
        "(path) => fetch(path, {headers: {'X-Sluice-User': 'alice'}}).then(r => r.status)", f"/streams/{stream_id}"
    )
    assert forged == 404

    alice.click("#cancel")
    expect(alice.locator("#state")).to_have_attribute("data-state", "cancelled", timeout=10_000)
    assert fetch_status(alice, "GET", f"/streams/{stream_id}") == 200

    # Signed out, Sluice's paths are closed (nginx's auth_request gets 401 from the site).
    assert requests.get(f"{url}/stream", params={"prompt": "hi"}, timeout=5).status_code == 401
    # No key anywhere: the page and its cookies hold only the site's session.
    cookies = alice.context.cookies()
    assert [c["name"] for c in cookies] == ["session"]
    alice.context.close()
    bob.context.close()


def test_ask_waits_for_the_page_script(stack: dict[str, Any], browser: Any) -> None:
    """Before ask.js has run (a slow connection), Ask cannot be pressed: a native submit would
    reload the page and the question would be lost, with no answer ever coming."""
    alice = sign_in(browser, stack["url"], "alice")
    held = HeldScript(alice, "**/static/ask.js")
    alice.goto(stack["url"] + "/", wait_until="commit")
    expect(alice.locator("#ask")).to_be_disabled()
    alice.fill("#question", "Tell me about streaming")
    held.release()
    alice.click("#ask")
    expect(alice.locator("#answer")).to_contain_text("Sluice", timeout=15_000)
    alice.click("#cancel")
    expect(alice.locator("#state")).to_have_attribute("data-state", "cancelled", timeout=10_000)
    alice.context.close()


def test_the_site_profile_and_each_users_budget_hold(stack: dict[str, Any], browser: Any) -> None:
    """The page's requests run under the site's profile (a visitor cannot choose a model),
    each user sees what is left of their own budget, and a question too big for it is refused
    before any answer, in a sentence with the time the budget comes back."""
    bob = sign_in(browser, stack["url"], "bob")
    expect(bob.locator("#budget")).to_have_text(re.compile(rf"^{BUDGET} tokens left until \d"))
    assert fetch_status(bob, "POST", "/streams", {"prompt": "hi", "model": "any-model"}) == 400
    bob.fill("#question", "word " * 1500)  # its input alone is more than the budget holds
    bob.click("#ask")
    expect(bob.locator("#state")).to_have_text(
        re.compile(r"You have used up your token budget for now\. It comes back at \d"), timeout=10_000
    )
    assert bob.text_content("#answer") == ""
    bob.context.close()
