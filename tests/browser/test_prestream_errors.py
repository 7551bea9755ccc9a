"""sluice.js, in Chromium: an error answered before the stream starts is told by its status
(issue 9: in `get` and `fetch` modes a 503 or a 400 became "could not be found")."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn

pytestmark = pytest.mark.timeout(90)

MODES = ["get", "fetch", "post"]
START_ROUTES = re.compile(r"/streams?(\?.*)?$")

RUN = """([opts]) => new Promise(function (resolve) {
    var out = {states: [], end: null};
    opts.onState = function (s) { out.states.push(s); };
    opts.onDone = function () { out.end = "done"; resolve(out); };
    opts.onError = function (err, sentence) {
      out.end = "error"; out.err = err; out.sentence = sentence; resolve(out);
    };
    Sluice.stream(opts);
  })"""


def run(page: Any, **opts: Any) -> dict[str, Any]:
    return page.evaluate(RUN, [opts])  # type: ignore[no-any-return]


@pytest.mark.parametrize("method", MODES)
def test_a_400_shows_the_servers_message(web: Gunicorn, fresh: FakeUpstream, page: Any, method: str) -> None:
    page.goto(web.url + "/")
    out = run(page, prompt="x [fake tokens=2]", method=method, max_tokens=0)
    assert out["end"] == "error" and out["err"]["status"] == 400, out
    assert "max_tokens must be a whole number between 1 and" in out["sentence"], out
    assert "could not be found" not in out["sentence"]
    assert out["err"]["field"] == "max_tokens" and out["err"]["retryable"] is False
    assert fresh.request_count == 0
    assert not page.js_errors


CANNED = [
    # status, error type, extra headers, words the user must read
    (401, "authentication", {}, "sign in"),
    (403, "permission", {}, "not allowed"),
    (413, "invalid_request", {}, "too long"),
    (429, "rate_limit", {"Retry-After": "3"}, "too many answers running"),
    (503, "overloaded", {"Retry-After": "2"}, "busy or restarting"),
]


@pytest.mark.parametrize("method", MODES)
@pytest.mark.parametrize(("status", "etype", "headers", "words"), CANNED, ids=[str(c[0]) for c in CANNED])
def test_statuses_before_the_stream_are_told_apart(web: Gunicorn, fresh: FakeUpstream, page: Any, method: str,
                                                   status: int, etype: str, headers: dict[str, str],
                                                   words: str) -> None:
    body = json.dumps({"error": {"type": etype, "message": f"canned {status}"}})
    page.route(START_ROUTES, lambda route: route.fulfill(
        status=status, body=body, headers={"Content-Type": "application/json", **headers}))
    page.goto(web.url + "/")
    out = run(page, prompt="x", method=method)
    assert out["end"] == "error" and out["err"]["status"] == status, out
    assert words in out["sentence"].lower(), out
    assert "could not be found" not in out["sentence"]
    assert out["err"]["retryable"] is (status in (429, 503))
    if "Retry-After" in headers:
        assert out["err"]["retryAfter"] == int(headers["Retry-After"])
    assert fresh.request_count == 0
