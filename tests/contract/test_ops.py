"""Operations: health, readiness, metrics, the per-generation log line, limits, shutdown
(CONTRACT "Operations", "Errors before the stream starts"; issue 9's shutdown item)."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.conftest import sluice_env
from tests.contract.conftest import (
    assert_rejected,
    check_well_formed,
    log_lines,
    no_upstream_call,
    post_stream,
    terminal,
    wait_until,
)
from tests.fake_upstream import FakeUpstream
from tests.support.servers import ROOT, Gunicorn, free_port

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def srv(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    env = sluice_env(upstream, SLUICE_MAX_STREAMS_PER_CLIENT="2")
    with Gunicorn(env) as server:
        yield server


def metric(body: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None."""
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def test_healthz_and_readyz(srv: Gunicorn) -> None:
    h = requests.get(srv.url + "/healthz", timeout=5)
    assert h.status_code == 200 and h.json() == {"status": "ok"}
    assert requests.get(srv.url + "/readyz", timeout=5).status_code == 200


def test_readyz_is_503_when_the_shared_backend_is_unreachable(start_sluice: Callable[..., Gunicorn]) -> None:
    server = start_sluice(SLUICE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    ready = requests.get(server.url + "/readyz", timeout=15)
    assert ready.status_code == 503


def test_metrics_names_and_types(srv: Gunicorn, fresh: FakeUpstream) -> None:
    check_well_formed(post_stream(srv, {"prompt": "x [fake tokens=4]"}).rest())
    requests.post(srv.url + "/stream", json={"prompt": "x", "max_tokens": 0}, timeout=10)
    resp = requests.get(srv.url + "/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain") or "openmetrics" in resp.headers["Content-Type"]
    body = resp.text
    for name, kind in [
        ("sluice_active_generations", "gauge"),
        ("sluice_generations_total", "counter"),
        ("sluice_tokens_relayed_total", "counter"),
        ("sluice_time_to_first_token_seconds", "histogram"),
        ("sluice_generation_duration_seconds", "histogram"),
        ("sluice_rejected_requests_total", "counter"),
    ]:
        base = name.removesuffix("_total")
        assert re.search(rf"^# TYPE ({name}|{base}) {kind}$", body, re.M), f"{name} {kind} missing"
    assert metric(body, "sluice_time_to_first_token_seconds_bucket") is not None
    assert metric(body, "sluice_generation_duration_seconds_count") is not None
    assert metric(body, "sluice_rejected_requests_total", status="400") is not None


def test_metrics_are_correct_across_workers(upstream: FakeUpstream, fresh: FakeUpstream) -> None:
    """Two workers started with the shipped gunicorn config (which is how an operator runs it)."""
    with Gunicorn(sluice_env(upstream), workers=2, config=ROOT / "deploy" / "gunicorn.conf.py") as srv:
        _six_generations_counted_by_every_scrape(srv)


def _six_generations_counted_by_every_scrape(srv: Gunicorn) -> None:
    def done_count() -> float:
        return (
            metric(requests.get(srv.url + "/metrics", timeout=10).text, "sluice_generations_total", outcome="done")
            or 0.0
        )

    before = max(done_count() for _ in range(6))
    for _ in range(6):  # new connections: spread over both workers
        check_well_formed(post_stream(srv, {"prompt": "x [fake tokens=2]"}, headers={"Connection": "close"}).rest())
    # Every scrape, whichever worker answers it, counts all six.
    for _ in range(8):
        assert done_count() == before + 6
    tokens = metric(requests.get(srv.url + "/metrics", timeout=10).text, "sluice_tokens_relayed_total")
    assert tokens is not None and tokens >= 12


def test_metrics_count_outcomes(srv: Gunicorn, fresh: FakeUpstream) -> None:
    def sample(outcome: str) -> float:
        return (
            metric(requests.get(srv.url + "/metrics", timeout=10).text, "sluice_generations_total", outcome=outcome)
            or 0.0
        )

    err0, can0 = sample("error"), sample("cancelled")
    check_well_formed(post_stream(srv, {"prompt": "x [fake status=401]"}).rest())
    stream = post_stream(srv, {"prompt": "x [fake stall_after=1]"})
    stream.until("text")
    requests.post(srv.url + "/cancel", json={"stream_id": stream.stream_id}, timeout=10)
    stream.rest()
    wait_until(lambda: sample("error") == err0 + 1 and sample("cancelled") == can0 + 1, timeout=5)


def test_one_json_log_line_per_generation_without_content(srv: Gunicorn, fresh: FakeUpstream) -> None:
    secret_prompt = "zebracornflakes"
    events = check_well_formed(post_stream(srv, {"prompt": f"{secret_prompt} [fake say=quokkasandwich]"}).rest())
    sid = events[0].json["stream_id"]
    stream = post_stream(srv, {"prompt": "x [fake stall_after=1]"})
    stream.until("text")
    requests.post(srv.url + "/cancel", json={"stream_id": stream.stream_id}, timeout=10)
    stream.rest()
    err = check_well_formed(post_stream(srv, {"prompt": "x [fake status=404]"}).rest())
    for ident, outcome in ((sid, "done"), (stream.stream_id, "cancelled"), (err[0].json["stream_id"], "error")):
        lines = wait_until(lambda i=ident: [ln for ln in log_lines(srv) if ln.get("stream_id") == i], timeout=5)
        assert len(lines) == 1, lines
        line = lines[0]
        for key in (
            "stream_id",
            "provider",
            "model",
            "outcome",
            "ttft_ms",
            "input_tokens",
            "output_tokens",
            "duration_ms",
        ):
            assert key in line, (key, line)
        assert line["outcome"] == outcome
        if outcome == "cancelled":
            assert line.get("reason") == "user", line
        if outcome == "error":
            assert "not_found" in (str(line.get("error_type")), str(line.get("error")), str(line.get("reason"))), line
    log = srv.log()
    assert secret_prompt not in log and "quokkasandwich" not in log


# -- limits ----------------------------------------------------------------------------------------


def test_too_many_streams_for_one_client_is_429_with_retry_after(srv: Gunicorn, fresh: FakeUpstream) -> None:
    held = []
    try:
        for _ in range(2):
            stream = post_stream(srv, {"prompt": "x [fake stall_after=1]"})
            stream.until("text")
            held.append(stream)
        fresh.reset()
        for method in ("POST", "GET"):
            resp = requests.request(
                method,
                srv.url + "/stream",
                params={"prompt": "x"} if method == "GET" else None,
                json={"prompt": "x"} if method == "POST" else None,
                timeout=10,
            )
            assert_rejected(resp, 429)
            assert int(resp.headers["Retry-After"]) >= 1
        no_upstream_call(fresh, settle=0)
    finally:
        for stream in held:
            requests.post(srv.url + "/cancel", json={"stream_id": stream.stream_id}, timeout=10)
            stream.close()


def test_at_capacity_is_503_with_retry_after(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_MAX_STREAMS="1")
    first = post_stream(server, {"prompt": "x [fake stall_after=1]"})
    try:
        first.until("text")
        fresh.reset()
        resp = requests.post(server.url + "/stream", json={"prompt": "x"}, timeout=10)
        assert_rejected(resp, 503)
        assert int(resp.headers["Retry-After"]) >= 1
        no_upstream_call(fresh, settle=0)
    finally:
        requests.post(server.url + "/cancel", json={"stream_id": first.stream_id}, timeout=10)
        first.close()


def test_shutdown_ends_every_stream_with_a_terminal_event(upstream: FakeUpstream, fresh: FakeUpstream) -> None:
    """Issue 9: `--graceful-timeout 4` and TERM: long streams end with a terminal event, not a cut."""
    server = Gunicorn(sluice_env(upstream), graceful_timeout=4).start()
    try:
        streams = [post_stream(server, {"prompt": "x [fake tokens=2000 pace=0.05]"}) for _ in range(2)]
        for s in streams:
            s.until("text")
        t0 = time.monotonic()
        server.signal(signal.SIGTERM)
        for s in streams:
            events = check_well_formed(s.rest())
            end = terminal(events)
            assert end["type"] == "cancelled" and end["reason"] == "shutdown", end
        assert time.monotonic() - t0 < 6
    finally:
        server.stop()


def test_an_example_page_and_the_chat_page_are_served(srv: Gunicorn) -> None:
    page = requests.get(srv.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    for ident in ("prompt", "send", "cancel", "answer", "status"):
        assert re.search(rf'id="{ident}"', page.text), ident
    example = requests.get(srv.url + "/examples/eventsource", timeout=10)
    assert example.status_code == 200 and "EventSource" in example.text
    assert "/stream" in example.text and "[DONE]" in example.text and "/cancel" in example.text


@pytest.fixture(scope="module")
def exposed(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    """Two workers, no Redis, no keys, listening on 0.0.0.0 too."""
    with Gunicorn(sluice_env(upstream), workers=2, args=("-b", f"0.0.0.0:{free_port()}")) as server:
        yield server


def test_a_warning_when_auth_is_off_beyond_loopback(exposed: Gunicorn) -> None:
    """Issue 11: at start-up, a warning when auth is off and the server listens beyond loopback."""
    wait_until(lambda: "SLUICE_API_KEYS" in exposed.log(), timeout=15)


def test_a_warning_when_several_workers_run_without_redis(exposed: Gunicorn) -> None:
    """Issue 9: under plain `gunicorn -w 2` the several-workers-without-Redis warning is reliable."""
    wait_until(lambda: "SLUICE_REDIS_URL" in exposed.log(), timeout=15)
