"""OpenTelemetry traces, optional: one span per generation, children per upstream call and tool.

Off unless the standard `OTEL_*` variables ask for traces (an OTLP endpoint, or
`OTEL_TRACES_EXPORTER`) and the `otel` extra is installed. When off, nothing of OpenTelemetry is
imported and every hook is a no-op method of `NO_TRACE`, a `NullTrace` (a few calls per
generation, none per token). `Trace` is the interface a generation and its producer call;
`GenerationTrace` is the real one.

    POST /stream (traceparent: 00-<trace>-<parent>-01)
      └─ chat <model>                 one per generation: gen_ai.* request, usage, finish reasons,
          ├─ upstream <provider>      time to first chunk; error.type when it failed
          │   └─ anthropic.messages.create   the SDK's own span per attempt (it is current here)
          ├─ execute_tool calculate   one per upstream call (a tool round or a recovery makes more)
          └─ upstream <provider>      and one per tool run

Attribute names follow the OpenTelemetry GenAI semantic conventions (status "development";
the names here are those of semantic-conventions-genai v0.1.0: `gen_ai.usage.cache_write.*`,
not the older `cache_creation`). Prompts and answers are never recorded (the Anthropic SDK's
spans neither: see `app.providers.anthropic.telemetry_option`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

log = logging.getLogger("sluice.tracing")

# Sluice's stop reasons are Anthropic's words; the conventions take the provider's own values,
# so they pass through unchanged.
_TRACER_NAME = "sluice"


def wanted(env: Mapping[str, str]) -> bool:
    """True when the environment asks for traces (standard OTEL_* variables)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(
        exporter or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


class Trace(Protocol):
    """The hooks a generation (and its producer) calls: `NullTrace` or `GenerationTrace`."""

    def first_chunk(self) -> None:
        """The first text, reasoning or tool call of the generation arrived."""

    def upstream_start(self, provider: str, model: str) -> None:
        """An upstream call begins (one per round); its span is current until `upstream_end`,
        which the same greenlet calls."""

    def upstream_end(self, error: BaseException | None) -> None:
        """That upstream call ended: closed, failed, cancelled or timed out."""

    def tool(self, name: str, call_id: str) -> AbstractContextManager[None]:
        """Around one tool run."""
        ...

    def end(self, state: str, stop_reason: str | None, usage: Mapping[str, Any], error_type: str | None) -> None:
        """The generation ended (once)."""


class NullTrace:
    """Every hook of `Trace`, doing nothing (tracing off)."""

    def first_chunk(self) -> None:
        pass

    def upstream_start(self, provider: str, model: str) -> None:
        pass

    def upstream_end(self, error: BaseException | None) -> None:
        pass

    @contextmanager
    def tool(self, name: str, call_id: str) -> Iterator[None]:
        yield

    def end(self, state: str, stop_reason: str | None, usage: Mapping[str, Any], error_type: str | None) -> None:
        pass


NO_TRACE: Trace = NullTrace()


class GenerationTrace:
    """The span of one generation and its children (a `Trace`)."""

    def __init__(self, tracer: Any, parent: Any, *, provider: str, model: str, spec: Any) -> None:
        from opentelemetry import context, trace

        self._trace = trace
        self._otel_context = context
        self._tracer = tracer
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.request.max_tokens": spec.max_tokens,
            "gen_ai.request.stream": True,
            "gen_ai.output.type": "json" if spec.response_format == "json" else "text",
        }
        if spec.temperature is not None:
            attributes["gen_ai.request.temperature"] = spec.temperature
        reasoning = getattr(spec, "reasoning", "off")
        if reasoning and reasoning != "off":
            attributes["gen_ai.request.reasoning.level"] = reasoning
        if spec.stream_id:
            attributes["sluice.stream_id"] = spec.stream_id
        self.span = tracer.start_span(
            f"chat {model}", context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
        )
        self._context = trace.set_span_in_context(self.span)
        self._t0 = _now()
        self._ended = False
        self._upstream: Any = None
        self._token: Any = None

    def first_chunk(self) -> None:
        if not self._ended:
            self.span.set_attribute("gen_ai.response.time_to_first_chunk", _now() - self._t0)

    def upstream_start(self, provider: str, model: str) -> None:
        self._upstream = self._tracer.start_span(
            f"upstream {provider}",
            context=self._context,
            kind=self._trace.SpanKind.CLIENT,
            attributes={"gen_ai.provider.name": provider, "gen_ai.request.model": model},
        )
        # Current in the producer's greenlet until `upstream_end` (called there too): an SDK
        # that traces its own calls (Anthropic's) makes its span of each attempt a child of it.
        self._token = self._otel_context.attach(self._trace.set_span_in_context(self._upstream, self._context))

    def upstream_end(self, error: BaseException | None) -> None:
        span, self._upstream = self._upstream, None
        token, self._token = self._token, None
        if token is not None:
            self._otel_context.detach(token)
        if span is None:
            return
        if error is not None:  # a cancel (GreenletExit) or a timeout ends it too
            span.set_attribute("error.type", getattr(error, "type", None) or type(error).__name__)
            span.set_status(self._trace.StatusCode.ERROR)
        span.end()

    @contextmanager
    def tool(self, name: str, call_id: str) -> Iterator[None]:
        span = self._tracer.start_span(
            f"execute_tool {name}",
            context=self._context,
            kind=self._trace.SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": call_id,
                "gen_ai.tool.type": "function",
            },
        )
        token = self._otel_context.attach(self._trace.set_span_in_context(span, self._context))
        try:
            yield
        finally:
            self._otel_context.detach(token)
            span.end()

    def end(self, state: str, stop_reason: str | None, usage: Mapping[str, Any], error_type: str | None) -> None:
        if self._ended:
            return
        self._ended = True
        span = self.span
        names = {
            "input_tokens": "gen_ai.usage.input_tokens",
            "output_tokens": "gen_ai.usage.output_tokens",
            "cache_read_input_tokens": "gen_ai.usage.cache_read.input_tokens",
            "cache_creation_input_tokens": "gen_ai.usage.cache_write.input_tokens",
            "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
        }
        for key, attribute in names.items():
            value = usage.get(key)
            if isinstance(value, int):
                span.set_attribute(attribute, value)
        if usage.get("estimated"):
            span.set_attribute("sluice.usage.estimated", True)
        span.set_attribute("sluice.outcome", state)
        if stop_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [stop_reason])
        if state == "error":
            span.set_attribute("error.type", error_type or "internal")
            span.set_status(self._trace.StatusCode.ERROR, error_type or "internal")
        elif state == "cancelled":
            span.set_attribute("sluice.cancel_reason", error_type or "user")
        span.end()


