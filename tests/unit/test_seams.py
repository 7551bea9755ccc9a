"""app/seams: each library's internals, checked at start-up; a shape missing on purpose takes
the slow path, the answer still streams, the fallback is counted and logged."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
import pytest
from gevent import socket as gsocket
from gevent.event import Event
from prometheus_client import REGISTRY

import app.seams
from app.delivery.eof import EofWatch
from app.providers.anthropic import AnthropicProvider, adaptive_thinking
from app.providers.base import Provider
from app.providers.openai import OpenAIProvider
from app.seams import anthropic as anthropic_seam
from app.seams import gevent as gevent_seam
from app.seams import httpcore as httpcore_seam
from tests.providers.conftest import text_of
from tests.providers.test_body import ANTHROPIC_EVENTS, OPENAI_EVENTS, chunked_answer, run
from tests.support.scripted import Answer, ScriptedUpstream, scripted_upstreams

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(30)


def fallbacks(what: str) -> float:
    return REGISTRY.get_sample_value("sluice_fast_path_fallbacks_total", {"what": what}) or 0.0


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(autouse=True)
def checked() -> None:
    """Each seam checked with the real libraries first: a test that breaks a shape on purpose
    leaves the seam as it found it (monkeypatch restores the checked state)."""
    assert httpcore_seam.check()
    assert anthropic_seam.check()


@pytest.fixture
def seam_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The `sluice.seams` lines logged during the test (and "logged once" forgotten before it)."""
    monkeypatch.setattr(app.seams, "_warned", set())
    handler = Lines()
    logger = logging.getLogger("sluice.seams")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def answered_twice_counting(scripted: Callable[[Answer], ScriptedUpstream], events: list[bytes],
                            provider: Provider, what: str) -> ScriptedUpstream:
    """Two whole answers from `provider` off one scripted upstream, each counted as a `what` fallback."""
    server = scripted(chunked_answer(events))
    before = fallbacks(what)
    for _ in range(2):
        assert text_of(run(provider)) == "t0 t1 t2 "
    assert fallbacks(what) == before + 2
    return server


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Answer], ScriptedUpstream]]:
    yield from scripted_upstreams(monkeypatch)


CASES = {"anthropic": (AnthropicProvider, ANTHROPIC_EVENTS), "openai": (OpenAIProvider, OPENAI_EVENTS)}


# -- httpcore: httpx2 / httpcore2 / h11 ---------------------------------------------------------


def test_httpcore_shapes_are_there_and_the_path_is_logged(monkeypatch: pytest.MonkeyPatch, seam_log: list[str]) -> None:
    monkeypatch.setattr(httpcore_seam, "_ok", None)
    monkeypatch.setattr(httpcore_seam, "_classes", {})
    assert httpcore_seam.check()
    assert httpcore_seam.check()  # remembered: one line
    assert seam_log == [
        "seams: httpcore: streamed bodies are read off the connection's socket (httpcore2 + h11 fast path)"
    ]


@pytest.mark.parametrize("name", list(CASES))
def test_httpcore_shape_missing_streams_through_httpx2(
    scripted: Callable[[Answer], ScriptedUpstream], monkeypatch: pytest.MonkeyPatch, seam_log: list[str], name: str
) -> None:
    def moved() -> dict[str, object]:
        raise ImportError("cannot import name 'HTTP11ConnectionByteStream' from 'httpcore2._sync.http11'")

    monkeypatch.setattr(httpcore_seam, "_ok", None)
    monkeypatch.setattr(httpcore_seam, "_classes", {})
    monkeypatch.setattr(httpcore_seam, "_import_shapes", moved)
    cls, events = CASES[name]
    server = answered_twice_counting(scripted, events, cls(), "httpcore")
    assert server.accepted == 2, "read through httpx2, stopped before the last chunk: not reused"
    assert len(seam_log) == 1
    assert "HTTP11ConnectionByteStream" in seam_log[0] and "read through httpx2" in seam_log[0]
    assert 'what="httpcore"' in seam_log[0]


def test_h11_refusing_the_last_chunk_closes_the_connection(
    scripted: Callable[[Answer], ScriptedUpstream], monkeypatch: pytest.MonkeyPatch, seam_log: list[str]
) -> None:
    monkeypatch.setattr(httpcore_seam, "_give_back", lambda handle: "NEED_DATA")
    server = answered_twice_counting(scripted, ANTHROPIC_EVENTS, AnthropicProvider(), "h11")
    assert server.accepted == 2
    assert len(seam_log) == 1 and "seams: h11: h11 answered 'NEED_DATA'" in seam_log[0]


