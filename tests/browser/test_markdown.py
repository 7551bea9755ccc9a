"""Markdown answers on the chat page, in Chromium: rendered while they stream, safe, and the
plain text still there (static/js/markdown.js with the vendored markdown-it and DOMPurify)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn

pytestmark = pytest.mark.timeout(90)

ANSWER = (
    "# Plan\n\nSome **bold** and *emphasis*, a [link](https://example.com/a).\n\n"
    "- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
    "```python\nprint('hi')\n```\n\nDone."
)

# Every way we know to smuggle script through Markdown. Each would set window.__pwned if it ran.
VECTORS = [
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=2">',
    "[js](javascript:window.__pwned=3)",
    "[JS](JaVaScRiPt:window.__pwned=4)",
    "[data](data:text/html;base64,PHNjcmlwdD53aW5kb3cuX19wd25lZD01PC9zY3JpcHQ+)",
    '![img](https://example.invalid/x.png" onerror="window.__pwned=6)',
    "![x](x onerror=window.__pwned=7)",
    "[ref][r]\n\n[r]: javascript:window.__pwned=8",
    "<javascript:window.__pwned=9>",
    "<data:text/html,<script>window.__pwned=10</script>>",
    "[ent](jav&#x61;script:window.__pwned=11)",
    "[ent2](&#106;avascript:window.__pwned=12)",
    '<a href="javascript:window.__pwned=13">raw</a>',
    "<svg onload=window.__pwned=14>",
    '<iframe src="javascript:window.__pwned=15"></iframe>',
    "[vb](vbscript:msgbox(16))",
    "[file](file:///etc/passwd)",
    "[sp]( javascript:window.__pwned=17)",
    "<style>body{display:none}</style>",
    "[t](https://example.com \"a\\\" onmouseover=\\\"window.__pwned=18\")",
]
HOSTILE = "\n\n".join(VECTORS)


def send(page: Any, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.click("#send")


def test_markdown_renders_as_it_streams_and_keeps_the_plain_text(
    web: Gunicorn, fresh: FakeUpstream, page: Any
) -> None:
    page.goto(web.url + "/")
    send(page, f"x [fake say={quote(ANSWER, safe='')} pace=0.02]")
    answer = page.locator("#answer")
    expect(answer.locator("h1")).to_have_text("Plan", timeout=10_000)  # while streaming
    page.wait_for_selector('#status[data-state="done"]', timeout=15_000)
    expect(answer.locator("strong")).to_have_text("bold")
    expect(answer.locator("em")).to_have_text("emphasis")
    expect(answer.locator("li")).to_have_count(2)
    expect(answer.locator("td")).to_have_count(2)
    expect(answer.locator("pre code")).to_have_text("print('hi')\n")
    link = answer.locator("a")
    assert link.get_attribute("href") == "https://example.com/a"
    assert link.get_attribute("rel") == "noopener noreferrer"
    # The plain answer, exactly as the model wrote it, for copying as text.
    assert answer.get_attribute("data-text") == ANSWER
    assert "**" not in (answer.text_content() or "")
    assert page.js_errors == []


def test_a_half_written_code_block_shows_its_caret_inside_the_code(
    web: Gunicorn, fresh: FakeUpstream, page: Any
) -> None:
    text = "Here:\n\n```js\nlet a = 1;\nlet b"
    page.goto(web.url + "/")
    # 5 characters per fragment: stall once the open fence and some code have arrived.
    whole = quote(text + " = 2;\n```\n", safe="")
    send(page, f"x [fake say={whole} stall_after={len(text) // 5}]")
    answer = page.locator("#answer")
    expect(answer.locator("pre code .caret")).to_have_count(1, timeout=10_000)
    expect(answer.locator("pre code")).to_contain_text("let a = 1;")
    page.click("#cancel")
    page.wait_for_selector('#status[data-state="cancelled"]', timeout=10_000)
    expect(answer.locator(".caret")).to_have_count(0)


def test_copy_button_on_code_blocks_adds_no_text(web: Gunicorn, fresh: FakeUpstream, page: Any) -> None:
    page.goto(web.url + "/")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    code = quote("```\necho hi\n```", safe="")
    send(page, f"x [fake say={code}]")
    page.wait_for_selector('#status[data-state="done"]', timeout=10_000)
    button = page.locator("#answer pre button.copy-code")
    expect(button).to_be_visible()
    assert (page.text_content("#answer pre") or "") == "echo hi\n"
    button.click()
    expect(button).to_have_attribute("data-copied", "true")
    assert page.evaluate("navigator.clipboard.readText()") == "echo hi\n"


def _assert_inert(page: Any, root: str) -> None:
    found = page.evaluate(
        """(root) => {
            const el = document.querySelector(root);
            const bad = el.querySelectorAll('script,iframe,img,object,embed,svg,math,style,form,input,link,meta');
            const attrs = [];
            for (const node of el.querySelectorAll('*'))
                for (const a of node.attributes) if (/^on/i.test(a.name) || a.name === 'style') attrs.push(a.name);
            const hrefs = [...el.querySelectorAll('[href],[src]')]
                .map(n => n.getAttribute('href') || n.getAttribute('src'));
            const rels = [...el.querySelectorAll('a')].map(a => a.getAttribute('rel'));
            return {bad: bad.length, attrs, hrefs, rels, pwned: window.__pwned === undefined ? null : window.__pwned};
        }""",
        root,
    )
    assert found["bad"] == 0, found
    assert found["attrs"] == [], found
    assert all(h.startswith(("https://", "http://")) for h in found["hrefs"]), found
    assert all(r == "noopener noreferrer" for r in found["rels"]), found
    assert found["pwned"] is None, found


def test_every_markdown_xss_vector_runs_nothing_on_the_chat_page(
    web: Gunicorn, fresh: FakeUpstream, page: Any
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(web.url + "/")
    send(page, f"x [fake say={quote(HOSTILE, safe='')}]")
    page.wait_for_selector('#status[data-state="done"]', timeout=20_000)
    assert page.get_attribute("#answer", "data-text") == HOSTILE
    _assert_inert(page, "#answer")
    # Raw HTML is shown as text.
    expect(page.locator("#answer")).to_contain_text("<script>window.__pwned=1</script>")
    assert dialogs == []


def test_the_renderer_alone_is_safe_without_the_pages_csp(web: Gunicorn, page: Any) -> None:
    """The page's CSP would block inline handlers anyway: test the renderer with no CSP at all,
    so a sanitizer gap would really run (and a broken one fails here)."""
    page.set_content("<div id=out></div><div id=img></div>")
    for path in ("vendor/markdown-it/markdown-it.min.js", "vendor/dompurify/purify.min.js", "js/markdown.js"):
        page.add_script_tag(url=f"{web.url}/static/{path}")
    page.evaluate("(text) => SluiceMarkdown.render(document.getElementById('out'), text)", HOSTILE)
    # Give any handler (onerror of a broken image, onload) the chance to run.
    page.wait_for_timeout(300)
    _assert_inert(page, "#out")
    # Images are opt-in, and then https only.
    page.evaluate(
        "(text) => SluiceMarkdown.render(document.getElementById('img'), text, {images: true})",
        "![a](https://example.invalid/a.png) ![b](http://example.invalid/b.png) ![c](data:image/png;base64,AAAA)",
    )
    srcs = page.evaluate("[...document.querySelectorAll('#img img')].map(i => i.getAttribute('src'))")
    assert srcs == ["https://example.invalid/a.png"]