class Tracing:
    """Per worker: builds the tracer provider on first use (after gunicorn forks)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._tracer: Any = None
        self._propagate: Any = None

    def _setup(self) -> None:
        # Imported only now: a worker with tracing off never loads OpenTelemetry.
        from opentelemetry import propagate, trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = trace.get_tracer_provider()
        if not hasattr(provider, "add_span_processor"):
            # Nobody configured the SDK (no opentelemetry-instrument): do it from OTEL_* here.
            resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "sluice"})
            sdk_provider = TracerProvider(resource=resource)
            sdk_provider.add_span_processor(BatchSpanProcessor(_exporter()))
            trace.set_tracer_provider(sdk_provider)
            provider = sdk_provider
        self._tracer = provider.get_tracer(_TRACER_NAME)
        self._propagate = propagate

    def generation(self, headers: Mapping[str, str] | None, *, provider: str, model: str, spec: Any) -> Trace:
        """A trace for a new generation, continuing the caller's `traceparent` if it sent one."""
        if not self.enabled:
            return NO_TRACE
        try:
            if self._tracer is None:
                self._setup()
            # Lower-cased: the propagator looks up `traceparent` in a plain dict.
            parent = self._propagate.extract({k.lower(): v for k, v in (headers or {}).items()})
            return GenerationTrace(self._tracer, parent, provider=provider, model=model, spec=spec)
        except Exception:
            # Telemetry must never fail a request.
            log.exception("tracing could not start a span; continuing without it")
            return NO_TRACE


def _exporter() -> Any:
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT itself.
    return OTLPSpanExporter()


def _now() -> float:
    return time.monotonic()
