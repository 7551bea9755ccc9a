"""Prometheus metrics for Sluice, correct across gunicorn workers.

Under gunicorn, `deploy/gunicorn.conf.py` sets `PROMETHEUS_MULTIPROC_DIR` in the master before
any worker exists; each worker then writes its values to memory-mapped files in that directory,
and `render()` merges every worker's files into one answer, whichever worker is scraped.
Without that variable (a single process, the tests) the default registry is used.

Trap: prometheus_client decides between the two storages when a metric object is CREATED (and
its `values.ValueClass` when the package is first imported: chosen again, if stale, by
`app/seams/prometheus.py`). So nothing here touches prometheus_client at import time: the metric
objects are built on first use, by which time the worker's environment is final.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

OUTCOMES = ("done", "cancelled", "error")
# `kind` of sluice_tokens_total: the usage fields of a generation's terminal event, by their
# own names, as the bill counts them (input includes the cache kinds; output includes reasoning).
TOKEN_KINDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
)

# LLM streams: the first token comes in tens of milliseconds (a cache hit, the demo) to tens
# of seconds (a long prompt, a loaded upstream); whole answers run from under a second to
# SLUICE_MAX_DURATION (600 s by default).
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0)
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0, 300.0, 450.0, 600.0)


@dataclass(frozen=True)
class _Metrics:
    active_generations: Gauge
    active_subscribers: Gauge
    generations: Counter
    endings: Counter
    text_deltas_relayed: Counter
    tokens: Counter
    upstream_errors: Counter
    upstream_retries: Counter
    rejected: Counter
    budget_rejections: Counter
    tokens_charged: Counter
    mirror_dropped: Counter
    fallbacks: Counter
    ttft: Histogram
    duration: Histogram


_lock = threading.Lock()
_metrics: _Metrics | None = None


def multiprocess_dir() -> str | None:
    """The multiprocess directory when multiprocess mode is on, else None."""
    path = os.environ.get(_MULTIPROC_ENV, "").strip()
    return path or None


def _build() -> _Metrics:
    from prometheus_client import Counter, Gauge, Histogram

    from app.seams import prometheus

    # prometheus_client may have been imported (by someone) before the directory was set: its
    # module-level choice of storage is then stale, chosen again here (app/seams/prometheus.py).
    shared = prometheus.use_multiprocess_values() if multiprocess_dir() else True

    generations = Counter(
        "sluice_generations", "Generations that ended, by outcome.", ["outcome"]
    )
    for outcome in OUTCOMES:  # export zeros, so rate() and alerts see every series from the start
        generations.labels(outcome=outcome)
    built = _Metrics(
        active_generations=Gauge(
            "sluice_active_generations",
            "Generations running now (summed over live workers).",
            multiprocess_mode="livesum",
        ),
        active_subscribers=Gauge(
            "sluice_active_subscribers",
            "Clients attached to a generation's event stream now (summed over live workers).",
            multiprocess_mode="livesum",
        ),
        generations=generations,
        endings=Counter(
            "sluice_generation_endings",
            "Generations that ended, by outcome and reason (cancel reason or error type).",
            ["outcome", "reason"],
        ),
        # The name says "tokens" (docs/deploy.md, dashboards); what it counts is the provider's
        # text deltas, one per upstream text event (a delta may hold several tokens, or part of one).
        text_deltas_relayed=Counter(
            "sluice_tokens_relayed", "Text deltas relayed from the upstream model (one per upstream text event)."
        ),
        tokens=Counter(
            "sluice_tokens",
            "Tokens billed by upstream providers, by provider and kind (estimates for cut-short rounds).",
            ["provider", "kind"],
        ),
        upstream_errors=Counter(
            "sluice_upstream_errors", "Errors from upstream providers, by error type.", ["type"]
        ),
        upstream_retries=Counter(
            "sluice_upstream_retries",
            "Upstream calls retried after a transient failure before their first token, by provider.",
            ["provider"],
        ),
        rejected=Counter(
            "sluice_rejected_requests",
            "Requests answered with an error status before any stream started.",
            ["status"],
        ),
        budget_rejections=Counter(
            "sluice_budget_rejections", "Requests refused (429 budget_exceeded) because a token budget was spent."
        ),
        tokens_charged=Counter(
            "sluice_tokens_charged", "Tokens charged to budgets (input + output of generations run under one)."
        ),
        mirror_dropped=Counter(
            "sluice_redis_mirror_dropped",
            "Ended generations whose mirror in Redis was given up (a long Redis outage, or a write"
            " that kept failing): other workers and hosts do not replay them in full.",
            ["reason"],
        ),
        fallbacks=Counter(
            "sluice_fast_path_fallbacks",
            "Times Sluice took its slower or internals-based path because another library's shapes"
            " were not as expected, or were not offered by its extension points (app/seams), by what.",
            ["what"],
        ),
        ttft=Histogram(
            "sluice_time_to_first_token_seconds",
            "Seconds from a generation's start to its first output (text, reasoning, a tool call).",
            buckets=TTFT_BUCKETS,
        ),
        duration=Histogram(
            "sluice_generation_duration_seconds",
            "Seconds from a generation's start to its terminal event.",
            buckets=DURATION_BUCKETS,
        ),
    )
    if not shared:
        built.fallbacks.labels(what=prometheus.FALLBACK).inc()
    return built


def _m() -> _Metrics:
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _build()
    return _metrics


def generation_started() -> None:
    """A generation began: `sluice_active_generations` +1."""
    _m().active_generations.inc()


def generation_finished(outcome: str, reason: str | None, ttft_s: float | None, duration_s: float) -> None:
    """A generation ended (`outcome`: done, cancelled or error; `reason`: the cancel reason or
    error type, None for done). Call exactly once per `generation_started`."""
    m = _m()
    m.active_generations.dec()
    m.generations.labels(outcome=outcome).inc()
    m.endings.labels(outcome=outcome, reason=reason or "none").inc()
    if ttft_s is not None:
        m.ttft.observe(max(ttft_s, 0.0))
    m.duration.observe(max(duration_s, 0.0))


def text_deltas_relayed(n: int) -> None:
    """The producer relayed `n` more text deltas from the upstream (`sluice_tokens_relayed_total`)."""
    if n > 0:
        _m().text_deltas_relayed.inc(n)


def tokens_used(provider: str, usage: Mapping[str, object]) -> None:
    """A generation ended with this `usage` (its terminal event's): count each kind reported."""
    m = _m()
    for kind in TOKEN_KINDS:
        value = usage.get(kind)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            m.tokens.labels(provider=provider, kind=kind).inc(value)


def subscriber_attached() -> None:
    """A client attached to a generation's event stream."""
    _m().active_subscribers.inc()


def subscriber_detached() -> None:
    """A client left a generation's event stream."""
    _m().active_subscribers.dec()


def upstream_error(error_type: str) -> None:
    """An upstream provider failed with `error_type` (the contract's error types)."""
    _m().upstream_errors.labels(type=error_type).inc()


def upstream_retry(provider: str) -> None:
    """A provider call is retried after a transient failure (before anything was streamed)."""
    _m().upstream_retries.labels(provider=provider).inc()


def request_rejected(status: int) -> None:
    """A request was refused before its stream started (400, 413, 429, 503, ...)."""
    _m().rejected.labels(status=str(status)).inc()


def budget_rejected() -> None:
    """A request was refused because its principal's token budget was spent."""
    _m().budget_rejections.inc()


def fast_path_fallback(what: str) -> None:
    """Count one use of the slow path where a library's internals were not as expected."""
    _m().fallbacks.labels(what=what).inc()


def mirror_dropped(reason: str) -> None:
    """The Redis writer gave up a generation's mirror (`outage`: past its bound; `failed`)."""
    _m().mirror_dropped.labels(reason=reason).inc()


def tokens_charged(n: int) -> None:
    """A generation under a budget ended and was charged `n` tokens."""
    if n > 0:
        _m().tokens_charged.inc(n)


def render() -> tuple[bytes, str]:
    """The body and content type for `GET /metrics`, merged over every worker."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
    )

    _m()  # a worker that has served nothing yet still exports its series
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's live gauges (gunicorn's `child_exit` hook); counters stay."""
    path = multiprocess_dir()
    if path is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
