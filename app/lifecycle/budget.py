"""Budgets: how many tokens a principal may spend per window (SLUICE_BUDGET_TOKENS, a profile's
`budget_tokens`), never exceeded, whatever runs in parallel.

    reserve (before any upstream call)           settle (when the generation ends)
    estimated input + max_tokens (+ thinking) ─▶  reserved -= that; used += input + output
    on every budget that applies, atomically        as `done` / `cancelled` report them

A reservation that does not fit is refused (429 `budget_exceeded`), or, when what is left
still holds a useful answer, granted with a lower `max_tokens`. The generation then keeps
within what it reserved: each upstream round (a tool round, a continuation) asks for no more
output than is left of it (`Producer`), so what it is charged never passes its reservation.

Windows start at multiples of SLUICE_BUDGET_WINDOW_SECONDS since the Unix epoch. The counters
live in the backend's `Ledger`: Redis (shared) or this worker's memory.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from app.backends.base import Ledger
from app.config import Settings
from app.errors import RequestError
from app.lifecycle.spec import GenerationSpec
from app.observability import metrics
from app.providers.base import REASONING_BUDGETS, Message, ToolSpec
from app.toolbox import toolbox_for

MIN_ANSWER = 64  # the fewest answer tokens worth lowering max_tokens to, rather than refusing
_KEY_PREFIX = "sluice"


def estimate_input(system: str | None, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> int:
    """Input tokens of one upstream call, estimated from its length, erring high.

    A token is about four characters of English; a third of the UTF-8 bytes (what the
    conversation's records take when written out) is above what any provider counts for it,
    so a reservation is never short.
    """
    size = len((system or "").encode()) + len(repr(tuple(messages)).encode()) + len(repr(tuple(tools)).encode())
    return math.ceil(size / 3) + 16


def output_ceiling(spec: GenerationSpec) -> int:
    """The most output tokens one round may bill: the answer's max_tokens, plus thinking."""
    return spec.max_tokens + REASONING_BUDGETS.get(spec.reasoning, 0)


@dataclass(frozen=True)
class Window:
    """One budget window, [start, end) in Unix seconds."""

    start: int
    end: int

    @classmethod
    def now(cls, seconds: int, at: float | None = None) -> Window:
        start = int((time.time() if at is None else at) // seconds) * seconds
        return cls(start, start + seconds)

    def seconds_left(self) -> int:
        return max(1, math.ceil(self.end - time.time()))


@dataclass
class Hold:
    """A granted reservation: settled exactly once, when its generation ends."""

    keys: tuple[str, ...]
    amount: int
    ttl: int
    settled: bool = False


class Budgets:
    """Reservations and their settlement against the ledger (see the module docstring)."""

    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        self.settings = settings
        self.ledger = ledger

    def _limits(self, profile: str | None) -> list[tuple[str | None, int]]:
        """(profile name or None for the server's, budget) of every budget that applies."""
        limits: list[tuple[str | None, int]] = []
        if self.settings.budget_tokens is not None:
            limits.append((None, self.settings.budget_tokens))
        found = self.settings.profiles.get(profile) if profile else None
        if found is not None and found.budget_tokens is not None:
            limits.append((found.name, found.budget_tokens))
        return limits

    @property
    def enabled(self) -> bool:
        """Some budget applies to some request."""
        return self.settings.budget_tokens is not None or any(
            p.budget_tokens is not None for p in self.settings.profiles.values()
        )

    def _key(self, principal: str, window: Window, profile: str | None) -> str:
        # Hash-tagged on the principal: every counter of one principal is in one Cluster slot.
        digest = hashlib.sha256(principal.encode()).hexdigest()[:32]
        return f"{_KEY_PREFIX}:{{b:{digest}}}:{window.start}" + (f":p:{profile}" if profile else "")

    def _ttl(self, window: Window) -> int:
        return max(1, window.end - int(time.time())) + 60

    def reserve(self, spec: GenerationSpec, principal: str) -> tuple[GenerationSpec, Hold | None]:
        """Reserve what `spec` may spend, or raise 429 `budget_exceeded` (before any upstream call).

        Returns the spec to run (max_tokens lowered when only that fits, `budget_tokens` set to
        the reservation) and the hold to settle at its end; (spec, None) with no budget.
        """
        limits = self._limits(spec.profile)
        if not limits:
            return spec, None
        window = Window.now(self.settings.budget_window_seconds)
        tools = tuple(toolbox_for(self.settings).spec(name) for name in spec.tools)
        est_input = estimate_input(spec.system, spec.messages, tools)
        want = est_input + output_ceiling(spec)
        least = min(want, est_input + MIN_ANSWER + REASONING_BUDGETS.get(spec.reasoning, 0))
        keys = tuple(self._key(principal, window, name) for name, _ in limits)
        ttl = self._ttl(window)
        granted, left = self.ledger.reserve(keys, [budget for _, budget in limits], want, least, ttl)
        if granted <= 0:
            metrics.budget_rejected()
            retry = window.seconds_left()
            raise RequestError(
                429,
                f"The token budget is spent until the window ends in {retry} s ({left} tokens left; this request "
                f"needs about {least})",
                type="budget_exceeded",
                headers={"Retry-After": str(retry)},
                details={"remaining_tokens": left},
            )
        if granted < want:
            lowered = granted - est_input - REASONING_BUDGETS.get(spec.reasoning, 0)
            spec = replace(spec, max_tokens=lowered, requested_max_tokens=spec.max_tokens)
        return replace(spec, budget_tokens=granted), Hold(keys, granted, ttl)

    def settle(self, hold: Hold, usage: dict[str, Any]) -> None:
        """Give back what a generation did not use, charge what it did (`done`/`cancelled` usage)."""
        if hold.settled:
            return
        hold.settled = True
        charged = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
        self.ledger.settle(hold.keys, hold.amount, charged, hold.ttl)
        metrics.tokens_charged(charged)

    def usage(self, principal: str) -> dict[str, Any]:
        """`GET /usage`: the caller's window, budget, used, reserved and remaining tokens."""
        window = Window.now(self.settings.budget_window_seconds)

        def counts(profile: str | None, budget: int | None) -> dict[str, Any]:
            used, reserved = self.ledger.read(self._key(principal, window, profile))
            remaining = None if budget is None else max(0, budget - used - reserved)
            return {"budget_tokens": budget, "used_tokens": used, "reserved_tokens": reserved,
                    "remaining_tokens": remaining}

        body: dict[str, Any] = {"principal": principal, "window_start": window.start, "window_end": window.end,
                                **counts(None, self.settings.budget_tokens)}
        own = {name: counts(name, p.budget_tokens) for name, p in sorted(self.settings.profiles.items())
               if p.budget_tokens is not None}
        if own:
            body["profiles"] = own
        return body
