"""app.observability.metrics: the names of the contract, and correct sums across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app.observability import metrics

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text -> {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def run(code: str, multiproc_dir: Path) -> str:
    """Run `code` in a fresh interpreter in multiprocess mode; return its stdout."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_has_no_side_effects() -> None:
    code = (
        "import sys, app.observability, app.observability.metrics, app.observability.logging;"
        "assert 'prometheus_client' not in sys.modules, 'prometheus_client imported at import time'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_single_process_counts_in_the_default_registry() -> None:
    def get(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "done": get("sluice_generations_total", outcome="done"),
        "cancel": get("sluice_generation_endings_total", outcome="cancelled", reason="disconnect"),
        "tokens": get("sluice_tokens_relayed_total"),
        "ttft": get("sluice_time_to_first_token_seconds_count"),
        "dur": get("sluice_generation_duration_seconds_count"),
        "503": get("sluice_rejected_requests_total", status="503"),
        "up": get("sluice_upstream_errors_total", type="overloaded"),
    }
    metrics.generation_started()
    metrics.generation_started()
    assert get("sluice_active_generations") >= 2
    metrics.text_deltas_relayed(7)
    metrics.text_deltas_relayed(0)
    metrics.generation_finished("done", None, 0.3, 2.0)
    metrics.generation_finished("cancelled", "disconnect", None, 1.0)
    metrics.subscriber_attached()
    metrics.subscriber_detached()
    metrics.request_rejected(503)
    metrics.upstream_error("overloaded")

    assert get("sluice_generations_total", outcome="done") == before["done"] + 1
    assert get("sluice_generation_endings_total", outcome="cancelled", reason="disconnect") == before["cancel"] + 1
    assert get("sluice_tokens_relayed_total") == before["tokens"] + 7
    assert get("sluice_time_to_first_token_seconds_count") == before["ttft"] + 1  # None: not observed
    assert get("sluice_generation_duration_seconds_count") == before["dur"] + 2
    assert get("sluice_rejected_requests_total", status="503") == before["503"] + 1
    assert get("sluice_upstream_errors_total", type="overloaded") == before["up"] + 1

    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    text = body.decode()
    for name in (
        "sluice_active_generations", "sluice_generations_total", "sluice_tokens_relayed_total",
        "sluice_time_to_first_token_seconds_bucket", "sluice_generation_duration_seconds_bucket",
        "sluice_rejected_requests_total", "sluice_active_subscribers",
    ):
        assert name in text, name
    for outcome in metrics.OUTCOMES:
        assert f'sluice_generations_total{{outcome="{outcome}"}}' in text


WORKER = """
    import os
    from app.observability import metrics
    metrics.generation_started()
    metrics.generation_started()
    metrics.generation_started()
    metrics.text_deltas_relayed({tokens})
    metrics.generation_finished("done", None, 0.4, 3.0)
    metrics.generation_finished("{outcome}", "{reason}", None, 1.0)
    metrics.request_rejected(503)
    print(os.getpid())
"""


def test_multiprocess_values_add_up_across_processes(tmp_path: Path) -> None:
    pid_a = int(run(WORKER.format(tokens=5, outcome="cancelled", reason="user"), tmp_path))
    pid_b = int(run(WORKER.format(tokens=11, outcome="error", reason="overloaded"), tmp_path))
    render = "from app.observability import metrics; print(metrics.render()[0].decode())"

    text = run(render, tmp_path)
    assert value(text, "sluice_generations_total", outcome="done") == 2
    assert value(text, "sluice_generations_total", outcome="cancelled") == 1
    assert value(text, "sluice_generations_total", outcome="error") == 1
    assert value(text, "sluice_generation_endings_total", outcome="error", reason="overloaded") == 1
    assert value(text, "sluice_tokens_relayed_total") == 16
    assert value(text, "sluice_rejected_requests_total", status="503") == 2
    assert value(text, "sluice_time_to_first_token_seconds_count") == 2
    assert value(text, "sluice_generation_duration_seconds_count") == 4
    assert value(text, "sluice_generation_duration_seconds_bucket", le="+Inf") == 4
    # Each process left one generation running: live gauges count until it is marked dead.
    assert value(text, "sluice_active_generations") == 2

    run(f"from app.observability import metrics; metrics.mark_process_dead({pid_a})", tmp_path)
    text = run(render, tmp_path)
    assert value(text, "sluice_active_generations") == 1
    assert value(text, "sluice_generations_total", outcome="done") == 2  # counters outlive workers

    run(f"from app.observability import metrics; metrics.mark_process_dead({pid_b})", tmp_path)
    assert value(run(render, tmp_path), "sluice_active_generations") == 0


def test_multiprocess_mode_even_when_prometheus_client_was_imported_first(tmp_path: Path) -> None:
    code = f"""
        import os
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        import prometheus_client  # chooses its storage now, without the directory
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
        from app.observability import metrics
        metrics.text_deltas_relayed(3)
    """
    run(code, tmp_path)
    assert any(p.suffix == ".db" for p in tmp_path.iterdir())
    text = run("from app.observability import metrics; print(metrics.render()[0].decode())", tmp_path)
    assert value(text, "sluice_tokens_relayed_total") == 3


def test_tokens_are_counted_by_provider_and_kind_as_billed() -> None:
    def get(kind: str) -> float:
        return REGISTRY.get_sample_value("sluice_tokens_total", {"provider": "anthropic", "kind": kind}) or 0.0

    kinds = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
             "reasoning_tokens")
    before = {k: get(k) for k in kinds}
    metrics.tokens_used("anthropic", {"input_tokens": 120, "output_tokens": 30, "cache_read_input_tokens": 100,
                                      "reasoning_tokens": 12, "estimated": True})
    after = {k: get(k) - before[k] for k in kinds}
    assert after == {"input_tokens": 120, "output_tokens": 30, "cache_read_input_tokens": 100,
                     "cache_creation_input_tokens": 0, "reasoning_tokens": 12}
