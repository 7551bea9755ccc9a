"""Properties of the routes' own parsing (hypothesis, in-process Flask client): any body, any
content type, any query string gets an answer the contract lists, as JSON; never a 500."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app
from app.config import Settings

pytestmark = pytest.mark.timeout(180)
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

CONTENT_TYPES = st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", ""])
BODIES = st.binary(max_size=300) | st.sampled_from([
    b"[" * 5000, b'{"stream_id":' * 3000, b'{"stream_id": "\\ud800"}', b'{"stream_id": null}', b"stream_id=%ED%A0%80",
    b'{"stream_id": "' + b"A" * 22 + b'", "stream_id": "x"}', b"\xff\xfe{}",
])


@pytest.fixture(scope="module")
def client() -> Any:
    # The demo provider only: an accepted request in this process never reaches a network.
    app = create_app(Settings.from_env({"SLUICE_PROVIDER": "demo", "SLUICE_MAX_STREAMS_PER_CLIENT": "100000"}))
    return app.test_client()


def check_error(resp: Any, allowed: set[int]) -> None:
    assert resp.status_code in allowed, (resp.status_code, resp.get_data()[:300])
    if resp.status_code >= 400:
        error = resp.get_json()["error"]
        assert error["type"] == ("not_found" if resp.status_code == 404 else "invalid_request") and error["message"]


@FAST
@given(BODIES, CONTENT_TYPES, st.none() | st.binary(max_size=40))
def test_cancel_answers_any_body(client: Any, body: bytes, content_type: str, query: bytes | None) -> None:
    url = "/cancel" + ("" if query is None else "?stream_id=" + quote_from_bytes(query))
    resp = client.post(url, data=body, content_type=content_type)
    # /cancel reads at most 4 KiB (issue 25): a longer body is refused for its size.
    check_error(resp, {413} if len(body) > 4096 else {200, 202, 400})


@FAST
@given(BODIES, CONTENT_TYPES)
def test_create_answers_any_body(client: Any, body: bytes, content_type: str) -> None:
    for path in ("/streams", "/stream"):
        resp = client.post(path, data=body, content_type=content_type)
        check_error(resp, {200, 201, 400, 415})
        resp.close()


@FAST
@given(st.lists(st.tuples(st.sampled_from(["prompt", "max_tokens", "temperature", "tools", "provider", "model",
                                           "stream_id", "chunking", "x"]), st.binary(max_size=30)), max_size=6))
def test_get_stream_answers_any_query(client: Any, pairs: list[tuple[str, bytes]]) -> None:
    query = "&".join(f"{key}={quote_from_bytes(value)}" for key, value in pairs)
    resp = client.get("/stream?" + query)
    check_error(resp, {200, 400})
    resp.close()


LAST_EVENT_IDS = st.text(st.characters(codec="latin-1", exclude_characters="\r\n\0"), min_size=1,
                         max_size=80).filter(str.strip) | st.from_regex(r"\A[A-Za-z0-9_-]{16,64}:[0-9]{1,30}\Z")
PATH_IDS = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="/"), min_size=1, max_size=70)


@FAST
@given(LAST_EVENT_IDS, PATH_IDS)
def test_any_last_event_id_resumes_or_is_204(client: Any, last_event_id: str, path_id: str) -> None:
    # A Last-Event-ID never starts a generation: an unknown one is 204, whatever it says. (An
    # empty one is no id at all: a browser never sends it. A "/" in the id is left out: Flask
    # answers a path with "//" by a redirect to the merged path, which is then a JSON 404.)
    headers = {"Last-Event-ID": last_event_id}
    for resp in (client.get("/stream?prompt=x", headers=headers),
                 client.get("/stream?prompt=x&last_event_id=" + quote_from_bytes(last_event_id.encode())),
                 client.get("/streams/" + quote_from_bytes(path_id.encode(), safe="") + "/events", headers=headers),
                 client.post("/stream", json={"prompt": "x"}, headers=headers)):
        assert resp.status_code == 204, (resp.status_code, resp.get_data()[:200])
        resp.close()
    check_error(client.get("/streams/" + quote_from_bytes(path_id.encode(), safe="")), {404})
