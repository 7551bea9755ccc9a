"""Inline `<think>` tags opening a chat answer (SLUICE_OPENAI_THINK_TAGS=1), however split."""

from __future__ import annotations

import pytest

from app.providers._think_tags import ThinkTags
from app.providers.base import ReasoningDelta, TextDelta


def split(deltas: list[str]) -> tuple[str, str]:
    """(reasoning, text) out of these content deltas."""
    tags = ThinkTags()
    events = [e for d in deltas for e in tags.feed(d)] + list(tags.flush())
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert all(e.text for e in events), "no empty deltas"
    return reasoning, text


@pytest.mark.parametrize(
    ("deltas", "reasoning", "text"),
    [
        (["<think>a b</think>\n\nanswer"], "a b", "answer"),
        (["<thi", "nk>a", " b</th", "ink>", "\n", "\nanswer", " more"], "a b", "answer more"),
        (["\n <think>", "x", "</think>", "y"], "x", "y"),
        (["<", "t", "h", "i", "n", "k", ">", "r", "<", "/", "t", "h", "i", "n", "k", ">", "t"], "r", "t"),
        (["plain answer with <think>inside</think>"], "", "plain answer with <think>inside</think>"),
        (["<b>bold</b>"], "", "<b>bold</b>"),
        (["<th"], "", "<th"),  # ended before it could be a tag: text
        (["<think>never closed"], "never closed", ""),
        (["<think>a </thin"], "a </thin", ""),  # a partial close tag at the end is reasoning
        (["<think>a < b</think>ok"], "a < b", "ok"),
        (["<think></think>", "ok"], "", "ok"),
        (["a", "<think>b</think>"], "", "a<think>b</think>"),
    ],
)
def test_split(deltas: list[str], reasoning: str, text: str) -> None:
    assert split(deltas) == (reasoning, text)


def test_text_after_the_thinking_streams_delta_by_delta() -> None:
    tags = ThinkTags()
    out = [list(tags.feed(d)) for d in ["<think>r</think>", "one ", "two "]]
    assert out == [[ReasoningDelta("r")], [TextDelta("one ")], [TextDelta("two ")]]
