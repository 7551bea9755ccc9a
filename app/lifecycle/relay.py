"""Text from the provider to `text` (and `json`) events: chunking, coalescing, partial JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import gevent

from app.errors import UpstreamError
from app.lifecycle.shaping import Chunker, parse_partial_json
from app.observability import metrics


class TextRelay:
    """Cuts deltas at the requested boundary, merges those within the coalesce window, and in
    JSON mode follows each `text` with the value parsed so far."""

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], object],
        *,
        chunking: str = "token",
        coalesce_ms: float = 0.0,
        json_mode: bool = False,
        on_first: Callable[[], None] | None = None,
    ) -> None:
        self._emit = emit
        self._chunker = Chunker(chunking)
        self._window = coalesce_ms / 1000.0
        self._json_mode = json_mode
        self._on_first = on_first
        self.parts: list[str] = []
        self._pending = ""
        self._flusher: gevent.Greenlet | None = None
        self._json_last: Any = None

    @property
    def answer(self) -> str:
        """Everything relayed (or held for relay) so far."""
        return "".join(self.parts)

    def push(self, delta: str) -> None:
        """A text delta from the provider."""
        self._out(self._chunker.push(delta))

    def flush(self) -> None:
        """End of an upstream round: send whatever is held back."""
        self._out(self._chunker.flush())
        self._flush_pending()

    def stop(self) -> None:
        """The generation ended: drop the coalescing timer."""
        if self._flusher is not None and self._flusher is not gevent.getcurrent():
            self._flusher.kill(block=False)
        self._flusher = None

    def _out(self, text: str) -> None:
        if not text:
            return
        if not self.parts and self._on_first is not None:
            self._on_first()
        self.parts.append(text)
        if self._window <= 0:
            self._send(text)
            return
        self._pending += text
        if self._flusher is None:
            self._flusher = gevent.spawn_later(self._window, self._flush_pending)

    def _flush_pending(self) -> None:
        self.stop()
        text, self._pending = self._pending, ""
        if text:
            self._send(text)

    def _send(self, text: str) -> None:
        self._emit({"type": "text", "content": text})
        metrics.tokens_relayed(1)
        if self._json_mode:
            # Re-parsing the whole answer each time is O(n^2), but n is bounded by max_tokens.
            value = parse_partial_json(self.answer)
            if value is not None and value != self._json_last:
                self._json_last = value
                self._emit({"type": "json", "value": value, "complete": False})

    def finish_json(self) -> None:
        """Validate the whole answer as JSON and send the final, complete value."""
        raw = self.answer.strip()
        if raw.startswith("```"):
            raw = raw.strip("`").removeprefix("json").strip()
        try:
            value = json.loads(raw)
        except ValueError:
            raise UpstreamError("upstream", "The model's answer is not valid JSON", retryable=True) from None
        self._emit({"type": "json", "value": value, "complete": True})
