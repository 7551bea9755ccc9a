"""The producer: every upstream call of one generation, and what it relays.

    provider.stream() ──next()──▶ Producer._take ──▶ TextRelay / emit ──▶ the generation's journal

One `run()` is the whole answer: tool rounds (the tools run here, their results go back to the
model), a fallback to another provider before the first output, and a mid-stream recovery
after a dropped connection. It raises whatever ends the answer otherwise; the generation
(`generation.py`) turns that into exactly one terminal event.

Fair share: every FAIR_SHARE text deltas the producer yields to the other greenlets, and tells
the generation's watcher how many it relayed (`sluice_tokens_relayed_total`, in bulk).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import gevent
from gevent.pool import Group

from app.config import Settings
from app.errors import UpstreamError
from app.lifecycle import recovery
from app.lifecycle.budget import estimate_input
from app.lifecycle.deadlines import RoundTimer
from app.lifecycle.spec import GenerationSpec
from app.lifecycle.text_relay import TextRelay
from app.lifecycle.usage import UsageMeter
from app.observability import greenlets
from app.observability.tracing import Trace
from app.providers.base import (
    REASONING_BUDGETS,
    Finish,
    Message,
    Opaque,
    OpaqueBlock,
    Provider,
    ProviderEvent,
    ProviderRequest,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    Usage,
)
from app.sse import Entry
from app.toolbox import toolbox_for

ProviderFactory = Callable[[str], Provider]

TEXT_PIECES = 64  # a round's text deltas kept apart before they are joined (see `Round.add`)
FAIR_SHARE = 64  # text deltas relayed between yields to the other greenlets (and metric updates)


class Relayed(Protocol):
    """Told how many text deltas were relayed (the generation's watcher)."""

    def relayed(self, deltas: int) -> None: ...


class Outlet(Protocol):
    """What the producer needs of its generation (see `generation.Generation`)."""

    spec: GenerationSpec
    settings: Settings
    providers: ProviderFactory
    relay: TextRelay
    meter: UsageMeter
    trace: Trace
    watcher: Relayed
    ttft_ms: int | None

    def emit(self, payload: dict[str, Any] | str, *, terminal: bool = False) -> Entry | None: ...

    def first_output(self) -> None: ...


@dataclass(slots=True)
class Round:
    """What one upstream call made so far (kept, so a failure can look at it)."""

    text: list[str] = field(default_factory=list)  # the round's answer text, as relayed
    calls: list[ToolCallPart] = field(default_factory=list)
    opaque: list[OpaqueBlock] = field(default_factory=list)
    stop: str = "end_turn"
    relayed: bool = False  # the model sent something (text, reasoning, a tool call)
    in_tool_call: bool = False  # a tool call began: a drop now is not continued as prose

    @property
    def answer(self) -> str:
        return "".join(self.text)

    def add(self, text: str) -> None:
        """Note relayed text. Joined every TEXT_PIECES deltas: a string object per delta (~55
        bytes for a token) would cost a running stream more than its events do in the journal."""
        pieces = self.text
        pieces.append(text)
        if len(pieces) >= TEXT_PIECES:
            pieces[:] = ["".join(pieces)]


@dataclass(frozen=True)
class Resume:
    """The next call continues a dropped round: what the client has, and what to send."""

    said: str
    messages: list[Message]
    prefill: bool = False


class Producer:
    """The rounds of one generation's answer (runs in the generation's greenlet)."""

    __slots__ = ("gen", "_relay", "_meter", "upstream", "upstream_model", "current", "resume", "_recovered",
                 "_fell_back", "_reported")

    def __init__(self, gen: Outlet) -> None:
        self.gen = gen
        self._relay, self._meter = gen.relay, gen.meter  # the hot path's, looked up once
        self.upstream, self.upstream_model = gen.spec.provider, gen.spec.model  # changed by a fallback
        self.current = Round()  # the round in progress (or the last one)
        self.resume: Resume | None = None
        self._recovered = False
        self._fell_back = False
        self._reported = 0  # text deltas already told to the watcher

    def release(self) -> None:
        """The generation ended: drop the last round's text (one string per delta) and any resume."""
        self.current = Round()
        self.resume = None

    def run(self) -> str:
        """Every round of the answer (tool rounds, a fallback, a recovery); the model's stop reason.

        Raises what ends the generation otherwise: `UpstreamError`, `SluiceError`, `Deadline`,
        `GreenletExit`.
        """
        spec = self.gen.spec
        # The turns the model has really had; a continuation adds its scaffolding only to the
        # request that asks for the rest, never here (so it never reaches a later round).
        conversation = list(spec.messages)
        rounds = 0
        try:
            while True:
                resume = self.resume
                sent = resume.messages if resume is not None else conversation
                request = self._request(sent)
                if request.max_tokens < 1:
                    return "max_tokens"  # the budget's reservation is spent: no further round
                try:
                    result = self._round(self.gen.providers(self.upstream), request, resume)
                except UpstreamError as exc:
                    if self._retry_after(exc, conversation):
                        continue
                    raise
                self.resume = None
                if result.stop == "tool_use" and result.calls and rounds < self.gen.settings.max_tool_rounds:
                    rounds += 1
                    conversation += [
                        # Opaque blocks (thinking + signature) go back exactly as received: the API
                        # rejects a tool round that drops them.
                        Message("assistant", result.answer, tool_calls=tuple(result.calls),
                                opaque=tuple(result.opaque)),
                        Message("user", tool_results=self._run_tools(result.calls)),
                    ]
                    continue
                return result.stop
        finally:
            self._report()  # however it ended (a cancel too): before the generation's ending

    def _report(self) -> None:
        # In bulk: a Prometheus update per delta would cost more than relaying the delta.
        deltas = self._relay.deltas
        if deltas > self._reported:
            self.gen.watcher.relayed(deltas - self._reported)
            self._reported = deltas

    def _share(self) -> int:
        """FAIR_SHARE more text deltas: report them and let the other greenlets run; the next mark.

        A fast upstream keeps the socket readable, so the SDK's reads never block and this
        greenlet would never let another run: the worker's other streams, and /healthz, would
        wait for this whole answer. The responses then find several events waiting and write
        them in one send.
        """
        self._report()
        gevent.sleep(0)
        return self._relay.deltas + FAIR_SHARE

    def _request(self, messages: list[Message]) -> ProviderRequest:
        spec = self.gen.spec
        tools = tuple(toolbox_for(self.gen.settings).spec(name) for name in spec.tools)
        max_tokens = spec.max_tokens
        if spec.budget_tokens is not None:
            # Under a budget, a round asks for no more output than is left of the reservation
            # once its input (estimated high) is counted: what is charged never passes it.
            usage = self._meter.as_dict()
            left = spec.budget_tokens - usage["input_tokens"] - usage["output_tokens"]
            left -= estimate_input(spec.system, messages, tools) + REASONING_BUDGETS.get(spec.reasoning, 0)
            max_tokens = min(max_tokens, left)
        return ProviderRequest(
            model=self.upstream_model,
            messages=tuple(messages),
            max_tokens=max_tokens,
            system=spec.system,
            temperature=spec.temperature,
            tools=tools,
            json_mode=spec.response_format == "json",
            reasoning=spec.reasoning,
        )

    def _run_tools(self, calls: list[ToolCallPart]) -> tuple[ToolResultPart, ...]:
        """Run a round's tool calls side by side (each in its own greenlet); results in call order.

        A kill of the producer (cancel, deadline) kills the running tools with it: no result of
        theirs is emitted or sent to the model.
        """
        toolbox, trace = toolbox_for(self.gen.settings), self.gen.trace

        def run(call: ToolCallPart) -> tuple[str, bool]:
            with trace.tool(call.name, call.id):
                return toolbox.run(call.name, call.arguments)

        # Each tool greenlet starts in a copy of the producer's context: a tool's span (and any
        # span its own libraries make) stays in the caller's trace.
        group = Group()
        running = [greenlets.spawn(run, call) for call in calls]
        for greenlet in running:
            group.add(greenlet)
        results = []
        try:
            for call, greenlet in zip(calls, running, strict=True):
                content, is_error = greenlet.get()
                results.append(ToolResultPart(call.id, call.name, content, is_error))
                self.gen.emit({"type": "tool_result", "id": call.id, "name": call.name,
                               "content": content, "is_error": is_error})
        finally:
            group.kill(block=False)  # nothing left to kill unless the producer itself was
        return tuple(results)

    def _retry_after(self, exc: UpstreamError, conversation: list[Message]) -> bool:
        """After a failed upstream call: set up the next call and return True, or False to fail."""
        failed = self.current
        resume = self.resume
        if resume is not None and resume.prefill and exc.type == "invalid_request" and not failed.relayed:
            # This model refuses prefill (current Claude models: 400): ask with a user turn.
            recovery.prefill_refused(self.upstream, self.upstream_model)
            self.resume = Resume(resume.said, recovery.continuation(conversation, resume.said, prefill=False))
            self._meter.close_round(discard=True)
            return True
        fallback = self.gen.settings.fallback_provider
        if self.gen.ttft_ms is None and fallback and fallback != self.upstream and not self._fell_back:
            self._fell_back = True
            self.gen.emit({"type": "notice", "code": "fallback",
                           "message": f"{self.upstream} failed ({exc.type}); {fallback} is answering instead"})
            self.upstream, self.upstream_model = fallback, self.gen.settings.default_model(fallback)
            self._meter.close_round(discard=True)
            return True
        said = failed.answer
        if (exc.type != "connection" or not said.strip() or failed.in_tool_call or self._recovered
                or not self.gen.settings.midstream_recovery):
            # A drop inside a tool call is not continued as prose: its arguments would be lost.
            return False
        self._recovered = True
        self.gen.emit({"type": "notice", "code": "upstream_reconnected",
                       "message": "The connection to the model dropped; the answer is being continued"})
        self._meter.close_round()
        prefill = recovery.prefill_allowed(self.upstream, self.upstream_model, self.gen.spec.reasoning)
        self.resume = Resume(said, recovery.continuation(conversation, said, prefill=prefill), prefill)
        return True

    def _round(self, provider: Provider, request: ProviderRequest, resume: Resume | None) -> Round:
        """One upstream call: relay its reasoning, text and tool calls, and return what it made.

        With `resume`, the call continues this round's answer after a drop: its text begins
        with what the client already has, and a repeat of that is filtered out.
        """
        # Kept on self: if the upstream drops mid-answer, `_retry_after` looks at it.
        state = self.current = Round(text=[resume.said] if resume is not None else [])
        overlap = recovery.Overlap(resume.said) if resume is not None else None
        self._meter.open_round(sum(len(m.text) for m in request.messages) + len(request.system or ""))
        events = provider.stream(request)
        settings = self.gen.settings
        timer = RoundTimer(gevent.getcurrent(), settings.first_token_timeout, settings.idle_timeout)
        clock = time.monotonic
        relay = self._relay
        share_at = relay.deltas + FAIR_SHARE
        # The round's span is current from here to `upstream_end`, in this greenlet: the SDK's
        # span of each attempt (a retry too) is its child.
        self.gen.trace.upstream_start(provider.name, request.model)
        try:
            while True:
                # Inline rather than a wrapping generator: one stack level less for the
                # producer's greenlet to save and restore at every switch.
                timer.since = clock()  # waiting on the upstream: the timer may fire now
                try:
                    event = next(events)
                except StopIteration:
                    break
                timer.since = None
                self._take(event, state, overlap)
                if relay.deltas >= share_at:
                    share_at = self._share()
                if state.relayed and not timer.relayed:
                    timer.now_relayed()
        finally:
            timer.close()
            # Closing the provider's generator closes its upstream response (its `with`).
            events.close()
            self.gen.trace.upstream_end(sys.exc_info()[1])
        if overlap is not None:
            self._relay_text(overlap.flush(), state)
        self._relay.flush()
        self._meter.close_round()
        return state

    def _take(self, event: ProviderEvent, state: Round, overlap: recovery.Overlap | None) -> None:
        """Relay one provider event (or note it in `state`)."""
        if isinstance(event, TextDelta):
            if event.text:
                state.relayed = True
                self._meter.round_deltas += 1
                self._relay_text(overlap.push(event.text) if overlap is not None else event.text, state)
        elif isinstance(event, ReasoningDelta):
            if event.text:
                state.relayed = True
                self._meter.round_deltas += 1
                self._relay.flush()  # keep the order: text held by chunking goes first
                self.gen.first_output()
                self.gen.emit({"type": "reasoning", "content": event.text})
        elif isinstance(event, ToolCallStart):
            state.relayed = state.in_tool_call = True
        elif isinstance(event, ToolCall):
            state.relayed = state.in_tool_call = True
            self._relay.flush()
            self.gen.first_output()
            state.calls.append(ToolCallPart(event.id, event.name, event.arguments))
            self.gen.emit({"type": "tool_call", "id": event.id, "name": event.name, "arguments": event.arguments})
        elif isinstance(event, Opaque):
            state.opaque.append(event.block)
        elif isinstance(event, Usage):
            self._meter.reported(event)
        elif isinstance(event, Finish):
            state.stop = event.stop_reason

    def _relay_text(self, text: str, state: Round) -> None:
        if text:
            state.add(text)
            self._relay.push(text)
