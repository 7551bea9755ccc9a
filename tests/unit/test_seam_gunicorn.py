"""app.seams.gunicorn: which path a worker takes, logged once; each use of gunicorn's internals
counted in sluice_fast_path_fallbacks_total{what}, a shape broken on purpose included."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.workers import base_async
from gunicorn.workers.ggevent import GeventWorker
from prometheus_client import REGISTRY

from app.process import worker as process_worker
from app.process.worker import Worker
from app.seams import gunicorn as seam


def fallbacks(what: str) -> float:
    return REGISTRY.get_sample_value("sluice_fast_path_fallbacks_total", {"what": what}) or 0.0


class _Log:
    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def make(cls: type) -> Any:
    cfg = Config()
    cfg.set("keepalive", 5)
    return cls(1, 0, [], None, 30, cfg, _Log())


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(Worker, "current", None)
    monkeypatch.setattr(seam, "_checked", type(seam._checked)())
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_outside_gunicorn_there_is_no_worker() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert seam.current_worker() is None


def test_the_worker_class_of_ours_is_used_through_its_extension_points(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    worker = make(Worker)
    seen: list[Any] = []
    monkeypatch.setattr(GeventWorker, "load_wsgi", lambda self: seen.append(seam.current_worker()))
    monkeypatch.setattr(process_worker.gc, "freeze", lambda: seen.append("frozen"))
    before = fallbacks("gunicorn_worker")
    with caplog.at_level(logging.INFO, logger="sluice.seams.gunicorn"):
        worker.load_wsgi()  # worker start: the app finds its worker, then the heap is frozen
        assert seen == [worker, "frozen"]
        assert seam.current_worker() is worker
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["gunicorn: Sluice's worker class (app.process.worker.Worker): drain and takeover through "
                     "gunicorn's extension points"]
    assert fallbacks("gunicorn_worker") == before

    gate = seam.gate_keepalive(worker)
    assert gate is not None and worker.keepalive_wait is gate and "timeout_ctx" not in vars(worker)
    with pytest.raises(StopIteration):  # gunicorn closes the connection, reads no next request
        worker.is_already_handled(seam.handed_over(worker))
    assert not worker.is_already_handled([b"an ordinary body"])
    called: list[int] = []
    gunicorns = seam.on_sigterm(worker, lambda signum, frame: called.append(signum))
    worker.handle_exit(signal.SIGTERM, None)
    assert called == [signal.SIGTERM] and worker.alive
    gunicorns(signal.SIGTERM, None)
    assert not worker.alive


def test_a_plain_gevent_worker_is_found_and_each_use_of_its_internals_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = make(GeventWorker)
    signal.signal(signal.SIGTERM, worker.handle_exit)
    before = {w: fallbacks(w) for w in ("gunicorn_worker", "gunicorn_keepalive", "gunicorn_start",
                                        "gunicorn_servers", "gunicorn_close")}
    with caplog.at_level(logging.INFO, logger="sluice.seams.gunicorn"):
        assert seam.current_worker() is worker
        assert seam.current_worker() is worker
    assert [r.getMessage() for r in caplog.records] == [
        "gunicorn: plain worker GeventWorker (no worker class of Sluice's): drain and takeover through "
        "gunicorn's internals"
    ]
    assert fallbacks("gunicorn_worker") == before["gunicorn_worker"] + 1  # once, however often asked

    gate = seam.gate_keepalive(worker)
    assert worker.timeout_ctx is gate
    started: list[str] = []
    worker.run = lambda: started.append("run")
    seam.at_plain_start(worker, lambda: started.append("start"))
    worker.run()
    assert started == ["start", "run"]
    assert seam.stop_accepting(worker).count == 0  # no server in this process
    with pytest.raises(StopIteration):
        seam.handed_over(worker)
    assert seam.can_take_over(worker)
    for what, n in (("gunicorn_keepalive", 1), ("gunicorn_start", 1), ("gunicorn_servers", 1),
                    ("gunicorn_close", 1)):
        assert fallbacks(what) == before[what] + n, what


def test_a_missing_shape_falls_back_and_is_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    # gunicorn's keep-alive loop and request handling no longer calling the methods ours overrides.
    monkeypatch.setattr(base_async.AsyncWorker, "handle", lambda self, listener, client, addr: None)
    monkeypatch.setattr(base_async.AsyncWorker, "handle_request", lambda self, name, req, sock, addr: None)
    worker = Worker.current = make(Worker)
    before = {w: fallbacks(w) for w in ("gunicorn_keepalive", "gunicorn_close")}
    with caplog.at_level(logging.INFO, logger="sluice.seams.gunicorn"):
        assert seam.current_worker() is worker
    assert fallbacks("gunicorn_keepalive") == before["gunicorn_keepalive"] + 1
    assert any("no longer calls timeout_ctx" in r.getMessage() for r in caplog.records)
    with pytest.raises(StopIteration):  # closed the plain worker's way instead
        seam.handed_over(worker)
    assert fallbacks("gunicorn_close") == before["gunicorn_close"] + 1


def test_a_worker_class_missing_a_method_of_ours_is_taken_as_plain() -> None:
    worker = make(Worker)
    worker.__class__ = type("Broken", (GeventWorker,), {"sluice_seam": 1})  # the class lost its methods
    before = fallbacks("gunicorn_worker")
    assert seam.check(worker) == "plain"
    assert fallbacks("gunicorn_worker") == before + 1


def test_no_takeover_on_a_worker_that_is_not_async() -> None:
    before = fallbacks("gunicorn_takeover")
    assert not seam.can_take_over(object())
    assert not seam.can_take_over(None)
    assert fallbacks("gunicorn_takeover") == before + 1
    assert not seam.detachable({"gunicorn.socket": object()})  # no detach(): gunicorn writes it
    assert fallbacks("gunicorn_takeover") == before + 2
