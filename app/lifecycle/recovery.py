"""Continuing an answer after the upstream dropped mid-stream: never twice the same text, never
text lost, never the instruction in the answer.

Two ways to ask a model for the rest of a cut answer:

- prefill: the partial answer as the conversation's last (assistant) turn, which the model
  continues. Only Anthropic's API does this, and current Claude models answer it with a 400
  ("does not support assistant message prefill"), as does any model with extended thinking on.
- a user turn: the partial answer as the assistant's turn, then a user turn that quotes where
  it stopped and asks for the rest. Every model accepts it, but a model may start again from
  the beginning or repeat its last words: `Overlap` drops what the client already has.

Sluice tries prefill where it can work, and on its 400 asks again with a user turn (and
remembers, per worker, that this model refuses prefill). That memory is bounded: a refusal is
forgotten after PREFILL_REFUSAL_SECONDS (a model may learn prefill, a 400 may have had another
cause), and at most PREFILL_REFUSALS_MAX models are remembered (the oldest refusal goes first),
since with `SLUICE_ALLOWED_MODELS=*` the model names are the clients'. Forgetting costs one
refused request: the next recovery of that model tries prefill once more.
"""

from __future__ import annotations

import time

from app.providers.base import Message

# How much of the cut answer the continuation request quotes: enough to find the spot.
QUOTE_CHARS = 300
# A repeated tail shorter than this is not dropped: a real continuation may begin with the
# same short words ("the ") that ended the cut answer.
MIN_TAIL_OVERLAP = 8

CONTINUE_INSTRUCTION = (
    "Your previous reply was cut off by a network error. It ended with:\n\n"
    "<cut_off>{tail}</cut_off>\n\n"
    "Continue from exactly that point. Reply with only the remaining text: no preamble, "
    "no quotation, nothing repeated."
)

PREFILL_REFUSAL_SECONDS = 3600.0  # how long a model's refusal of prefill is remembered
PREFILL_REFUSALS_MAX = 256  # models remembered at most (per worker)

# (provider, model) -> monotonic time its refusal is forgotten; in refusal order (oldest first).
_prefill_refused: dict[tuple[str, str], float] = {}


def prefill_allowed(provider: str, model: str, reasoning: str) -> bool:
    """Whether to try continuing by prefill (Anthropic, thinking off, not refused lately)."""
    if provider != "anthropic" or reasoning != "off":
        return False
    until = _prefill_refused.get((provider, model))
    if until is None:
        return True
    if until > time.monotonic():
        return False
    del _prefill_refused[(provider, model)]
    return True


def prefill_refused(provider: str, model: str) -> None:
    """The model answered a prefill with a 400: ask it with a user turn for a while."""
    key = (provider, model)
    _prefill_refused.pop(key, None)  # to the end: the newest refusal
    _prefill_refused[key] = time.monotonic() + PREFILL_REFUSAL_SECONDS
    while len(_prefill_refused) > PREFILL_REFUSALS_MAX:
        del _prefill_refused[next(iter(_prefill_refused))]


def continuation(conversation: list[Message], partial: str, *, prefill: bool) -> list[Message]:
    """The conversation to send to get the rest of `partial` (this round's text so far).

    The partial turn is stripped of trailing whitespace: the Messages API rejects a final
    assistant turn that ends with whitespace.
    """
    said = Message("assistant", partial.rstrip())
    if prefill:
        return [*conversation, said]
    tail = partial.rstrip()[-QUOTE_CHARS:]
    return [*conversation, said, Message("user", CONTINUE_INSTRUCTION.format(tail=tail))]


class Overlap:
    """Filters the start of a continuation, dropping whatever repeats text already relayed.

    A continuation is held back while it may still be a repeat (a prefix of what was said, or
    a piece of it); once it departs from that, the repeated part is dropped and the rest passes
    through untouched.
    """

    def __init__(self, said: str) -> None:
        self._said = said
        self._held = ""
        self._deciding = bool(said)

    def push(self, text: str) -> str:
        """A delta of the continuation; returns what may be relayed now."""
        if not self._deciding:
            return text
        self._held += text
        return self._decide(final=False)

    def flush(self) -> str:
        """The continuation ended: release what is still held that is not a repeat."""
        if not self._deciding:
            return ""
        return self._decide(final=True)

    def _decide(self, *, final: bool) -> str:
        said, held = self._said, self._held
        if said[-1:].isspace():
            # What the client has ends in a space; a continued prefill (sent stripped) starts with one.
            held = held.lstrip()
        if said.startswith(held):  # a restart from the beginning, so far
            if not final:
                return ""
            self._deciding = False
            return ""
        self._deciding = False
        if held.startswith(said):  # a complete restart: only what is new
            return held[len(said):]
        if not final and held in said:  # maybe the last words, repeated: wait and see
            self._deciding = True
            return ""
        return held[self._tail_overlap(said, held):]

    @staticmethod
    def _tail_overlap(said: str, held: str) -> int:
        """Length of the longest end of `said` (starting at a word) that `held` begins with."""
        for k in range(min(len(said), len(held)), MIN_TAIL_OVERLAP - 1, -1):
            start = len(said) - k
            at_word = start == 0 or said[start - 1].isspace()
            if at_word and said.endswith(held[:k]):
                return k
        return 0
