"""Sluice itself behind the shipped nginx site and gunicorn config, with the fake upstream:
streaming, heartbeats, disconnects, cancel, reload and stop, metrics, capacity."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.sse import Stream, open_stream, text_of, types

from .conftest import fake_env

pytestmark = pytest.mark.timeout(90)


def stream_url(base: str, prompt: str, **params: str) -> str:
    query = "&".join(f"{k}={quote(v)}" for k, v in {"prompt": prompt, **params}.items())
    return f"{base}/stream?{query}"


def open_(url: str, **kwargs: object) -> Stream:
    stream = open_stream(url, verify=False, timeout=15, **kwargs)  # type: ignore[arg-type]
    assert stream.response.status_code == 200, stream.response.text
    return stream


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = requests.get(base + "/metrics", verify=False, timeout=5)
    assert r.status_code == 200
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_events_arrive_one_by_one(make_stack, fake) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(workers=2, env=fake_env(fake))
    t0 = time.monotonic()
    stream = open_(stream_url(stack.url, "hi [fake tokens=10 pace=0.2]"), headers={"Accept-Encoding": "gzip"})
    headers = stream.response.headers
    assert headers["Content-Type"].startswith("text/event-stream")
    assert "Content-Length" not in headers and "Content-Encoding" not in headers
    first = stream.until("start")
    assert first.at - t0 < 0.5, f"first event after {first.at - t0:.2f}s"
    events = stream.rest()
    assert types(events)[-2:] == ["done", "[DONE]"]
    assert text_of(events) == "".join(f"t{i} " for i in range(10))
    texts = [e for e in events if e.type == "text"]
    assert texts[-1].at - texts[0].at > 1.2, "the answer arrived in one lump: something buffers"
    gaps = [b.at - a.at for a, b in zip(texts, texts[1:], strict=False)]
    assert sum(g > 0.1 for g in gaps) >= 6


def test_heartbeats_keep_a_silent_stream_past_nginx_read_timeout(make_stack, fake) -> None:  # type: ignore[no-untyped-def]
    # nginx drops an upstream that sends nothing for proxy_read_timeout (1h shipped, 3s here);
    # the app's heartbeat (every 1s here) keeps it alive through 6s of upstream silence.
    stack = make_stack(workers=1, env=fake_env(fake, SLUICE_HEARTBEAT_SECONDS="1"), read_timeout="3s")
    # Warm-up: the worker's first upstream call imports the provider SDK, which blocks its
    # event loop (no heartbeat) for a second or more on a loaded machine; with the read
    # timeout scaled down to 3 s that alone could trip nginx.
    assert types(open_(stream_url(stack.url, "warm [fake tokens=1]")).rest())[-1] == "[DONE]"
    t0 = time.monotonic()
    stream = open_(stream_url(stack.url, "hi [fake tokens=5 first_delay=6]"))
    events = stream.rest()
    assert time.monotonic() - t0 > 5.5
    assert types(events) == ["start", *["text"] * 5, "done", "[DONE]"]
    assert stream.parser.comments.count("ping") >= 4


def test_client_disconnect_closes_the_upstream(make_stack, fake) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(workers=2, env=fake_env(fake, SLUICE_DISCONNECT_GRACE_SECONDS="1"))
    stream = open_(stream_url(stack.url, "hi [fake tokens=200 pace=0.1]"))
    stream.until("text")
    assert fake.open_connections == 1
    stream.close()
    gone = time.monotonic()
    assert fake.wait_closed(timeout=1 + 1 + 0.5), "upstream still open after the disconnect grace"
    assert time.monotonic() - gone < 2.5


def test_cancel_through_nginx(make_stack, fake) -> None:  # type: ignore[no-untyped-def]
    # One worker: without SLUICE_REDIS_URL a cancel reaches only the worker holding the stream.
    stack = make_stack(workers=1, env=fake_env(fake))
    stream = open_(stream_url(stack.url, "hi [fake tokens=200 pace=0.1]"))
    stream.until("text")
    # As the page sends it: same origin, port included (nginx must pass the port in Host).
    r = requests.post(stack.url + "/cancel", json={"stream_id": stream.stream_id}, verify=False, timeout=5,
                      headers={"Origin": stack.url})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    events = stream.rest()
    assert types(events)[-2:] == ["cancelled", "[DONE]"]
    assert events[-2].json["reason"] == "user"
    assert fake.wait_closed(timeout=3)


def _read_all(streams: list[Stream]) -> list[list[str]]:
    with ThreadPoolExecutor(len(streams)) as pool:
        return [types(evs) for evs in pool.map(lambda s: s.rest(), streams)]


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["reload", "stop"])
def test_reload_and_stop_end_every_stream_cleanly(make_stack, fake, sig: int) -> None:  # type: ignore[no-untyped-def]
    # graceful_timeout 8s -> the app's shutdown grace is a few seconds less (the config's hook).
    stack = make_stack(workers=2, env=fake_env(fake), graceful_timeout=8)
    short = [open_(stream_url(stack.url, "hi [fake tokens=10 pace=0.1]")) for _ in range(2)]
    long = [open_(stream_url(stack.url, "hi [fake tokens=300 pace=0.1]")) for _ in range(3)]
    for s in short + long:
        s.until("text")
    t0 = time.monotonic()
    stack.gunicorn.signal(sig)
    results = _read_all(short + long)
    for seen in results[:2]:
        assert seen[-2:] == ["done", "[DONE]"], seen
    for s, seen in zip(long, results[2:], strict=True):
        assert seen[-2:] == ["cancelled", "[DONE]"], seen
        assert s.events[-2].json["reason"] == "shutdown"
    # On a reload an old worker first accepts until a new one has booted (at most half its
    # graceful timeout: 4 s), then drains within its graceful timeout.
    limit = 8 + 4 if sig == signal.SIGHUP else 8
    assert time.monotonic() - t0 < limit, "streams were cut by gunicorn, not ended by the app"
    assert fake.wait_closed(timeout=3)

    if sig == signal.SIGHUP:  # the new workers serve
        after = open_(stream_url(stack.url, "again [fake tokens=3]"))
        assert types(after.rest())[-2:] == ["done", "[DONE]"]
        assert stack.gunicorn.proc.poll() is None
    else:
        assert stack.gunicorn.proc.wait(10) == 0


def test_metrics_add_up_across_workers(make_stack, fake) -> None:  # type: ignore[no-untyped-def]
    env = fake_env(fake, SLUICE_DISCONNECT_GRACE_SECONDS="1", SLUICE_HEARTBEAT_SECONDS="0.5")
    stack = make_stack(workers=2, env=env)
    # 6 answers to the end, side by side so that both workers take some; 2 that the client
    # leaves while the model is still thinking (cancelled, reason disconnect, no token).
    done = [open_(stream_url(stack.url, f"n{i} [fake tokens={4 + i} pace=0.05]")) for i in range(6)]
    left = [open_(stream_url(stack.url, "bye [fake tokens=5 first_delay=30]")) for _ in range(2)]
    for s in left:
        s.until("start")
        s.close()
    received = 0
    for seen in _read_all(done):
        assert seen[-2:] == ["done", "[DONE]"]
        received += seen.count("text")
    assert received == sum(4 + i for i in range(6))

    deadline = time.monotonic() + 10
    while True:
        m = scrape(stack.url)
        cancelled = metric(m, "sluice_generations_total", outcome="cancelled")
        if metric(m, "sluice_active_generations") == 0 and cancelled == 2:
            break
        assert time.monotonic() < deadline, f"generations still active: {m}"
        time.sleep(0.2)
    assert metric(m, "sluice_generations_total", outcome="done") == 6
    assert metric(m, "sluice_generations_total", outcome="error") == 0
    assert metric(m, "sluice_generation_endings_total", outcome="cancelled", reason="disconnect") == 2
    assert metric(m, "sluice_tokens_relayed_total") == received
    assert metric(m, "sluice_generation_duration_seconds_count") == 8
    assert metric(m, "sluice_time_to_first_token_seconds_count") == 6  # the 2 left saw no token
    # Scraped through either worker, the answer is the same.
    for _ in range(4):
        again = scrape(stack.url)
        assert metric(again, "sluice_generations_total", outcome="done") == 6
        assert metric(again, "sluice_tokens_relayed_total") == received


def test_503_with_retry_after_past_max_streams(make_stack, fake) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(workers=1, env=fake_env(fake, SLUICE_MAX_STREAMS="2"))
    busy = [open_(stream_url(stack.url, "hold [fake tokens=100 pace=0.1]")) for _ in range(2)]
    for s in busy:
        s.until("start")
    r = requests.get(
        stream_url(stack.url, "one more"), verify=False, timeout=5, headers={"Accept": "text/event-stream"}
    )
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["type"]
    for s in busy:
        s.close()
    assert metric(scrape(stack.url), "sluice_rejected_requests_total", status="503") == 1
