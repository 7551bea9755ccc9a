"""The Anthropic SDK's internals that `app/providers/anthropic.py` relies on: the one place they are read.

- `MODELS_TO_WARN_WITH_THINKING_ENABLED` (`anthropic.resources.messages.messages`, from the
  SDK's private `anthropic._data`): the models with which budgeted thinking is deprecated, as
  the SDK ships them; `listed_for_adaptive_thinking()`. Without it, the provider's version rule
  (Claude 4.6 and later) decides alone, which misses models named outside it (a preview with no
  version number): each such decision counts in `sluice_fast_path_fallbacks_total{what="anthropic"}`.
- `anthropic._tracing.SpanEndingStream._body`: with OpenTelemetry on (a global tracer provider,
  as Sluice's tracing sets), the SDK wraps each response's body in this stream, which ends the
  call's span when the body is closed. `traced_body()` unwraps it for `app/seams/httpcore.py`,
  so that the body is still read off the socket. Without it that body is read through httpx2
  (slower, the connection not reused): counted, `what="anthropic"`.

The SDK's public API (clients, errors, `with_streaming_response`) is used by the provider
directly; this is only what the SDK does not promise to keep. `check()` once per worker
(`ProviderPool.warm`) logs which path is in use.
"""

from __future__ import annotations

import logging
from typing import Any

from app.seams import fell_back

log = logging.getLogger("sluice.seams")

FALLBACK = "anthropic"

_checked = False
_thinking_models: frozenset[str] | None = None  # None: the SDK's list is not there
_span_stream: type | None = None  # None: the SDK's span-ending stream is not where expected


def check() -> bool:
    """Whether every shape is there; looked up once per process, then remembered. Logs the path."""
    global _checked, _thinking_models, _span_stream
    if not _checked:
        _checked = True
        missing = []
        try:
            import anthropic.resources.messages.messages as sdk_messages

            models = sdk_messages.MODELS_TO_WARN_WITH_THINKING_ENABLED
            if isinstance(models, str) or not all(isinstance(m, str) for m in models):
                raise TypeError(f"not a list of model names: {models!r}")
            _thinking_models = frozenset(models)
        except (ImportError, AttributeError, TypeError) as exc:
            missing.append(f"the SDK's list of adaptive-thinking models ({type(exc).__name__}: {exc})")
        try:
            from anthropic._tracing import SpanEndingStream

            body = object()
            if SpanEndingStream(body, _Observer())._body is not body:  # type: ignore[arg-type]
                raise AttributeError("SpanEndingStream._body is not the body")
            _span_stream = SpanEndingStream
        except (ImportError, AttributeError, TypeError) as exc:
            missing.append(f"the SDK's span-ending body stream ({type(exc).__name__}: {exc})")
        if missing:
            log.warning(
                "seams: anthropic: %s not found; the slower path is used, counted in"
                ' sluice_fast_path_fallbacks_total{what="%s"}',
                " and ".join(missing), FALLBACK,
            )
        else:
            log.info(
                "seams: anthropic: the SDK's adaptive-thinking models (%d) and span-ending body stream are used",
                len(_thinking_models or ()),
            )
    return _thinking_models is not None and _span_stream is not None


def listed_for_adaptive_thinking(model: str) -> bool:
    """Whether the SDK lists `model` as one with which budgeted thinking is deprecated."""
    check()
    if _thinking_models is None:
        fell_back(FALLBACK, "the SDK's list of adaptive-thinking models is missing; the version rule decides alone")
        return False
    return model in _thinking_models


def traced_body(stream: object) -> object | None:
    """The body under the SDK's span-ending stream `stream`, or None if `stream` is not one."""
    if not _checked:
        check()
    kind = type(stream)
    if kind is _span_stream:
        body: Any = stream
        return body._body  # type: ignore[no-any-return]
    if kind.__module__.split(".")[0] == "anthropic":
        fell_back(FALLBACK, f"the SDK wrapped a body in {kind.__qualname__}, which this seam cannot unwrap")
    return None


class _Observer:
    """A stand-in for the SDK's stream observer, for `check()`'s throwaway stream."""

    def end(self, how: str, error: BaseException | None = None) -> None:
        pass
