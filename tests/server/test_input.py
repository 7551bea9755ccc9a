"""Hostile and sloppy input before the stream (issue 9): always a 400 JSON answer, never a 500,
never an upstream call. Strict JSON types in a body; text parsed from text in a query."""

from __future__ import annotations

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, text_of, types

pytestmark = pytest.mark.timeout(60)

JSON = {"Content-Type": "application/json"}
DEEP = 10_000


def assert_400(resp: requests.Response, field: str | None = None) -> dict[str, object]:
    assert resp.status_code == 400, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["type"] == "invalid_request" and error["message"]
    if field is not None:
        assert error.get("field") == field, error
    return error  # type: ignore[no-any-return]


NESTED = [
    "[" * DEEP + "]" * DEEP,
    '{"a":' * DEEP + "1" + "}" * DEEP,
    '{"prompt": "x", "tools": ' + "[" * DEEP + "]" * DEEP + "}",
    '{"messages": [{"role": "user", "content": ' + '{"a":' * DEEP + "1" + "}" * DEEP + "}]}",
]


@pytest.mark.parametrize("body", NESTED, ids=["list", "object", "in-tools", "in-messages"])
@pytest.mark.parametrize("path", ["/stream", "/streams", "/cancel"])
def test_deeply_nested_json_is_400(sluice: Gunicorn, fresh: FakeUpstream, path: str, body: str) -> None:
    resp = requests.post(sluice.url + path, data=body, headers=JSON, timeout=10)
    if path == "/cancel" and len(body) > 4096:
        # /cancel reads at most 4 KiB (issue 25): this one is refused for its size, unread.
        assert resp.status_code == 413, resp.text
    else:
        assert_400(resp)
    assert fresh.request_count == 0


@pytest.mark.parametrize("body", [
    '{"prompt": "hi \\ud800 there"}',
    '{"prompt": "x", "system": "\\udfff"}',
    '{"messages": [{"role": "user", "content": "a\\ud83d"}]}',
    b'{"prompt": "\xed\xa0\x80"}',  # a surrogate encoded as (invalid) UTF-8 bytes
    b'{"prompt": "\xff\xfe"}',
])
def test_text_that_is_not_unicode_is_400(sluice: Gunicorn, fresh: FakeUpstream, body: str | bytes) -> None:
    for path in ("/stream", "/streams"):
        assert_400(requests.post(sluice.url + path, data=body, headers=JSON, timeout=10))
    assert fresh.request_count == 0