def test_httpcore_fast_path_counts_nothing(scripted: Callable[[Answer], ScriptedUpstream]) -> None:
    server = scripted(chunked_answer(ANTHROPIC_EVENTS))
    before = (fallbacks("httpcore"), fallbacks("h11"))
    provider = AnthropicProvider()
    for _ in range(2):
        assert text_of(run(provider)) == "t0 t1 t2 "
    assert (fallbacks("httpcore"), fallbacks("h11")) == before
    assert server.accepted == 1


# -- anthropic: the SDK's constant and its traced body ------------------------------------------


def test_anthropic_shapes_are_there() -> None:
    assert anthropic_seam.check()
    assert anthropic_seam.listed_for_adaptive_thinking("claude-mythos-preview")  # no version number


def test_anthropic_models_list_missing_leaves_the_version_rule(
    monkeypatch: pytest.MonkeyPatch, seam_log: list[str]
) -> None:
    monkeypatch.setattr(anthropic_seam, "_thinking_models", None)
    before = fallbacks("anthropic")
    assert adaptive_thinking("claude-opus-4-6")  # the version rule alone
    assert not adaptive_thinking("claude-mythos-preview")  # what only the SDK's list knows
    assert not adaptive_thinking("claude-sonnet-4-5")
    assert fallbacks("anthropic") == before + 3
    assert len(seam_log) == 1 and 'what="anthropic"' in seam_log[0]


def test_anthropic_traced_body_unknown_is_left_to_httpx2_and_counted(
    monkeypatch: pytest.MonkeyPatch, seam_log: list[str]
) -> None:
    from anthropic._tracing import SpanEndingStream

    class Observer:
        def end(self, how: str, error: BaseException | None = None) -> None:
            pass

    inner = object()
    traced = SpanEndingStream(inner, Observer())  # type: ignore[arg-type]
    assert anthropic_seam.traced_body(traced) is inner
    assert anthropic_seam.traced_body(inner) is None
    monkeypatch.setattr(anthropic_seam, "_span_stream", None)
    before = fallbacks("anthropic")
    assert anthropic_seam.traced_body(traced) is None  # then httpcore.take_over leaves it to httpx2
    assert anthropic_seam.traced_body(inner) is None  # not the SDK's: not a fallback
    assert fallbacks("anthropic") == before + 1
    assert len(seam_log) == 1


# -- gevent: the real socket under gevent's -----------------------------------------------------


def test_gevent_real_socket() -> None:
    assert gevent_seam.check()
    a, b = gsocket.socketpair()
    try:
        raw = gevent_seam.real_socket(a)
        assert raw is a._sock
        assert gevent_seam.real_socket(raw) is raw
        gevent_seam.release(raw)
        assert not a.closed
    finally:
        a.close()
        b.close()


class NoRealSocket:
    """A gevent socket whose real socket is not where the seam looks for it."""

    def __init__(self, sock: gsocket.socket) -> None:
        self._hidden = sock

    def fileno(self) -> int:
        return int(self._hidden.fileno())


def test_gevent_shape_missing_the_eof_watch_still_sees_the_close(seam_log: list[str]) -> None:
    a, b = gsocket.socketpair()
    before = fallbacks("gevent")
    fds = len(os.listdir("/proc/self/fd"))
    try:
        gone = Event()
        watch = EofWatch(NoRealSocket(a), gone)
        assert fallbacks("gevent") == before + 1
        gevent.sleep(0.05)
        assert not gone.is_set()
        b.close()
        assert gone.wait(2)
        watch.stop()
        assert len(os.listdir("/proc/self/fd")) == fds - 1, "the duplicate descriptor is closed (b is too)"
        assert not a.closed
        assert len(seam_log) == 1 and 'what="gevent"' in seam_log[0]
    finally:
        a.close()
        b.close()


# -- prometheus: the storage chosen again -------------------------------------------------------


def test_prometheus_shape_missing_is_counted_and_logged(tmp_path: Path) -> None:
    code = """
        import logging, os
        d = os.environ.pop("PROMETHEUS_MULTIPROC_DIR")
        import prometheus_client.values as values  # imported first: its choice is stale
        del values.get_value_class  # the shape gone
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = d
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        from prometheus_client import REGISTRY
        from app.observability import metrics
        metrics.generation_started()
        print(REGISTRY.get_sample_value("sluice_fast_path_fallbacks_total", {"what": "prometheus"}))
    """
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1.0"
    assert "seams: prometheus: AttributeError" in done.stderr and 'what="prometheus"' in done.stderr


def test_prometheus_stale_choice_is_made_again_and_logged(tmp_path: Path) -> None:
    code = """
        import logging, os
        d = os.environ.pop("PROMETHEUS_MULTIPROC_DIR")
        import prometheus_client  # imported first: its choice is stale
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = d
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        from app.observability import metrics
        metrics.generation_started()
    """
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "seams: prometheus: metric values in the multiprocess directory (chosen again in this worker)" in done.stderr
