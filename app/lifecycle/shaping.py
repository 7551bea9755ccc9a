"""Text shaping between the provider and the event log: chunking, coalescing and partial JSON.

Pure functions and a small buffer; the generation decides when to flush.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f][\"')\]\u201d\u2019]*\s+|\n")


class Chunker:
    """Re-cut text deltas at word or sentence boundaries (`token` passes them through)."""

    def __init__(self, mode: str = "token") -> None:
        self.mode = mode
        self.pending = ""

    def push(self, text: str) -> str:
        """Add a delta; return the part that is ready to send ("" if none)."""
        self.pending += text
        if self.mode == "token":
            ready, self.pending = self.pending, ""
            return ready
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


def _closers(text: str) -> tuple[list[str], bool, bool]:
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    return stack, in_string, escaped


def parse_partial_json(text: str) -> Any:
    """Best-effort value of an incomplete JSON document (None when nothing can be read yet).

    Closes an open string and open brackets; drops a dangling key, colon or comma.
    """
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    candidate = text
    for _ in range(6):
        stack, in_string, escaped = _closers(candidate)
        attempt = candidate[:-1] if escaped else candidate
        if in_string:
            attempt += '"'
        try:
            return json.loads(attempt + "".join(reversed(stack)))
        except ValueError:
            pass
        # Cut back to before the last separator and try again: `{"a": 1, "b` -> `{"a": 1`.
        cut = max(candidate.rfind(","), candidate.rfind(":"))
        opener = max(candidate.rfind("{"), candidate.rfind("["))
        if cut <= 0 and opener < 0:
            return None
        if opener > cut:
            candidate = candidate[: opener + 1]
        else:
            candidate = candidate[:cut].rstrip()
            if candidate.endswith(":"):
                continue
            # `{"a": 1, "b": ` cut at ':' leaves a key: drop it too.
            stack, in_string, _ = _closers(candidate)
            if candidate.endswith('"') and not in_string:
                key_start = candidate.rfind('"', 0, len(candidate) - 1)
                before = candidate[:key_start].rstrip()
                if before.endswith((",", "{")):
                    candidate = before.rstrip(",")
    return None
