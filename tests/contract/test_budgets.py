"""Budgets: what a principal may spend per window, never exceeded (CONTRACT "Budgets"; issue 23).

Where it matters (parallel streams, cancel) two hosts of two workers each share one Redis; the
window reset, the lowered max_tokens and the profile's own budget run on one host without it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from app.lifecycle.budget import MIN_ANSWER, estimate_input
from app.providers.base import Message
from tests.conftest import sluice_env
from tests.contract.conftest import (
    assert_rejected,
    check_well_formed,
    no_upstream_call,
    of,
    post_stream,
    terminal,
    wait_until,
)
from tests.fake_upstream import FakeUpstream
from tests.redis.conftest import two_hosts
from tests.support.servers import Gunicorn
from tests.support.sse import Stream, open_stream

pytestmark = pytest.mark.timeout(120)

KEYS = [f"budget-test-key-{i}-0123456789abcdef" for i in range(6)]


def auth(i: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[i]}"}


def reservation(prompt: str, max_tokens: int) -> int:
    """What Sluice reserves for a plain prompt (app.lifecycle.budget), to size a budget by."""
    return estimate_input(None, (Message("user", prompt),), ()) + max_tokens


def charged(events: list[Any]) -> int:
    usage = terminal(events)["usage"]
    return int(usage["input_tokens"]) + int(usage["output_tokens"])


def usage_of(server: Gunicorn, headers: dict[str, str]) -> dict[str, Any]:
    resp = requests.get(server.url + "/usage", headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def assert_budget_refusal(resp: requests.Response) -> dict[str, Any]:
    err = assert_rejected(resp, 429)
    assert err["type"] == "budget_exceeded", err
    assert isinstance(err["remaining_tokens"], int) and err["remaining_tokens"] >= 0, err
    assert 1 <= int(resp.headers["Retry-After"]) <= 86400, resp.headers
    return err


# -- two hosts, two workers each, one Redis ----------------------------------------------------------

PARALLEL_PROMPT = "parallel [fake tokens=30 pace=0.03]"
PARALLEL_BUDGET = 5 * reservation(PARALLEL_PROMPT, 30)  # holds 5 answers at once


@pytest.fixture(scope="module")
def hosts(upstream: FakeUpstream) -> Iterator[tuple[Gunicorn, Gunicorn]]:
    env = sluice_env(
        upstream,
        SLUICE_API_KEYS=",".join(KEYS),
        SLUICE_SECRET_KEY="budget-hosts-shared-secret-" + "k" * 20,
        SLUICE_MAX_STREAMS_PER_CLIENT="50",
        SLUICE_BUDGET_TOKENS=str(PARALLEL_BUDGET),
    )
    with two_hosts(env, workers=2) as both:
        yield both


def test_parallel_streams_on_two_hosts_never_spend_more_than_the_budget(
    hosts: tuple[Gunicorn, Gunicorn]
) -> None:
    results: list[tuple[int, Any]] = []
    lock = threading.Lock()
    go = threading.Event()

    def one(host: Gunicorn) -> None:
        go.wait(10)
        resp = requests.post(host.url + "/stream", json={"prompt": PARALLEL_PROMPT, "max_tokens": 30},
                             headers=auth(0), stream=True, timeout=60)
        if resp.status_code == 200:
            outcome: Any = check_well_formed(Stream(resp).rest())
        else:
            outcome = resp
        with lock:
            results.append((resp.status_code, outcome))

    threads = [threading.Thread(target=one, args=(hosts[i % 2],)) for i in range(20)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(90)
    assert len(results) == 20
    answered = [events for status, events in results if status == 200]
    refused = [resp for status, resp in results if status != 200]
    assert len(answered) >= 5, [s for s, _ in results]  # 5 fit at once, whatever the order
    assert refused, "20 answers cannot fit in a budget of 5"
    for resp in refused:
        assert_budget_refusal(resp)
    spent = sum(charged(events) for events in answered)
    assert spent <= PARALLEL_BUDGET
    for host in hosts:  # both hosts read the same counters; nothing stays reserved
        seen = wait_until(lambda h=host: (u := usage_of(h, auth(0)))["reserved_tokens"] == 0 and u, 10)
        assert seen["used_tokens"] == spent and seen["budget_tokens"] == PARALLEL_BUDGET
        assert seen["remaining_tokens"] == PARALLEL_BUDGET - spent
    metrics = requests.get(hosts[0].url + "/metrics", headers=auth(0), timeout=10).text
    assert "sluice_budget_rejections_total" in metrics and "sluice_tokens_charged_total" in metrics


def test_a_cancelled_stream_is_charged_what_it_used(hosts: tuple[Gunicorn, Gunicorn], fresh: FakeUpstream) -> None:
    one, two = hosts
    stream = open_stream(one.url + "/stream", method="POST", headers=auth(1),
                         json={"prompt": "x [fake tokens=200 pace=0.05]", "max_tokens": 200})
    stream.until(lambda e: e.data != "[DONE]" and e.json.get("type") == "text" and e.seq >= 5)
    during = usage_of(two, auth(1))
    assert during["reserved_tokens"] >= 200 and during["used_tokens"] == 0, during
    resp = requests.post(two.url + "/cancel", json={"stream_id": stream.stream_id}, headers=auth(1), timeout=10)
    assert resp.status_code == 200, resp.text
    events = check_well_formed(stream.rest())
    end = terminal(events)
    assert end["type"] == "cancelled"
    cost = charged(events)
    assert 0 < cost < reservation("x [fake tokens=200 pace=0.05]", 200)
    after = wait_until(lambda: (u := usage_of(one, auth(1)))["reserved_tokens"] == 0 and u, 10)
    assert after["used_tokens"] == cost


def test_usage_is_each_principals_own(hosts: tuple[Gunicorn, Gunicorn]) -> None:
    one, two = hosts
    check_well_formed(post_stream(one, {"prompt": "mine [fake tokens=5]"}, headers=auth(2)).rest())
    mine = wait_until(lambda: (u := usage_of(two, auth(2)))["reserved_tokens"] == 0 and u, 10)
    theirs = usage_of(two, auth(3))
    assert mine["principal"] != theirs["principal"]
    assert KEYS[2] not in mine["principal"]  # a digest, never the key
    assert mine["used_tokens"] > 0 and theirs["used_tokens"] == 0
    assert theirs["remaining_tokens"] == theirs["budget_tokens"] == PARALLEL_BUDGET
    for body in (mine, theirs):
        assert set(body) == {"principal", "window_start", "window_end", "budget_tokens", "used_tokens",
                             "reserved_tokens", "remaining_tokens"}
        assert body["window_end"] - body["window_start"] == 86400 and body["window_start"] % 86400 == 0
    assert requests.get(one.url + "/usage", timeout=10).status_code == 401


# -- one host, no Redis: the window, a lowered max_tokens, a profile's own budget --------------------

WINDOW = 8
SMALL_PROMPT = "small [fake tokens=100]"
SMALL_BUDGET = reservation(SMALL_PROMPT, 100) + 10  # one answer, not two


@pytest.fixture(scope="module")
def single(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    profiles = tmp_path_factory.mktemp("budgets") / "profiles.toml"
    profiles.write_text('[profiles.helper]\ndescription = "Help"\nmax_tokens = 30\nbudget_tokens = 100000\n')
    env = sluice_env(upstream, SLUICE_API_KEYS=",".join(KEYS), SLUICE_BUDGET_TOKENS=str(SMALL_BUDGET),
                     SLUICE_BUDGET_WINDOW_SECONDS=str(WINDOW), SLUICE_PROFILES=str(profiles))
    with Gunicorn(env) as server:
        yield server


def test_a_budget_comes_back_when_its_window_ends(single: Gunicorn, upstream: FakeUpstream) -> None:
    first = usage_of(single, auth(4))
    assert first["window_end"] - first["window_start"] == WINDOW and first["window_start"] % WINDOW == 0
    if first["window_end"] - time.time() < WINDOW / 2:  # start in a fresh window: room for two requests
        wait_until(lambda: usage_of(single, auth(4))["window_start"] > first["window_start"], WINDOW + 5, 0.1)
    body = {"prompt": SMALL_PROMPT, "max_tokens": 100}
    check_well_formed(post_stream(single, body, headers=auth(4)).rest())
    marker = "m" + uuid.uuid4().hex[:10]
    refused = requests.post(single.url + "/stream", json={**body, "prompt": f"{marker} {SMALL_PROMPT}"},
                            headers=auth(4), timeout=10)
    err = assert_budget_refusal(refused)
    now = usage_of(single, auth(4))
    assert err["remaining_tokens"] == now["remaining_tokens"] < reservation(SMALL_PROMPT, 100)
    assert int(refused.headers["Retry-After"]) <= WINDOW
    assert "window ends" in err["message"]
    no_upstream_call(upstream, marker=marker)
    fresh_window = wait_until(
        lambda: (u := usage_of(single, auth(4)))["window_start"] > now["window_start"] and u, WINDOW + 5, 0.1
    )
    assert fresh_window["used_tokens"] == 0 and fresh_window["remaining_tokens"] == SMALL_BUDGET
    assert terminal(post_stream(single, body, headers=auth(4)).rest())["type"] == "done"


def test_max_tokens_is_lowered_to_what_is_left(single: Gunicorn, upstream: FakeUpstream) -> None:
    prompt = "lower [fake tokens=300]"
    est = reservation(prompt, 0)
    assert SMALL_BUDGET - est >= MIN_ANSWER  # room for a useful answer, not for 300 tokens
    wait_until(lambda: usage_of(single, auth(5))["window_end"] - time.time() > 3, WINDOW + 5, 0.1)
    events = check_well_formed(post_stream(single, {"prompt": prompt, "max_tokens": 300}, headers=auth(5)).rest())
    start = of(events, "start")[0]
    assert start["max_tokens_lowered_from"] == 300 and start["max_tokens"] == SMALL_BUDGET - est
    asked = [r.json for r in upstream.requests if "lower [fake" in str(r.json)]
    assert asked and asked[-1]["max_tokens"] == SMALL_BUDGET - est
    assert charged(events) <= SMALL_BUDGET


def test_a_profile_with_its_own_budget_is_shown_apart(single: Gunicorn) -> None:
    body = usage_of(single, auth(3))
    assert body["profiles"] == {"helper": {"budget_tokens": 100000, "used_tokens": 0, "reserved_tokens": 0,
                                           "remaining_tokens": 100000}}
    wait_until(lambda: usage_of(single, auth(3))["window_end"] - time.time() > 3, WINDOW + 5, 0.1)
    events = check_well_formed(post_stream(single, {"prompt": "p [fake tokens=5]", "profile": "helper"},
                                           headers=auth(3)).rest())
    spent = charged(events)
    after = wait_until(lambda: (u := usage_of(single, auth(3)))["reserved_tokens"] == 0 and u, 10)
    assert after["profiles"]["helper"]["used_tokens"] == spent and after["used_tokens"] == spent


def test_budget_settings_are_checked_at_start(upstream: FakeUpstream, tmp_path: Path) -> None:
    for env in ({"SLUICE_BUDGET_TOKENS": "0"}, {"SLUICE_BUDGET_WINDOW_SECONDS": "soon"}):
        server = Gunicorn(sluice_env(upstream, **env))
        with pytest.raises(RuntimeError, match="exited at start") as failed:
            server.start()
        assert next(iter(env)) in str(failed.value)
