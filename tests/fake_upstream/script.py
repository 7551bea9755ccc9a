"""What a fake answer does, read from a `[fake key=value ...]` directive in the prompt.

The directive lives in the prompt so that a test in another process (Sluice runs under
gunicorn) can choose the behaviour of each upstream call. Both wire formats share this.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

_DIRECTIVE = re.compile(r"\[fake\b([^\]]*)\]")

# OpenAI finish reasons -> Anthropic stop reasons (a directive may use either vocabulary).
_STOP_ALIASES = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


@dataclass
class Script:
    """One scripted answer (see the package docstring for every key)."""

    tokens: int = 12
    pace: float = 0.0
    first_delay: float = 0.0
    status: int | None = None
    error_after: int | None = None
    error_type: str | None = None
    drop_after: int | None = None
    drop_mode: str = "fin"
    stall_after: int | None = None
    ping_every: float | None = None
    tool: str | None = None
    args: dict[str, Any] | None = None
    json: bool = False
    stop: str | None = None
    say: str | None = None
    # Failing only the first N requests with this directive (status / hangup), then answering.
    times: int | None = None
    retry_after: str | None = None
    retry_after_ms: str | None = None
    hangup: bool = False
    # Anthropic: 400 to a request ending with an assistant turn ("reject"), as current models do.
    prefill: str = "accept"
    # Reasoning pieces: Anthropic (when thinking is on) 3 unless given; OpenAI only when given.
    think: int | None = None
    redacted: bool = False
    cache_read: int = 0
    cache_write: int = 0
    # OpenAI wires (Chat Completions, Responses): how reasoning travels, parallel calls, failure.
    think_as: str = "reasoning_content"
    calls: int = 1
    error_as: str = "error"
    hang: int | None = None
    pad: int = 0
    parts: int | None = None

    @classmethod
    def parse(cls, text: str) -> Script:
        """Build a script from the last `[fake ...]` directive in `text` (defaults if none)."""
        found = _DIRECTIVE.findall(text or "")
        script = cls()
        if not found:
            return script
        for item in found[-1].split():
            key, _, value = item.partition("=")
            if key in ("tokens", "status", "error_after", "drop_after", "stall_after", "calls", "hang", "pad", "parts"):
                setattr(script, key, int(value))
            elif key in ("pace", "first_delay", "ping_every"):
                setattr(script, key, float(value))
            elif key in ("tool", "error_type", "think_as", "error_as"):
                setattr(script, key, value)
            elif key == "drop":
                script.drop_mode = value  # "fin" (default) or "rst"
            elif key == "args":
                script.args = json.loads(value)
            elif key == "json":
                script.json = value not in ("0", "false", "")
            elif key == "say":
                script.say = unquote(value)  # percent-encoded: a directive has no spaces
            elif key == "stop":
                script.stop = _STOP_ALIASES.get(value, value)
            elif key in ("times", "think", "cache_read", "cache_write"):
                setattr(script, key, int(value))
            elif key == "cached":
                script.cache_read = int(value)  # the OpenAI name of cache_read (both are accepted)
            elif key in ("retry_after", "retry_after_ms", "prefill"):
                setattr(script, key, value)
            elif key in ("hangup", "redacted"):
                setattr(script, key, value not in ("0", "false", ""))
            else:
                raise ValueError(f"unknown fake directive key: {key!r}")
        return script


@dataclass
class Plan:
    """What to send: text pieces or one tool call, and the stop reason."""

    pieces: list[str]
    stop_reason: str
    tool_name: str | None = None
    tool_args: dict[str, Any] | None = None
    reasoning: list[str] = field(default_factory=list)
    tool_count: int = 1
    think_as: str = "reasoning_content"
    cached: int = 0

    @property
    def is_tool_call(self) -> bool:
        return self.tool_name is not None


def answer_tokens(n: int) -> list[str]:
    """The deterministic answer: "t0 ", "t1 ", ..."""
    return [f"t{i} " for i in range(n)]


def plan_answer(script: Script, tool_result: str | None, max_tokens: int | None) -> Plan:
    """Decide the answer for one request, given the latest tool result (None if none yet)."""
    reasoning = [f"r{i} " for i in range(script.think or 0)]  # OpenAI's; Anthropic's are its wire's
    if script.tool and tool_result is None:
        return Plan(
            [], "tool_use", tool_name=script.tool, tool_args=script.args or {}, reasoning=reasoning,
            tool_count=script.calls, think_as=script.think_as, cached=script.cache_read,
        )
    if script.json:
        words = " ".join(f"t{i}" for i in range(script.tokens))
        text = json.dumps({"answer": words, "n": script.tokens})
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
    elif script.say is not None and script.parts:
        n = min(script.parts, len(script.say)) or 1
        bounds = [len(script.say) * k // n for k in range(n + 1)]
        pieces = [script.say[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    elif script.say is not None:
        pieces = [script.say[i : i + 5] for i in range(0, len(script.say), 5)]
    else:
        pieces = answer_tokens(script.tokens)
        if script.pad:
            pieces = [f"{p[:-1]}{'.' * script.pad} " for p in pieces]
    if tool_result is not None:
        pieces.insert(0, f"result: {tool_result} ")
    stop = script.stop or "end_turn"
    if max_tokens is not None and len(pieces) > max_tokens:
        pieces = pieces[:max_tokens]
        stop = "max_tokens"
    return Plan(pieces, stop, reasoning=reasoning, think_as=script.think_as, cached=script.cache_read)


def split_json(args: dict[str, Any], size: int = 5) -> list[str]:
    """A tool call's arguments as the partial JSON pieces a model streams."""
    text = json.dumps(args, separators=(",", ":"))
    return [text[i : i + size] for i in range(0, len(text), size)] or ["{}"]


def count_words(*texts: str) -> int:
    """Input-token stand-in: whitespace-separated words."""
    return sum(len(t.split()) for t in texts if t)
