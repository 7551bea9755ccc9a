"""The built-in `demo` model: no network, no key. It streams a plausible answer at a steady pace.

It exists so that `run` works on a fresh machine and a page can be tried before any key is set.
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator

from app.config import DEMO_MODEL
from app.providers.base import Finish, ProviderEvent, ProviderRequest, TextDelta, ToolCall, Usage
from app.sse import dumps

ANSWER = (
    "Sluice is streaming this answer to you token by token over Server-Sent Events. "
    "Your question was: \u201c{prompt}\u201d. "
    "This is the built-in demo model, so nothing left this machine and nothing was billed. "
    "Each fragment you see was sent the moment it was produced: no buffering in the server, "
    "none in nginx. Press Cancel at any time and the generation stops at once. "
    "Set ANTHROPIC_API_KEY or OPENAI_API_KEY to talk to a real model."
)
_TOKENS = re.compile(r"\S+\s*|\s+")
_TIME = re.compile(r"\b(time|clock|date)\b", re.IGNORECASE)
_TIMEZONE = re.compile(r"\b[A-Z][a-z]+/[A-Z][A-Za-z_]+\b")
_ARITHMETIC = re.compile(r"[-+*/%()\d.\s]*\d\s*[-+*/%]+\s*[-+*/%()\d.\s]*\d[-+*/%()\d.\s]*")


def _words(text: str) -> int:
    return len(text.split())


def _tool_call(prompt: str, tools: set[str]) -> ToolCall | None:
    match = _ARITHMETIC.search(prompt)
    if "calculate" in tools and match:
        return ToolCall("toolu_demo_calc", "calculate", {"expression": match.group().strip()})
    zone = _TIMEZONE.search(prompt)
    if "get_time" in tools and _TIME.search(prompt):
        return ToolCall("toolu_demo_time", "get_time", {"timezone": zone.group() if zone else "UTC"})
    return None


class DemoProvider:
    """A fake model with real pacing, usage and stop reasons."""

    name = "demo"
    default_model = DEMO_MODEL

    def __init__(self, tokens_per_second: float = 40.0) -> None:
        self.delay = 1.0 / tokens_per_second

    def stream(self, request: ProviderRequest) -> Generator[ProviderEvent, None, None]:
        """Yield the demo answer. Offered tools, it calls `calculate` for arithmetic in the prompt
        and `get_time` when the prompt asks for the time, then answers with their results."""
        last = request.messages[-1]
        input_tokens = sum(_words(m.text) for m in request.messages) + _words(request.system or "")
        yield Usage(input_tokens=input_tokens)
        call = None if last.tool_results else _tool_call(last.text, {t.name for t in request.tools})
        if call is not None:
            yield call
            yield Usage(output_tokens=1)
            yield Finish("tool_use")
            return
        if last.tool_results:
            text = "The tool answered: " + "; ".join(r.content for r in last.tool_results) + "."
        else:
            prompt = " ".join(last.text.split())
            text = ANSWER.format(prompt=prompt[:200] + ("\u2026" if len(prompt) > 200 else ""))
        if request.json_mode:
            text = dumps({"answer": text})
        sent = 0
        for token in _TOKENS.findall(text):
            if sent >= request.max_tokens:
                yield Usage(output_tokens=sent)
                yield Finish("max_tokens")
                return
            time.sleep(self.delay)  # gevent-patched: yields to other greenlets
            sent += 1
            yield TextDelta(token)
        yield Usage(output_tokens=sent)
        yield Finish("end_turn")
