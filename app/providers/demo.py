"""The built-in `demo` model: no network, no key. It streams a plausible answer at a steady pace.

It exists so that `run` works on a fresh machine and a page can be tried before any key is set.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Generator

from app.errors import UpstreamError
from app.providers.base import (
    Finish,
    Message,
    Opaque,
    OpaqueBlock,
    ProviderEvent,
    ProviderRequest,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallStart,
    Usage,
)
from app.sse import dumps

ANSWER = (
    "Sluice is streaming this answer to you token by token over Server-Sent Events. "
    "Your question was: \u201c{prompt}\u201d. "
    "This is the built-in demo model, so nothing left this machine and nothing was billed. "
    "Each fragment you see was sent the moment it was produced: no buffering in the server, "
    "none in nginx. Press Cancel at any time and the generation stops at once. "
    "Set ANTHROPIC_API_KEY or OPENAI_API_KEY to talk to a real model."
)
# What the demo "thinks" with reasoning on: more sentences at a higher effort.
THOUGHTS = (
    "The question is: \u201c{prompt}\u201d. ",
    "I am the demo model, so nothing needs working out, but a real model would reason here. ",
    "Its thinking streams as reasoning events, apart from the answer. ",
    "Now to write the answer. ",
)
TOOL_THOUGHT = "This needs the {tool} tool; I will call it and answer with its result. "
RESULT_THOUGHT = "The tool has answered, so I can give its result. "
_EFFORT_SENTENCES = {"low": 1, "medium": 2, "high": 4}
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


def _signature(thinking: str) -> str:
    return hashlib.sha256(thinking.encode()).hexdigest()[:32]


def _check_thinking_returned(messages: tuple[Message, ...]) -> None:
    """Like Anthropic's API, refuse a tool round whose thinking block did not come back intact."""
    for msg in messages:
        if msg.role != "assistant" or not msg.tool_calls:
            continue
        blocks = [b.data for b in msg.opaque if b.provider == "demo"]
        if not any(b.get("signature") == _signature(str(b.get("thinking", ""))) for b in blocks):
            raise UpstreamError(
                "invalid_request",
                "Demo: the thinking block of a tool round must be passed back unchanged",
                status=400,
                retryable=False,
            )


class DemoProvider:
    """A fake model with real pacing, usage, stop reasons and (when asked) reasoning."""

    name = "demo"

    def __init__(self, tokens_per_second: float = 40.0) -> None:
        self.delay = 1.0 / tokens_per_second

    def stream(self, request: ProviderRequest) -> Generator[ProviderEvent, None, None]:
        """Yield the demo answer. Offered tools, it calls `calculate` for arithmetic in the prompt
        and `get_time` when the prompt asks for the time, then answers with their results.
        With reasoning on, it thinks aloud first (reasoning deltas, and in a tool round a signed
        thinking block that must come back in the next request)."""
        thinking = request.reasoning != "off"
        if thinking:
            _check_thinking_returned(request.messages)
        last = request.messages[-1]
        input_tokens = sum(_words(m.text) for m in request.messages) + _words(request.system or "")
        yield Usage(input_tokens=input_tokens)
        prompt = " ".join(last.text.split())
        call = None if last.tool_results else _tool_call(last.text, {t.name for t in request.tools})
        thought = ""
        if thinking and call is not None:
            thought = TOOL_THOUGHT.format(tool=call.name)
        elif thinking and last.tool_results:
            thought = RESULT_THOUGHT
        elif thinking:
            count = _EFFORT_SENTENCES.get(request.reasoning, 2)
            thought = "".join(THOUGHTS[:count - 1] + THOUGHTS[-1:]).format(prompt=_clip(prompt, 80))
        reasoned = 0
        for token in _TOKENS.findall(thought):
            time.sleep(self.delay)  # gevent-patched: yields to other greenlets
            reasoned += 1
            yield ReasoningDelta(token)
        if call is not None:
            if thinking:
                yield Opaque(OpaqueBlock("demo", {"type": "thinking", "thinking": thought,
                                                  "signature": _signature(thought)}))
            yield ToolCallStart(call.id, call.name)
            yield call
            yield self._usage(reasoned + 1, reasoned, thinking)
            yield Finish("tool_use")
            return
        if last.tool_results:
            text = "The tool answered: " + "; ".join(r.content for r in last.tool_results) + "."
        else:
            text = ANSWER.format(prompt=_clip(prompt, 200))
        if request.json_mode:
            text = dumps({"answer": text})
        sent = 0
        for token in _TOKENS.findall(text):
            if sent >= request.max_tokens:
                yield self._usage(reasoned + sent, reasoned, thinking)
                yield Finish("max_tokens")
                return
            time.sleep(self.delay)
            sent += 1
            yield TextDelta(token)
        yield self._usage(reasoned + sent, reasoned, thinking)
        yield Finish("end_turn")

    @staticmethod
    def _usage(output: int, reasoned: int, thinking: bool) -> Usage:
        return Usage(output_tokens=output, reasoning_tokens=reasoned if thinking else None)


def _clip(text: str, limit: int) -> str:
    return text[:limit] + ("\u2026" if len(text) > limit else "")
