"""Text shaping between the provider and the journal: chunking and partial JSON.

Pure functions and a small buffer; the generation decides when to flush.
"""

from __future__ import annotations

import re
from typing import Any

import jiter

_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f][\"')\]\u201d\u2019]*\s+|\n")


class Chunker:
    """Re-cut text deltas at word or sentence boundaries (`token` passes them through)."""

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


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_TRAILING_NUMBER = re.compile(r"-?\d[\d.eE+-]*$|-$")


def _without_trailing_number(text: str) -> str:
    """`text` less a number at its very end, outside any string: `1` may yet become `1.5`."""
    if not text or text[-1] not in "0123456789.eE+-":
        return text
    outside = _STRING.sub("", text)
    if outside.count('"') % 2:
        return text  # the text ends inside a string: its digits are characters, not a number
    match = _TRAILING_NUMBER.search(outside)
    return text[: len(text) - len(match.group())] if match else text


def parse_partial_json(text: str) -> Any:
    """Best-effort value of an incomplete JSON document (None when nothing can be read yet).

    jiter's partial mode closes open strings, arrays and objects and drops a dangling key; a
    number at the very end is left out until it is complete, so the value only ever grows.
    """
    text = _without_trailing_number(text.strip())
    if not text:
        return None
    try:
        return jiter.from_json(text.encode(), partial_mode="trailing-strings", cache_mode="keys")
    except ValueError:
        return None


def extends(old: Any, new: Any) -> bool:
    """True when `new` is `old` grown: longer strings, more items or members, nothing changed."""
    if isinstance(old, str):
        return isinstance(new, str) and new.startswith(old)
    if isinstance(old, list):
        if not isinstance(new, list) or len(new) < len(old):
            return False
        last = len(old) - 1
        return all(a == b or (i == last and extends(a, b)) for i, (a, b) in enumerate(zip(old, new, strict=False)))
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and extends(v, new[k]) for k, v in old.items())
    return bool(old == new)
