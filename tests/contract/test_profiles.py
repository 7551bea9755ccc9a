"""Profiles: what a page may ask for (CONTRACT "Profiles"; issue 23). A profile's fixed fields
reach the upstream whatever the client sends; anything else it sets is a 400 with no upstream
call; a bad profiles file stops the server from starting."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import sluice_env
from tests.contract.conftest import (
    assert_rejected,
    check_well_formed,
    get_stream,
    no_upstream_call,
    of,
    post_stream,
    terminal,
)
from tests.fake_upstream import FakeUpstream
from tests.support.servers import ROOT, VENV_BIN, Gunicorn

pytestmark = pytest.mark.timeout(90)

MODEL_A, MODEL_O = "fake-claude-small", "fake-gpt-small"
SECRET = "SECRET-SYSTEM-PROMPT-7d1f"

PROFILES = f"""
[profiles.support]
description = "Answers questions about Example Co."
provider = "anthropic"
model = "{MODEL_A}"
system = "{SECRET} You answer questions about Example Co."
max_tokens = 50
temperature = 0.2
tools = ["get_time"]
allow = ["temperature", "max_tokens", "reasoning"]

[profiles.quiet]
description = "Everything fixed"
provider = "openai"
model = "{MODEL_O}"
system = "QUIET-{SECRET}"
chunking = "word"
"""


def _env(upstream: FakeUpstream, path: Path, **extra: str) -> dict[str, str]:
    return sluice_env(
        upstream,
        SLUICE_ANTHROPIC_MODEL=MODEL_A,
        SLUICE_OPENAI_MODEL=MODEL_O,
        SLUICE_ALLOWED_MODELS=f"{MODEL_A},{MODEL_O}",
        SLUICE_PROFILES=str(path),
        **extra,
    )


@pytest.fixture(scope="module")
def profiles_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "profiles.toml"
    path.write_text(PROFILES)
    return path


@pytest.fixture(scope="module")
def srv(upstream: FakeUpstream, profiles_file: Path) -> Iterator[Gunicorn]:
    with Gunicorn(_env(upstream, profiles_file), workers=2) as server:
        yield server


def _marker() -> str:
    return "m" + uuid.uuid4().hex[:12]


def _asked(fake: FakeUpstream, marker: str) -> dict[str, Any]:
    """The one upstream request that carried `marker`."""
    found = [r.json for r in fake.requests if marker in str(r.json)]
    assert len(found) == 1, found
    return dict(found[0])


def _system_text(asked: dict[str, Any]) -> str:
    system = asked.get("system")
    if system is None:  # OpenAI: the first message
        system = asked["messages"][0]["content"]
    return system if isinstance(system, str) else " ".join(part["text"] for part in system)


def test_fixed_fields_reach_the_upstream(srv: Gunicorn, upstream: FakeUpstream) -> None:
    marker = _marker()
    events = check_well_formed(post_stream(srv, {"profile": "support", "prompt": f"{marker} [fake tokens=3]"}).rest())
    start = of(events, "start")[0]
    assert start["profile"] == "support" and start["provider"] == "anthropic" and start["model"] == MODEL_A
    assert terminal(events)["type"] == "done"
    asked = _asked(upstream, marker)
    assert asked["model"] == MODEL_A and asked["max_tokens"] == 50 and asked["temperature"] == 0.2
    assert SECRET in _system_text(asked)
    assert [tool["name"] for tool in asked["tools"]] == ["get_time"]


def test_a_client_cannot_change_a_fixed_field(srv: Gunicorn, upstream: FakeUpstream) -> None:
    # model and system are fixed (not in allow): the profile's values are what the model sees.
    marker = _marker()
    body = {"profile": "support", "prompt": f"{marker} [fake tokens=2]", "model": MODEL_O,
            "system": "You are a general-purpose assistant", "tools": ["calculate"]}
    events = check_well_formed(post_stream(srv, body).rest())
    assert of(events, "start")[0]["model"] == MODEL_A
    asked = _asked(upstream, marker)
    assert asked["model"] == MODEL_A and SECRET in _system_text(asked)
    assert "general-purpose" not in str(asked)
    assert [tool["name"] for tool in asked["tools"]] == ["get_time"]


def test_allowed_fields_are_the_clients(srv: Gunicorn, upstream: FakeUpstream) -> None:
    marker = _marker()
    body = {"profile": "support", "prompt": f"{marker} [fake tokens=2]", "temperature": 0.9, "max_tokens": 20}
    check_well_formed(post_stream(srv, body).rest())
    asked = _asked(upstream, marker)
    assert asked["temperature"] == 0.9 and asked["max_tokens"] == 20


def test_a_query_names_a_profile_too(srv: Gunicorn, upstream: FakeUpstream) -> None:
    marker = _marker()
    events = check_well_formed(get_stream(srv, prompt=f"{marker} [fake tokens=2]", profile="quiet").rest())
    start = of(events, "start")[0]
    assert start["profile"] == "quiet" and start["provider"] == "openai" and start["model"] == MODEL_O
    asked = _asked(upstream, marker)
    assert asked["model"] == MODEL_O and "QUIET-" + SECRET in _system_text(asked)


def test_without_a_profile_a_request_is_unrestricted(srv: Gunicorn, upstream: FakeUpstream) -> None:
    marker = _marker()
    events = check_well_formed(post_stream(srv, {"prompt": f"{marker} [fake tokens=2]", "system": "plain"}).rest())
    assert of(events, "start")[0]["profile"] is None
    assert SECRET not in str(_asked(upstream, marker))


REFUSED = [
    ({"profile": "nope"}, "profile"),
    ({"profile": ""}, "profile"),
    ({"profile": 5}, "profile"),
    ({"profile": ["support"]}, "profile"),
    ({"profile": "support", "response_format": "json"}, "response_format"),
    ({"profile": "support", "chunking": "word"}, "chunking"),
    ({"profile": "support", "max_tokens": 51}, "max_tokens"),  # allowed only to lower 50
    ({"profile": "support", "temperature": 3}, "temperature"),  # allowed, still within bounds
    ({"profile": "quiet", "temperature": 0.5}, "temperature"),
    ({"profile": "quiet", "reasoning": "low"}, "reasoning"),
    ({"profile": "quiet", "max_tokens": 10}, "max_tokens"),
]


@pytest.mark.parametrize(("extra", "field"), REFUSED, ids=[f"{b.get('profile')}-{f}" for b, f in REFUSED])
@pytest.mark.parametrize("route", ["/stream", "/streams"])
def test_refused_with_the_field_and_no_upstream_call(
    srv: Gunicorn, upstream: FakeUpstream, extra: dict[str, Any], field: str, route: str
) -> None:
    marker = _marker()
    resp = requests.post(srv.url + route, json={"prompt": f"{marker} hi", **extra}, timeout=15)
    err = assert_rejected(resp, 400, field)
    assert SECRET not in resp.text
    if field == "profile" and isinstance(extra["profile"], str):
        assert "support" in err["message"]  # an unknown profile's answer names the ones there are
    no_upstream_call(upstream, marker=marker)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"profile": "nope"}, "profile"), ({"profile": "support", "chunking": "word"}, "chunking"),
     ({"profile": "support", "max_tokens": "51"}, "max_tokens"), ({"profile": "quiet", "tools": "calculate"}, "tools")],
)
def test_refused_in_a_query(srv: Gunicorn, upstream: FakeUpstream, params: dict[str, str], field: str) -> None:
    marker = _marker()
    resp = requests.get(srv.url + "/stream", params={"prompt": f"{marker} hi", **params}, timeout=15)
    assert_rejected(resp, 400, field)
    no_upstream_call(upstream, marker=marker)


def test_get_profiles_lists_them_without_their_prompts(srv: Gunicorn) -> None:
    resp = requests.get(srv.url + "/profiles", timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "profiles": [
            {"name": "quiet", "description": "Everything fixed", "allow": []},
            {"name": "support", "description": "Answers questions about Example Co.",
             "allow": ["max_tokens", "reasoning", "temperature"]},
        ]
    }
    assert SECRET not in resp.text


def test_the_chat_page_offers_the_profiles(srv: Gunicorn) -> None:
    html = requests.get(srv.url + "/", timeout=10).text
    assert 'id="profile"' in html and 'value="support"' in html and 'value="quiet"' in html
    assert SECRET not in html


def test_a_default_profile_applies_to_a_request_naming_none(
    upstream: FakeUpstream, profiles_file: Path
) -> None:
    key = "profiles-test-key-0123456789abcdef"
    with Gunicorn(_env(upstream, profiles_file, SLUICE_DEFAULT_PROFILE="support", SLUICE_API_KEYS=key)) as server:
        auth = {"Authorization": f"Bearer {key}"}
        assert requests.get(server.url + "/profiles", timeout=10).status_code == 401  # as the other routes
        assert requests.get(server.url + "/profiles", headers=auth, timeout=10).status_code == 200
        marker = _marker()
        events = check_well_formed(post_stream(server, {"prompt": f"{marker} [fake tokens=2]"}, headers=auth).rest())
        assert of(events, "start")[0]["profile"] == "support"
        assert SECRET in _system_text(_asked(upstream, marker))
        marker = _marker()
        resp = requests.post(server.url + "/stream", json={"prompt": f"{marker} hi", "chunking": "word"},
                             headers=auth, timeout=10)
        assert_rejected(resp, 400, "chunking")
        no_upstream_call(upstream, marker=marker)
        html = requests.get(server.url + "/", headers=auth, timeout=10).text
        assert 'value="support" data-allow' in html and 'value=""' not in html  # no "none" to choose


# -- a bad file stops the start, naming the file, the profile and the key ----------------------------

BAD_FILES = {
    "invalid-toml": ("[profiles.support\nmodel = 1", ["not valid TOML"]),
    "unknown-key": ('[profiles.support]\nmodle = "x"', ["'support'", "'modle'", "unknown key"]),
    "unknown-provider": ('[profiles.support]\nprovider = "mistral"', ["'support'", "'provider'"]),
    "unknown-tool": ('[profiles.helper]\ntools = ["get_time", "rm_rf"]', ["'helper'", "'tools'", "rm_rf"]),
    "model-not-allowed": ('[profiles.support]\nmodel = "gpt-4-huge"', ["'support'", "'model'", "not allowed"]),
    "allow-unknown": ('[profiles.support]\nallow = ["prompt"]', ["'support'", "'allow'", "'prompt'"]),
    "max-tokens-too-big": ("[profiles.support]\nmax_tokens = 999999", ["'support'", "'max_tokens'"]),
    "top-level-key": ('title = "x"', ["'title'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_profiles_file_stops_the_start(upstream: FakeUpstream, tmp_path: Path, case: str) -> None:
    text, expected = BAD_FILES[case]
    path = tmp_path / f"{case}.toml"
    path.write_text(text)
    server = Gunicorn(_env(upstream, path))
    with pytest.raises(RuntimeError, match="exited at start") as failed:
        server.start()
    message = str(failed.value)
    assert str(path) in message, message[-2000:]
    for part in expected:
        assert part in message, (part, message[-2000:])


def test_a_profile_may_fix_the_operators_own_tools(upstream: FakeUpstream, tmp_path: Path) -> None:
    path = tmp_path / "own.toml"
    path.write_text('[profiles.orders]\ntools = ["lookup_order", "get_time"]\n')
    with Gunicorn(_env(upstream, path, SLUICE_TOOLS="tests.support.own_tools:lookup_order")) as server:
        marker = _marker()
        check_well_formed(post_stream(server, {"profile": "orders", "prompt": f"{marker} [fake tokens=2]"}).rest())
        assert [tool["name"] for tool in _asked(upstream, marker)["tools"]] == ["lookup_order", "get_time"]


def test_an_unreadable_profiles_file_stops_the_start(upstream: FakeUpstream, tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    server = Gunicorn(_env(upstream, path))
    with pytest.raises(RuntimeError, match="exited at start") as failed:
        server.start()
    assert f"cannot read {path}" in str(failed.value)


def test_a_default_profile_that_is_not_in_the_file_stops_the_start(
    upstream: FakeUpstream, profiles_file: Path
) -> None:
    server = Gunicorn(_env(upstream, profiles_file, SLUICE_DEFAULT_PROFILE="sales"))
    with pytest.raises(RuntimeError, match="exited at start") as failed:
        server.start()
    assert "SLUICE_DEFAULT_PROFILE" in str(failed.value) and "'sales'" in str(failed.value)


def test_the_file_can_be_checked_before_a_reload(upstream: FakeUpstream, profiles_file: Path, tmp_path: Path) -> None:
    """A reload whose new workers cannot read the file would stop the whole server (gunicorn
    halts on a worker that fails to boot): `python -m app.profiles`, run by the systemd unit
    before its HUP, says so first."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[profiles.support]\ntools = ["rm_rf"]')
    for path, code in ((profiles_file, 0), (bad, 1)):
        done = subprocess.run([str(VENV_BIN / "python"), "-m", "app.profiles"], cwd=ROOT, env=_env(upstream, path),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == code, done
        if code:
            assert str(bad) in done.stderr and "'support'" in done.stderr and "'tools'" in done.stderr
        else:
            assert "quiet, support" in done.stdout
    unit = (ROOT / "deploy" / "systemd" / "sluice.service").read_text()
    assert "ExecReload=/srv/sluice/.venv/bin/python -m app.profiles" in unit
