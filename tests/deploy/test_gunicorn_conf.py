"""deploy/gunicorn.conf.py on its own: its numbers are read as the app reads them, and its
`child_exit` hook forgets a dead worker's live gauges without loading the app into the master."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.observability.test_metrics import run as python
from tests.observability.test_metrics import value
from tests.support.servers import ROOT, VENV_BIN, base_env

from .conftest import GUNICORN_CONF

pytestmark = pytest.mark.timeout(60)


def gunicorn_print_config(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "gunicorn"), "-c", str(GUNICORN_CONF), "--print-config", "tests.deploy.echo_app:app"],
        cwd=ROOT, env=base_env(**env), capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize("raw", ["2.5", "two", "-1", "inf"])
def test_a_count_that_is_not_a_whole_number_stops_the_start(raw: str) -> None:
    out = gunicorn_print_config(SLUICE_WORKERS=raw)
    assert out.returncode != 0
    assert f"SLUICE_WORKERS must be a whole number of seconds or a count, got {raw!r}" in out.stderr


def test_a_whole_number_written_as_a_float_is_accepted() -> None:
    out = gunicorn_print_config(SLUICE_WORKERS="3.0")
    assert out.returncode == 0, out.stderr
    assert any(line.replace(" ", "") == "workers=3" for line in out.stdout.splitlines())


def active_generations(prom_dir: Path) -> float:
    text = python("from app.observability import metrics; print(metrics.render()[0].decode())", prom_dir)
    return value(text, "sluice_active_generations")


def test_child_exit_drops_the_dead_workers_live_gauges(tmp_path: Path) -> None:
    worker_pid = int(python(
        "import os; from app.observability import metrics; metrics.generation_started(); print(os.getpid())",
        tmp_path,
    ))
    assert active_generations(tmp_path) == 1
    # The master: loads the config as gunicorn does and runs the hook for the dead worker.
    python(f"""
        import importlib.util, sys, types
        spec = importlib.util.spec_from_file_location("gunicorn_conf", {str(GUNICORN_CONF)!r})
        conf = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(conf)
        conf.child_exit(None, types.SimpleNamespace(pid={worker_pid}))
        assert "app" not in sys.modules, "the master must not import the app (preload trap)"
    """, tmp_path)
    assert active_generations(tmp_path) == 0
