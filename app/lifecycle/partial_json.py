"""Reading an incomplete JSON document, and telling whether a value only grew.

Pure functions, for JSON mode (`text_relay.TextRelay` decides when to send a partial value).
"""

from __future__ import annotations

import re
from typing import Any

import jiter

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
