"""Errors before the stream starts: plain JSON with a proper status, never a half-started stream,
and no upstream call (CONTRACT "JSON body", "Errors before the stream starts"; issue 9)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import sluice_env
from tests.contract.conftest import assert_rejected, check_well_formed, no_upstream_call, post_stream
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn

pytestmark = pytest.mark.timeout(60)

MODEL_A, MODEL_O = "fake-claude-small", "fake-gpt-small"
PARTNER = "https://partner.example"


@pytest.fixture(scope="module")
def srv(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    env = sluice_env(
        upstream,
        SLUICE_ANTHROPIC_MODEL=MODEL_A,
        SLUICE_OPENAI_MODEL=MODEL_O,
        SLUICE_ALLOWED_MODELS=f"{MODEL_A},{MODEL_O}",
        SLUICE_ALLOWED_ORIGINS=PARTNER,
    )
    with Gunicorn(env) as server:
        yield server


def raw_post(
    srv: Gunicorn, path: str, data: bytes | str, ctype: str = "application/json", **kw: Any
) -> requests.Response:
    headers = {"Content-Type": ctype, **kw.pop("headers", {})}
    return requests.post(srv.url + path, data=data, headers=headers, timeout=15, **kw)


# -- strict JSON types (the contract's new sentences) ----------------------------------------------

BAD_BODIES = [
    ({"prompt": "hi", "max_tokens": "100"}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": True}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 4097}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 10.5}, "max_tokens"),
    ({"prompt": "hi", "tools": "calculate"}, "tools"),
    ({"prompt": "hi", "tools": ["no_such_tool"]}, "tools"),
    ({"prompt": "hi", "tools": [{"name": "calculate"}]}, "tools"),
    ({"prompt": "hi", "provider": ""}, "provider"),
    ({"prompt": "hi", "provider": "mistral"}, "provider"),
    ({"prompt": "hi", "temperature": "0.7"}, "temperature"),
    ({"prompt": "hi", "model": "gpt-4-not-allowed"}, "model"),
    ({"prompt": "hi", "system": 5}, "system"),
    ({"prompt": "hi", "response_format": "xml"}, "response_format"),
    ({"prompt": "hi", "response_format": {"type": "json"}}, "response_format"),
    ({"prompt": "hi", "chunking": "letter"}, "chunking"),
    ({"prompt": "hi", "reasoning": "extreme"}, "reasoning"),
    ({"prompt": "hi", "reasoning": True}, "reasoning"),
    ({"prompt": "hi", "stream_id": "short"}, "stream_id"),
    ({"prompt": "hi", "stream_id": "bad id with spaces and more"}, "stream_id"),
    ({"prompt": "hi", "stream_id": "x" * 65}, "stream_id"),
    ({"prompt": "hi", "colour": "blue"}, "colour"),
    ({"prompt": 42}, "prompt"),
    ({"messages": "hello"}, "messages"),
]


@pytest.mark.parametrize("path", ["/stream", "/streams"])
@pytest.mark.parametrize(("body", "field"), BAD_BODIES, ids=[f for _, f in BAD_BODIES])
def test_a_field_of_the_wrong_type_or_value_is_400_naming_it(
    srv: Gunicorn, fresh: FakeUpstream, path: str, body: dict[str, Any], field: str
) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    if isinstance(body.get("prompt"), str):
        body = {**body, "prompt": f"{body['prompt']} {marker}"}
    resp = requests.post(srv.url + path, json=body, timeout=15)
    assert_rejected(resp, 400, field)
    no_upstream_call(fresh, settle=0, marker=marker if marker in str(body) else None)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]},
        {"messages": []},
        {"messages": [{"role": "system", "content": "hi"}]},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": "hi", "extra": 1}]},
        {"messages": [{"role": "user", "content": ["hi"]}]},
        {"messages": ["hi"]},
        {"prompt": ""},
    ],
    ids=[
        "empty",
        "both",
        "no-messages",
        "system-role",
        "no-content",
        "unknown-key",
        "list-content",
        "str-msg",
        "empty-prompt",
    ],
)
def test_messages_or_prompt_exactly_one_well_formed(srv: Gunicorn, fresh: FakeUpstream, body: dict[str, Any]) -> None:
    assert_rejected(requests.post(srv.url + "/stream", json=body, timeout=15), 400)
    no_upstream_call(fresh, settle=0)


def test_json_that_is_not_an_object_is_400(srv: Gunicorn, fresh: FakeUpstream) -> None:
    for data in ("[]", '"prompt"', "42", "null", "{", '{"prompt": "hi",}'):
        assert_rejected(raw_post(srv, "/stream", data), 400)
    no_upstream_call(fresh)


@pytest.mark.parametrize("path", ["/stream", "/streams"])
def test_a_lone_surrogate_is_400(srv: Gunicorn, fresh: FakeUpstream, path: str) -> None:
    resp = raw_post(srv, path, '{"prompt": "hello \\ud800 world"}')
    # The contract asks for a 400; naming the field is better still, but not required of a
    # body rejected while it is parsed.
    assert assert_rejected(resp, 400).get("field") in (None, "prompt")
    resp = raw_post(srv, path, '{"messages": [{"role": "user", "content": "x\\udc00"}]}')
    assert_rejected(resp, 400)
    no_upstream_call(fresh)


def test_a_lone_surrogate_in_the_query_is_400(srv: Gunicorn, fresh: FakeUpstream) -> None:
    # %ED%A0%80 is the UTF-8-style encoding of U+D800: not valid UTF-8 text.
    resp = requests.get(srv.url + "/stream?prompt=hi%ED%A0%80", timeout=15)
    assert_rejected(resp, 400)
    no_upstream_call(fresh)


@pytest.mark.parametrize("path", ["/stream", "/streams", "/cancel"])
@pytest.mark.parametrize("shape", ["list", "object", "in-messages"])
def test_json_nested_ten_thousand_deep_is_400_not_500(
    srv: Gunicorn, fresh: FakeUpstream, path: str, shape: str
) -> None:
    depth = 10_000
    if shape == "list":
        data = "[" * depth + "]" * depth
    elif shape == "object":
        data = '{"a":' * depth + "1" + "}" * depth
    else:
        data = '{"messages": [{"role": "user", "content": ' + "[" * depth + "]" * depth + "}]}"
    resp = raw_post(srv, path, data)
    # /cancel reads at most 4 KiB (issue 25): there, such a body is refused for its size.
    assert_rejected(resp, 413 if path == "/cancel" else 400)
    no_upstream_call(fresh, settle=0)
    assert requests.get(srv.url + "/healthz", timeout=5).status_code == 200


# -- GET /stream: scalars parsed from text ---------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "prompt"),
        ("prompt=hi&max_tokens=abc", "max_tokens"),
        ("prompt=hi&max_tokens=0", "max_tokens"),
        ("prompt=hi&temperature=warm", "temperature"),
        ("prompt=hi&provider=", "provider"),
        ("prompt=hi&tools=calculate,nope", "tools"),
        ("prompt=hi&reasoning=extreme", "reasoning"),
        ("prompt=hi&stream_id=abc", "stream_id"),
        ("prompt=hi&model=not-allowed", "model"),
    ],
)
def test_get_stream_rejects_bad_query_values(srv: Gunicorn, fresh: FakeUpstream, query: str, field: str) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    query = query.replace("prompt=hi", f"prompt=hi+{marker}")
    assert_rejected(requests.get(f"{srv.url}/stream?{query}", timeout=15), 400, field)
    no_upstream_call(fresh, settle=0, marker=marker if marker in query else None)


def test_get_stream_parses_scalars_and_a_comma_separated_tools_list(srv: Gunicorn, fresh: FakeUpstream) -> None:
    from tests.support.sse import open_stream

    params = {
        "prompt": "hi [fake tokens=9]",
        "max_tokens": "4",
        "temperature": "0.5",
        "system": "be brief",
        "tools": "calculate,get_time",
        "provider": "anthropic",
        "model": MODEL_A,
    }
    events = check_well_formed(open_stream(srv.url + "/stream", params=params).rest())
    done = events[-2].json
    assert done["type"] == "done" and done["stop_reason"] == "max_tokens", done
    sent = fresh.last_request.json
    assert sent["max_tokens"] >= 4 and sent["model"] == MODEL_A
    assert sent.get("temperature") == 0.5
    assert "be brief" in str(sent.get("system"))
    assert sorted(t["name"] for t in sent.get("tools", [])) == ["calculate", "get_time"]


def test_a_valid_body_with_every_field_is_accepted(srv: Gunicorn, fresh: FakeUpstream) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three [fake tokens=3]"},
        ],
        "system": "s",
        "provider": "anthropic",
        "model": MODEL_A,
        "max_tokens": 100,
        "temperature": 0.2,
        "tools": ["calculate"],
        "response_format": "text",
        "chunking": "token",
        "reasoning": "off",
        "stream_id": "client-chosen-id-0123456789",
    }
    events = check_well_formed(post_stream(srv, body).rest(), "client-chosen-id-0123456789")
    assert events[-2].json["type"] == "done"


# -- other statuses before the stream --------------------------------------------------------------


def test_a_body_that_is_not_json_is_415(srv: Gunicorn, fresh: FakeUpstream) -> None:
    assert_rejected(raw_post(srv, "/stream", "prompt=hi", ctype="text/plain"), 415)
    assert_rejected(raw_post(srv, "/streams", "prompt=hi", ctype="application/xml"), 415)
    no_upstream_call(fresh)


def test_a_body_too_large_is_413(srv: Gunicorn, fresh: FakeUpstream) -> None:
    big = '{"prompt": "' + "a" * (16 * 1024 * 1024) + '"}'
    try:
        resp = raw_post(srv, "/stream", big)
    except requests.ConnectionError:
        pytest.fail("a body too large must be answered 413, not a reset connection")
    assert_rejected(resp, 413)
    no_upstream_call(fresh)


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/stream"), ("DELETE", "/stream"), ("GET", "/cancel"), ("GET", "/streams"), ("PATCH", "/cancel")],
)
def test_a_wrong_method_is_405(srv: Gunicorn, fresh: FakeUpstream, method: str, path: str) -> None:
    assert_rejected(requests.request(method, srv.url + path, timeout=10), 405)
    no_upstream_call(fresh, settle=0)


def test_an_unknown_stream_is_404_json(srv: Gunicorn) -> None:
    sid = "unknownStreamId_0123456789"
    assert_rejected(requests.get(f"{srv.url}/streams/{sid}", timeout=10), 404)
    assert_rejected(requests.get(f"{srv.url}/streams/{sid}/events", timeout=10), 404)


def test_a_request_line_too_long_is_414(srv: Gunicorn, fresh: FakeUpstream) -> None:
    resp = requests.get(srv.url + "/stream", params={"prompt": "a" * 20_000}, timeout=10)
    assert resp.status_code == 414
    no_upstream_call(fresh)


# -- cross-site POSTs ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/stream", "/streams", "/cancel"])
@pytest.mark.parametrize("header", ["Origin", "Referer"])
def test_a_cross_site_post_is_403(srv: Gunicorn, fresh: FakeUpstream, path: str, header: str) -> None:
    value = "https://evil.example" if header == "Origin" else "https://evil.example/page"
    body = {"stream_id": "abcdefghijklmnop0123"} if path == "/cancel" else {"prompt": "hi"}
    resp = requests.post(srv.url + path, json=body, headers={header: value}, timeout=10)
    assert_rejected(resp, 403)
    no_upstream_call(fresh, settle=0)


def test_an_origin_decides_before_a_referer(srv: Gunicorn, fresh: FakeUpstream) -> None:
    resp = requests.post(
        srv.url + "/streams",
        json={"prompt": "hi"},
        timeout=10,
        headers={"Origin": "https://evil.example", "Referer": srv.url + "/"},
    )
    assert_rejected(resp, 403)
    no_upstream_call(fresh, settle=0)


@pytest.mark.parametrize("referer", ["//evil.example/page", "evil.example/page", "not a url"])
def test_a_referer_that_names_no_origin_is_not_taken_for_none(srv: Gunicorn, fresh: FakeUpstream,
                                                              referer: str) -> None:
    """Only a POST with neither header is a script's; a Referer that is there but is not an
    absolute URL does not name the site, so it is not believed to be the site."""
    resp = requests.post(srv.url + "/streams", json={"prompt": "hi"}, headers={"Referer": referer}, timeout=10)
    assert_rejected(resp, 403)
    no_upstream_call(fresh, settle=0)


@pytest.mark.parametrize(
    "headers",
    [{}, "same-origin", "same-referer", {"Origin": PARTNER}],
    ids=["no-header", "same-origin", "same-referer", "allowed-origin"],
)
def test_a_post_without_origin_or_from_the_site_or_an_allowed_origin_is_accepted(
    srv: Gunicorn, fresh: FakeUpstream, headers: Any
) -> None:
    if headers == "same-origin":
        headers = {"Origin": srv.url}
    elif headers == "same-referer":
        headers = {"Referer": srv.url + "/"}
    events = check_well_formed(post_stream(srv, {"prompt": "hi [fake tokens=2]"}, headers=headers).rest())
    assert events[-2].json["type"] == "done"


# -- CORS for the GET streams ----------------------------------------------------------------------


def test_get_streams_are_readable_cross_origin_only_by_allowed_origins(srv: Gunicorn, fresh: FakeUpstream) -> None:
    from tests.support.sse import open_stream

    allowed = open_stream(srv.url + "/stream", params={"prompt": "x [fake tokens=1]"}, headers={"Origin": PARTNER})
    assert allowed.response.headers.get("Access-Control-Allow-Origin") == PARTNER
    allowed.rest()
    other = open_stream(
        srv.url + "/stream", params={"prompt": "x [fake tokens=1]"}, headers={"Origin": "https://evil.example"}
    )
    assert other.response.headers.get("Access-Control-Allow-Origin") in (None, "null")
    assert other.response.headers.get("Access-Control-Allow-Origin") != "*"
    other.rest()
