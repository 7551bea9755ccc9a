"""Properties of the request parsers (hypothesis): whatever arrives, the answer is a spec or a
400 that names a field, never another exception; a JSON body and the same request spelled as a
query string mean the same thing."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.errors import RequestError
from app.lifecycle.spec import GenerationSpec
from app.tools import BUILTIN_TOOLS as TOOLS
from app.validation import (
    CHUNKINGS,
    FIELDS,
    PROVIDERS,
    REASONING_EFFORTS,
    RESPONSE_FORMATS,
    load_json,
    parse_spec,
)

SETTINGS = Settings.from_env({"SLUICE_PROVIDER": "anthropic", "ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k",
                              "SLUICE_ALLOWED_MODELS": "*"})
# Any text, lone surrogates included (hypothesis leaves them out unless asked).
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(ANY_TEXT, inner, max_size=4), max_leaves=12)
FIELD_NAMES = st.sampled_from(sorted(FIELDS)) | ANY_TEXT
BODIES = st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=8)
QUERIES = st.dictionaries(FIELD_NAMES, ANY_TEXT, max_size=8)

pytestmark = pytest.mark.timeout(120)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_spec(spec: GenerationSpec) -> None:
    """What any accepted request must look like."""
    assert spec.provider in PROVIDERS and spec.model.strip()
    assert 1 <= spec.max_tokens <= SETTINGS.max_tokens and type(spec.max_tokens) is int
    assert spec.temperature is None or (type(spec.temperature) is float and 0 <= spec.temperature <= 2)
    assert set(spec.tools) <= set(TOOLS) and len(set(spec.tools)) == len(spec.tools)
    assert spec.response_format in RESPONSE_FORMATS and spec.chunking in CHUNKINGS
    assert spec.reasoning in REASONING_EFFORTS
    assert spec.messages and spec.messages[-1].role == "user"
    for text in [spec.model, spec.system or "", *(m.text for m in spec.messages)]:
        text.encode("utf-8")  # every string can go upstream


def outcome(body: dict[str, Any], *, text: bool) -> GenerationSpec | RequestError:
    try:
        spec = parse_spec(body, SETTINGS, text=text)
    except RequestError as exc:
        assert exc.status == 400 and exc.type == "invalid_request" and exc.message
        return exc
    check_spec(spec)
    return spec


@FAST
@given(BODIES)
def test_any_json_body_is_a_spec_or_a_400(body: dict[str, Any]) -> None:
    outcome(body, text=False)


@FAST
@given(QUERIES)
def test_any_query_is_a_spec_or_a_400(query: dict[str, str]) -> None:
    outcome(query, text=True)


@FAST
@given(st.binary(max_size=200) | st.builds(lambda v: json.dumps(v).encode(), JSON_VALUES))
def test_any_bytes_are_json_or_a_400(raw: bytes) -> None:
    try:
        value = load_json(raw)
    except RequestError as exc:
        assert exc.status == 400
        return
    json.dumps(value, allow_nan=False).encode("utf-8")  # valid JSON, valid Unicode


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=201, max_value=20_000), st.sampled_from(["[", '{"a":', '{"a":[']))
def test_any_nesting_depth_is_a_400(depth: int, opener: str) -> None:
    closer = {"[": "]", '{"a":': "}", '{"a":[': "]}"}[opener]
    with pytest.raises(RequestError) as caught:
        load_json((opener * depth + "1" + closer * depth).encode())
    assert caught.value.status == 400


# -- valid requests, as JSON and as a query ---------------------------------------------------

PROMPTS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=60).filter(str.strip)
VALID = st.fixed_dictionaries(
    {"prompt": PROMPTS},
    optional={
        "system": st.text(st.characters(codec="utf-8"), max_size=30),
        "provider": st.sampled_from(PROVIDERS),
        "max_tokens": st.integers(min_value=1, max_value=SETTINGS.max_tokens),
        "temperature": st.floats(min_value=0, max_value=2) | st.integers(min_value=0, max_value=2),
        "tools": st.lists(st.sampled_from(sorted(TOOLS)), max_size=3),
        "response_format": st.sampled_from(RESPONSE_FORMATS),
        "chunking": st.sampled_from(CHUNKINGS),
        "reasoning": st.sampled_from(REASONING_EFFORTS),
        "stream_id": st.from_regex(r"\A[A-Za-z0-9_-]{16,64}\Z"),
    },
)


def as_query_text(value: Any) -> str:
    """How a client spells a JSON value in a query string."""
    if isinstance(value, list):
        return ",".join(value)
    return repr(value) if isinstance(value, float) else str(value)


@FAST
@given(VALID)
def test_a_valid_body_is_accepted_and_kept(body: dict[str, Any]) -> None:
    spec = outcome(body, text=False)
    assert isinstance(spec, GenerationSpec), spec
    assert spec.messages[0].text == body["prompt"]
    assert spec.max_tokens == body.get("max_tokens", spec.max_tokens)
    if "temperature" in body:
        assert spec.temperature is not None and math.isclose(spec.temperature, body["temperature"])
    assert spec.tools == tuple(dict.fromkeys(body.get("tools", [])))
    assert spec.stream_id == body.get("stream_id")


@FAST
@given(VALID.filter(lambda b: b.get("system", "x").strip() == b.get("system", "x") and b.get("tools") != []))
def test_the_same_request_as_a_query_means_the_same(body: dict[str, Any]) -> None:
    query = {key: as_query_text(value) for key, value in body.items()}
    assert outcome(query, text=True) == outcome(body, text=False)


@FAST
@given(VALID, st.sampled_from(["max_tokens", "temperature", "tools", "provider", "stream_id"]))
def test_a_json_field_spelled_as_text_is_a_400(body: dict[str, Any], field: str) -> None:
    value = body.get(field) or {"max_tokens": 5, "temperature": 0.5, "tools": ["calculate"], "provider": "demo",
                                "stream_id": "A" * 22}[field]
    if field in ("provider", "stream_id"):
        spelled: Any = [value]  # a string field given as a list
    else:
        spelled = as_query_text(value)
    result = outcome({**body, field: spelled}, text=False)
    assert isinstance(result, RequestError) and result.field == field


@FAST
@given(st.sampled_from(["max_tokens", "temperature"]),
       st.sampled_from(["5\n", " 5", "5 ", "+5", "\u0665", "1_0", "nan", "inf", "0x10", "5.", "1e3"]))
def test_query_numbers_are_plain_decimal_text(field: str, text: str) -> None:
    result = outcome({"prompt": "x", field: text}, text=True)
    if field == "temperature" and text in ("5.", "1e3", "+5"):
        assert isinstance(result, RequestError) and "between 0 and 2" in result.message  # a number, out of range
    else:
        assert isinstance(result, RequestError) and result.field == field, (field, text)