def test_a_surrogate_pair_is_fine(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    body = '{"prompt": "smile \\ud83d\\ude00 [fake tokens=2]"}'
    events = open_stream(f"{sluice.url}/stream", method="POST", data=body, headers=JSON).rest()
    assert types(events)[-2:] == ["done", "[DONE]"]
    assert "\U0001f600" in fresh.last_request.json["messages"][0]["content"]


WRONG_TYPES = [
    ({"prompt": "x", "max_tokens": "100"}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 100.0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": True}, "max_tokens"),
    ({"prompt": "x", "temperature": "0.5"}, "temperature"),
    ({"prompt": "x", "temperature": False}, "temperature"),
    ({"prompt": "x", "tools": "calculate"}, "tools"),
    ({"prompt": "x", "tools": [["calculate"]]}, "tools"),
    ({"prompt": "x", "provider": ""}, "provider"),
    ({"prompt": "x", "provider": ["demo"]}, "provider"),
    ({"prompt": "x", "model": ""}, "model"),
    ({"prompt": "x", "model": 7}, "model"),
    ({"prompt": "x", "response_format": ""}, "response_format"),
    ({"prompt": "x", "chunking": ""}, "chunking"),
    ({"prompt": "x", "reasoning": "max"}, "reasoning"),
    ({"prompt": "x", "stream_id": ""}, "stream_id"),
    ({"prompt": "x", "system": {"text": "y"}}, "system"),
    ({"prompt": ["x"]}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"messages": "hello"}, "messages"),
    ({"messages": [{"role": "user", "content": ["hello"]}]}, "messages"),
]


@pytest.mark.parametrize(("body", "field"), WRONG_TYPES)
def test_json_fields_have_their_json_type(sluice: Gunicorn, fresh: FakeUpstream, body: dict[str, object],
                                          field: str) -> None:
    for path in ("/stream", "/streams"):
        assert_400(requests.post(sluice.url + path, json=body, timeout=10), field)
    assert fresh.request_count == 0


@pytest.mark.parametrize("body", ["[]", '"prompt"', "null", "1", '{"prompt": "x"} trailing',
                                  '{"prompt": "x", "prompt": "y"}', '{"prompt": "x", "temperature": NaN}'])
def test_bodies_that_are_not_one_json_object_are_400(sluice: Gunicorn, fresh: FakeUpstream, body: str) -> None:
    for path in ("/stream", "/streams"):
        assert_400(requests.post(sluice.url + path, data=body, headers=JSON, timeout=10))
    assert fresh.request_count == 0


def test_json_body_with_every_field_of_the_right_type(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    body = {"prompt": "x [fake tokens=3]", "system": "be brief", "provider": "openai", "model": "gpt-test",
            "max_tokens": 50, "temperature": 1, "tools": ["calculate"], "response_format": "text",
            "chunking": "token", "reasoning": "off", "stream_id": "client-chosen-id-0001"}
    events = open_stream(f"{sluice.url}/stream", method="POST", json=body).rest()
    assert text_of(events) == "t0 t1 t2 " and types(events)[-2:] == ["done", "[DONE]"]
    # null stands for "not given" in an optional field
    body = {"prompt": "x [fake tokens=1]", "system": None, "max_tokens": None, "tools": None}
    assert types(open_stream(f"{sluice.url}/stream", method="POST", json=body).rest())[-2:] == ["done", "[DONE]"]


def test_query_parameters_are_parsed_from_text(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    params = {"prompt": "x [fake tokens=2]", "max_tokens": "100", "temperature": "0.5", "tools": "calculate,get_time",
              "provider": "openai", "reasoning": "off"}
    events = open_stream(f"{sluice.url}/stream", params=params).rest()
    assert types(events)[-2:] == ["done", "[DONE]"]
    sent = fresh.last_request.json
    assert sent["temperature"] == 0.5 and {t["function"]["name"] for t in sent["tools"]} == {"calculate", "get_time"}
    for bad, field in [({"max_tokens": "1_0"}, "max_tokens"), ({"max_tokens": "1e3"}, "max_tokens"),
                       ({"temperature": "nan"}, "temperature"), ({"temperature": "1_0"}, "temperature"),
                       ({"tools": "calculate,rm"}, "tools"), ({"reasoning": "max"}, "reasoning"),
                       ({"provider": ""}, "provider"), ({"model": ""}, "model"), ({"max_tokens": ""}, "max_tokens")]:
        assert_400(requests.get(f"{sluice.url}/stream", params={"prompt": "x", **bad}, timeout=5), field)
    assert fresh.request_count == 1


@pytest.mark.parametrize("body", [{"stream_id": ["a" * 22]}, {"stream_id": {"a": 1}}, {"stream_id": 12345678901234567}])
def test_cancel_with_a_wrong_type_is_400(sluice: Gunicorn, body: dict[str, object]) -> None:
    assert_400(requests.post(f"{sluice.url}/cancel", json=body, timeout=5), "stream_id")
    data = '{"stream_id": "' + "\\ud800" * 20 + '"}'
    assert_400(requests.post(f"{sluice.url}/cancel", data=data, headers=JSON, timeout=5))


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_calculation_too_large_goes_back_to_the_model_as_an_error(sluice: Gunicorn, fresh: FakeUpstream,
                                                                     provider: str) -> None:
    # Issue 9: `999999 ** 999` ended the whole generation with `internal`.
    prompt = 'big [fake tool=calculate args={"expression":"999999**999"} tokens=2]'
    events = open_stream(f"{sluice.url}/stream", params={"prompt": prompt, "tools": "calculate",
                                                         "provider": provider}).rest()
    assert types(events) == ["start", "tool_call", "tool_result", "text", "text", "text", "done", "[DONE]"]
    result = events[2].json
    assert result["is_error"] is True and "digits" in result["content"]
    assert fresh.request_count == 2
    assert result["content"] in text_of(events)  # the fake echoes the tool result it was sent


def test_the_demo_model_gets_an_error_result_for_a_huge_power(start_sluice) -> None:  # type: ignore[no-untyped-def]
    server = start_sluice(SLUICE_PROVIDER="demo", SLUICE_DEMO_TOKENS_PER_SECOND="1000")
    events = open_stream(f"{server.url}/stream", params={"prompt": "What is 999999 ** 999?",
                                                         "tools": "calculate"}).rest()
    assert types(events)[:3] == ["start", "tool_call", "tool_result"] and types(events)[-2:] == ["done", "[DONE]"]
    assert events[2].json["is_error"] is True


def test_cancel_names_one_valid_id_wherever_it_is_given(sluice: Gunicorn) -> None:
    one, other = "A" * 22, "B" * 22
    resp = requests.post(f"{sluice.url}/cancel", params={"stream_id": ""}, data={"stream_id": one}, timeout=5)
    assert_400(resp, "stream_id")
    resp = requests.post(f"{sluice.url}/cancel", params={"stream_id": one}, data={"stream_id": ""}, timeout=5)
    assert_400(resp, "stream_id")
    resp = requests.post(f"{sluice.url}/cancel", params={"stream_id": other}, json={"stream_id": one}, timeout=5)
    assert_400(resp, "stream_id")
    resp = requests.post(f"{sluice.url}/cancel", params={"stream_id": one}, json={"stream_id": one}, timeout=5)
    assert resp.status_code == 202 and resp.json()["status"] == "pending"


def test_an_empty_path_segment_is_a_json_404_not_a_redirect(sluice: Gunicorn) -> None:
    resp = requests.get(f"{sluice.url}/streams//events", timeout=5, allow_redirects=False)
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found"
