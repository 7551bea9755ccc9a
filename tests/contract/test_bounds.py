"""Bounds issue 9 asks for, as a client sees them: the calculate tool's work, JSON mode's bytes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import sluice_env
from tests.contract.conftest import check_well_formed, of, post_stream, terminal
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def srv(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    env = sluice_env(
        upstream,
        SLUICE_MAX_STREAMS_PER_CLIENT="50", SLUICE_MAX_RESPONSES_PER_CLIENT="50",
        SLUICE_IDLE_TIMEOUT="2",
        SLUICE_MAX_DURATION="5",
        SLUICE_HEARTBEAT_SECONDS="1",
    )
    with Gunicorn(env) as server:
        yield server


@pytest.mark.parametrize("expr", ["999999**999", "9**9**9", "10**10**10", "(2**100000)**100000", "2**64"])
def test_calculate_with_a_huge_result_is_an_error_result_not_a_failed_generation(
    srv: Gunicorn, fresh: FakeUpstream, expr: str
) -> None:
    args = json.dumps({"expression": expr}, separators=(",", ":"))
    t0 = time.monotonic()
    events = check_well_formed(
        post_stream(
            srv, {"prompt": f"x [fake tool=calculate args={args} tokens=2]", "tools": ["calculate"]}, timeout=30
        ).rest()
    )
    result = of(events, "tool_result")
    end = terminal(events)
    assert end["type"] == "done", end
    if expr == "2**64":  # a modest power is a value
        assert result[0]["is_error"] is False and result[0]["content"].strip() == "18446744073709551616"
        return
    assert result and result[0]["is_error"] is True, result
    assert fresh.request_count == 2, "the error result goes back to the model like any tool failure"
    assert time.monotonic() - t0 < 15, "the tool's work is bounded"
    assert requests.get(srv.url + "/healthz", timeout=3).status_code == 200


def grows(before: Any, after: Any) -> bool:
    """A partial JSON value that only grows: keys kept, strings extended, values otherwise kept."""
    if isinstance(before, dict):
        return isinstance(after, dict) and all(k in after and grows(v, after[k]) for k, v in before.items())
    if isinstance(before, list):
        return (
            isinstance(after, list)
            and len(after) >= len(before)
            and all(grows(a, b) for a, b in zip(before, after[: len(before)], strict=False))
        )
    if isinstance(before, str):
        return isinstance(after, str) and after.startswith(before)
    return bool(before == after)


def test_json_mode_values_only_grow_and_cost_a_small_multiple_of_the_answer(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(
        post_stream(srv, {"prompt": "x [fake json=1 tokens=600]", "response_format": "json"}, timeout=30).rest()
    )
    values = [v["value"] for v in of(events, "json")]
    assert values and of(events, "json")[-1]["complete"] is True
    for a, b in zip(values, values[1:], strict=False):
        assert grows(a, b), (a, b)
    answer = "".join(d["content"] for d in of(events, "text"))
    json_bytes = sum(len(e.data) for e in events if e.data != "[DONE]" and e.json["type"] == "json")
    assert json_bytes <= 10 * len(answer), f"{json_bytes} bytes of json events for a {len(answer)}-byte answer"


def test_a_number_being_written_never_disappears(srv: Gunicorn, fresh: FakeUpstream) -> None:
    # {"answer": ..., "n": 600}: "n" must not appear as 6, then vanish, then 600.
    events = check_well_formed(
        post_stream(srv, {"prompt": "x [fake json=1 tokens=3]", "response_format": "json"}).rest()
    )
    values = [v["value"] for v in of(events, "json")]
    seen_n = [v.get("n") for v in values if isinstance(v, dict) and "n" in v]
    assert seen_n and seen_n[-1] == 3
    first = next(i for i, v in enumerate(values) if isinstance(v, dict) and "n" in v)
    assert all("n" in v for v in values[first:])


def test_an_upstream_silent_past_the_idle_timeout_is_a_timeout_error(srv: Gunicorn, fresh: FakeUpstream) -> None:
    """SLUICE_IDLE_TIMEOUT=2 (heartbeats from Sluice or pings from the provider do not count)."""
    t0 = time.monotonic()
    events = check_well_formed(
        post_stream(srv, {"prompt": "x [fake tokens=20 stall_after=2 ping_every=0.5]"}, timeout=30).rest()
    )
    end = terminal(events)
    assert end["type"] == "error" and end["error"]["type"] == "timeout", end
    assert time.monotonic() - t0 < 15
    assert fresh.wait_closed(3), "the upstream connection is closed"


def test_a_generation_longer_than_the_max_duration_is_a_timeout_error(srv: Gunicorn, fresh: FakeUpstream) -> None:
    """SLUICE_MAX_DURATION=5: an answer still going at 5 s ends with `error` type `timeout`."""
    events = check_well_formed(post_stream(srv, {"prompt": "x [fake tokens=400 pace=0.05]"}, timeout=30).rest())
    end = terminal(events)
    assert end["type"] == "error" and end["error"]["type"] == "timeout", end
    assert fresh.wait_closed(3)
