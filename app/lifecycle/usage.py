"""Token usage across a generation's upstream rounds, with honest estimates for early stops."""

from __future__ import annotations

from typing import Any

from app.providers.base import Usage

# Parts of the bill a provider may report besides input and output tokens (contract: present
# in `usage` only where reported). input_tokens already includes the two cache counts, and
# output_tokens includes reasoning_tokens.
BREAKDOWN = ("cache_read_input_tokens", "cache_creation_input_tokens", "reasoning_tokens")


class UsageMeter:
    """Totals of finished rounds, plus what the round in progress has reported so far.

    A provider reports input tokens at its first event (Anthropic) or only at the end (OpenAI),
    and output tokens only at the end. A round cut short (cancel, timeout, drop) falls back to
    estimates: about four characters a token for input, one token a text or reasoning delta for
    output, and the usage is then marked `"estimated": true`. The breakdown (cache, reasoning)
    is never estimated: it appears once some round reported a non-zero count.
    """

    __slots__ = (
        "_in_done", "_out_done", "_parts_done", "_estimated", "_in_round", "_round_in", "_round_out", "_round_parts",
        "_round_chars", "round_deltas",
    )

    def __init__(self) -> None:
        self._in_done = 0
        self._out_done = 0
        self._parts_done: dict[str, int] = {}
        self._estimated = False
        self._in_round = False  # an upstream call is open (its usage counts, reported or estimated)
        self._round_in: int | None = None
        self._round_out: int | None = None
        self._round_parts: dict[str, int] = {}
        self._round_chars = 0
        self.round_deltas = 0

    def open_round(self, prompt_chars: int) -> None:
        """An upstream call starts."""
        self._in_round = True
        self._round_in = self._round_out = None
        self._round_parts = {}
        self._round_chars = prompt_chars
        self.round_deltas = 0

    def reported(self, usage: Usage) -> None:
        """The provider said how many tokens; a None field is not said (yet)."""
        if usage.input_tokens is not None:
            self._round_in = usage.input_tokens
        if usage.output_tokens is not None:
            self._round_out = usage.output_tokens
        for name in BREAKDOWN:
            value = getattr(usage, name)
            if value is not None:
                self._round_parts[name] = value

    def _round(self) -> tuple[int, int, bool]:
        if not self._in_round:
            return 0, 0, False
        estimated = self._round_in is None or self._round_out is None
        round_in = self._round_in if self._round_in is not None else self._round_chars // 4 + 1
        round_out = self._round_out if self._round_out is not None else self.round_deltas
        return round_in, round_out, estimated

    def close_round(self, discard: bool = False) -> None:
        """The upstream call ended; `discard` for one that produced nothing billable (a 529)."""
        if not discard:
            round_in, round_out, estimated = self._round()
            self._in_done += round_in
            self._out_done += round_out
            self._estimated = self._estimated or estimated
            for name, value in self._round_parts.items():
                self._parts_done[name] = self._parts_done.get(name, 0) + value
        self._in_round = False  # an upstream call is open (its usage counts, reported or estimated)
        self._round_parts = {}

    def as_dict(self) -> dict[str, Any]:
        """`{"input_tokens", "output_tokens"}`, the reported breakdown, and `"estimated": true`
        where guessed."""
        round_in, round_out, estimated = self._round()
        usage: dict[str, Any] = {"input_tokens": self._in_done + round_in, "output_tokens": self._out_done + round_out}
        for name in BREAKDOWN:
            total = self._parts_done.get(name, 0) + self._round_parts.get(name, 0)
            # Providers report these as 0 on every answer (no cache hit, no thinking): a zero is
            # left out, so a plain answer's usage stays {input_tokens, output_tokens}.
            if total:
                usage[name] = total
        if estimated or self._estimated:
            usage["estimated"] = True
        return usage
