"""Text deltas from the provider to `text` (and `json`) events: re-cutting at word or sentence
boundaries (`Chunker`), coalescing within a window, and when to send a partial JSON value."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import gevent
import jiter

from app.errors import UpstreamError
from app.lifecycle.partial_json import extends, parse_partial_json
from app.observability import greenlets

# JSON mode: a partial value is the whole value so far, so sending one per fragment is
# quadratic (a 4 KB answer became 950 KB of events). The first is sent as soon as the answer
# reads as a value with something in it, the next once the answer has grown by about a quarter
# (JSON_GROWTH, 30%) since the last one sent: a geometric series, so the partial values
# together stay under 1.3/0.3 = 4.3x the answer (~5x with the final one), and parsing is
# O(n log n). A parse that gives nothing new (inside a key or a number) is tried again after
# JSON_RETRY of growth, not at every fragment: a long key would make that quadratic too.
JSON_GROWTH = 0.3
JSON_RETRY = 1 / 16

_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f][\"')\]\u201d\u2019]*\s+|\n")


def _is_whole(text: str) -> bool:
    """True when `text` is already a whole JSON object or array."""
    text = text.rstrip()
    if not text.endswith(("}", "]")):
        return False
    try:
        jiter.from_json(text.encode(), cache_mode="keys")
    except ValueError:
        return False
    return True


class Chunker:
    """Re-cut text deltas at word or sentence boundaries (`token` passes them through)."""

    __slots__ = ("mode", "pending")

    def __init__(self, mode: str = "token") -> None:
        self.mode = mode
        self.pending = ""

    def push(self, text: str) -> str:
        """Add a delta; return the part that is ready to send ("" if none)."""
        if self.mode == "token":
            return text  # nothing is ever held back
        self.pending += text
        if self.mode == "word":
            cut = max(self.pending.rfind(" "), self.pending.rfind("\n"), self.pending.rfind("\t"))
            cut = cut + 1 if cut >= 0 else 0
        else:
            cut = 0
            for match in _SENTENCE_END.finditer(self.pending):
                cut = match.end()
        ready, self.pending = self.pending[:cut], self.pending[cut:]
        return ready

    def flush(self) -> str:
        """Whatever is held back, at the end of a round."""
        ready, self.pending = self.pending, ""
        return ready


class TextRelay:
    """Cuts deltas at the requested boundary, merges those within the coalesce window, and in
    JSON mode follows some `text` events with the value parsed so far."""

    __slots__ = (
        "_emit", "_emit_text", "_chunker", "_window", "_json_mode", "_on_first", "_keep", "parts", "deltas", "_size",
        "_pending", "_flusher", "_json_last", "_json_next",
    )

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], object],
        emit_text: Callable[[str], object],
        *,
        chunking: str = "token",
        coalesce_ms: float = 0.0,
        json_mode: bool = False,
        keep_answer: bool = False,
        on_first: Callable[[], None] | None = None,
    ) -> None:
        self._emit = emit
        self._emit_text = emit_text
        self._chunker = Chunker(chunking)
        self._window = coalesce_ms / 1000.0
        self._json_mode = json_mode
        self._on_first = on_first
        # The answer's text is kept only where it is used (JSON mode, SLUICE_LOG_CONTENT): the
        # journal already holds it once, as the bytes of its `text` events.
        self._keep = keep_answer or json_mode
        self.parts: list[str] = []
        self.deltas = 0  # text deltas from the provider (sluice_tokens_relayed_total counts these)
        self._size = 0  # characters in `parts`
        self._pending: list[str] = []
        self._flusher: gevent.Greenlet | None = None
        self._json_last: Any = None
        self._json_next = 1

    @property
    def answer(self) -> str:
        """Everything relayed (or held for relay) so far ("" unless kept: see `keep_answer`)."""
        return "".join(self.parts)

    def push(self, delta: str) -> None:
        """A text delta from the provider."""
        self.deltas += 1
        self._out(self._chunker.push(delta))

    def flush(self) -> None:
        """End of an upstream round, or of the generation: send whatever is held back."""
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
        if not self._size and self._on_first is not None:
            self._on_first()
        if self._keep:
            self.parts.append(text)
        self._size += len(text)
        if self._window <= 0:
            self._send(text)
            return
        self._pending.append(text)
        if self._flusher is None:
            self._flusher = greenlets.spawn_later(self._window, self._flush_pending)

    def _flush_pending(self) -> None:
        self.stop()
        if self._pending:
            text, self._pending = "".join(self._pending), []
            self._send(text)

    def _send(self, text: str) -> None:
        self._emit_text(text)
        if self._json_mode and self._size >= self._json_next:
            self._send_partial()

    def _send_partial(self) -> None:
        size = self._size
        value = parse_partial_json(self.answer)
        last = self._json_last
        if (value is None or value == "" or value == [] or value == {} or value == last
                or (last is not None and not extends(last, value))):
            # Nothing new yet (or a value that lost something a client already has).
            self._json_next = size + max(1, int(size * JSON_RETRY))
            return
        if _is_whole(self.answer):
            return  # the final value follows at once: a partial equal to it would be a waste
        self._json_last = value
        self._json_next = size + max(1, int(size * JSON_GROWTH))
        self._emit({"type": "json", "value": value, "complete": False})

    def finish_json(self) -> None:
        """Validate the whole answer as JSON and send the final, complete value."""
        raw = self.answer.strip()
        if raw.startswith("```"):
            raw = raw.strip("`").removeprefix("json").strip()
        try:
            value = jiter.from_json(raw.encode(), cache_mode="keys")
        except ValueError:
            raise UpstreamError("upstream", "The model's answer is not valid JSON", retryable=True) from None
        self._emit({"type": "json", "value": value, "complete": True})
