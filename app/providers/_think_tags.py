"""Inline `<think>...</think>` at the start of a chat answer, split off as reasoning.

Some OpenAI-compatible servers (a model served without a reasoning parser) put the model's
thinking in `content`, wrapped in `<think>` tags, before the answer. Only a `<think>` that
opens the content (after whitespace) counts: a tag later in an answer is the answer's text.
Tags may be split across deltas, so a fragment that could still become a tag is held back
until the next delta decides it (at most a few characters).
"""

from __future__ import annotations

from collections.abc import Iterator

from app.providers.base import ReasoningDelta, TextDelta

OPEN = "<think>"
CLOSE = "</think>"


class ThinkTags:
    """Feed content deltas in order; get TextDelta / ReasoningDelta back. `flush()` at the end."""

    __slots__ = ("_state", "_held")

    def __init__(self) -> None:
        self._state = "start"  # start -> (think -> after ->) text
        self._held = ""

    def feed(self, content: str) -> Iterator[TextDelta | ReasoningDelta]:
        if self._state == "text":
            yield TextDelta(content)
            return
        buf = self._held + content
        self._held = ""
        if self._state == "start":
            head = buf.lstrip()
            if head.startswith(OPEN):
                self._state = "think"
                buf = head[len(OPEN) :]
            elif OPEN.startswith(head):
                self._held = buf  # "", "<", "<th"...: not decided yet
                return
            else:
                self._state = "text"
                yield TextDelta(buf)
                return
        if self._state == "think":
            end = buf.find(CLOSE)
            if end < 0:
                keep = _partial_suffix(buf, CLOSE)
                if len(buf) > keep:
                    yield ReasoningDelta(buf[: len(buf) - keep])
                self._held = buf[len(buf) - keep :]
                return
            if end:
                yield ReasoningDelta(buf[:end])
            self._state = "after"
            buf = buf[end + len(CLOSE) :]
        # "after": the blank lines models put between their thinking and the answer are dropped.
        buf = buf.lstrip()
        if buf:
            self._state = "text"
            yield TextDelta(buf)

    def flush(self) -> Iterator[TextDelta | ReasoningDelta]:
        """What is still held back when the answer ends."""
        held, self._held = self._held, ""
        if held and self._state == "start":
            yield TextDelta(held)
        elif held and self._state == "think":
            yield ReasoningDelta(held)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
