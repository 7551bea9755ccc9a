"""One generation's life: a producer greenlet that reads a provider and publishes to its journal.

    provider ──next()──▶ producer greenlet ──append──▶ Journal ──▶ subscribers (HTTP responses)
                               ▲
     cancel / disconnect / timeout / shutdown: one path — the greenlet is killed (or its
     Timeout fires) *while it is blocked in the provider's socket read*; the exception unwinds
     through the provider's `with` block, which closes the upstream HTTP response (the model
     stops, the bill stops), and `_run` turns it into exactly one terminal event.

A flag checked between chunks would do nothing while the model is silent; killing the greenlet
works wherever it is blocked.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent import Greenlet, GreenletExit, Timeout
from gevent.event import Event
from gevent.hub import get_hub

from app.config import Settings
from app.errors import SluiceError, UpstreamError
from app.lifecycle import recovery
from app.lifecycle.journal import DONE, Entry, Journal, JournalFull
from app.lifecycle.relay import TextRelay
from app.lifecycle.usage import UsageMeter
from app.observability import metrics
from app.observability.tracing import NO_TRACE, NoTrace
from app.providers.base import (
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
from app.tools import TOOLS, run_tool
from app.validation import GenerationSpec

log = logging.getLogger("sluice.generation")

ProviderFactory = Callable[[str], Provider]
FAIR_SHARE = 64  # text deltas relayed between yields to the other greenlets (and metric updates)


class _Deadline(BaseException):
    """Raised by a generation's own timers (never escapes `_run`).

    A `BaseException`, as `gevent.Timeout` is: the timer fires wherever the producer is blocked,
    often inside an SDK's `send`, and the SDKs turn any `Exception` raised there into
    `APIConnectionError` ("Could not connect"). Only an `except BaseException` that re-raises
    may stand between a timer and `_run`.
    """

    def __init__(self, kind: str, seconds: float) -> None:
        super().__init__(kind)
        self.kind = kind
        self.seconds = seconds

    def message(self) -> str:
        what = {
            "first_token": "The model sent no first token",
            "idle": "The model went silent",
            "max_duration": "The answer took too long",
        }[self.kind]
        return f"{what} within {self.seconds:g} s"


class _RoundTimer:
    """The first-token and idle deadlines of one upstream call, on one libev timer.

    A `Timeout` made, started and closed around every provider event cost more than relaying
    the event. Instead the producer stamps `since` when it starts waiting for the upstream and
    clears it when an event arrived; the timer, when it fires, checks the deadline that applies
    and re-arms itself for the rest (at most once per period: an answer that streams never
    touches it). It throws `_Deadline` into the producer only while the producer waits on the
    upstream, as the per-event `Timeout` did.
    """

    __slots__ = ("_producer", "_first_token", "_idle", "_started", "_timer", "since", "relayed")

    def __init__(self, producer: Any, first_token: float, idle: float) -> None:
        self._producer = producer
        self._first_token = first_token
        self._idle = idle
        self._started = time.monotonic()
        self._timer: Any = None
        self.since: float | None = None  # when the producer began waiting for the upstream
        self.relayed = False  # the round relayed something: the idle deadline applies
        self._arm(first_token)

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.close()
        self._timer = get_hub().loop.timer(max(seconds, 0.001))
        self._timer.start(self._fire)

    def now_relayed(self) -> None:
        """The round's first output: from now on the idle deadline applies."""
        self.relayed = True
        self._arm(self._idle)

    def _fire(self) -> None:
        now = time.monotonic()
        since = self.since
        waited = since if since is not None else now
        due = waited + self._idle if self.relayed else self._started + self._first_token
        if since is None or now < due:
            self._arm(due - now)  # not waiting on the upstream now, or not due yet
            return
        kind, seconds = ("idle", self._idle) if self.relayed else ("first_token", self._first_token)
        self.close()
        self._producer.throw(_Deadline(kind, seconds))

    def close(self) -> None:
        """Stop the timer (idempotent)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()


def _timed(events: Iterator[ProviderEvent], timer: _RoundTimer) -> Iterator[ProviderEvent]:
    """`events`, with `timer.since` set while each one is awaited."""
    clock = time.monotonic
    while True:
        timer.since = clock()
        try:
            event = next(events)
        except StopIteration:
            return
        timer.since = None
        yield event


@dataclass
class _Round:
    """What one upstream call made so far (on the generation, so a failure can look at it)."""

    text: list[str] = field(default_factory=list)  # the round's answer text, as relayed
    calls: list[ToolCallPart] = field(default_factory=list)
    opaque: list[OpaqueBlock] = field(default_factory=list)
    stop: str = "end_turn"
    relayed: bool = False  # the model sent something (text, reasoning, a tool call)
    in_tool_call: bool = False  # a tool call began: a drop now is not continued as prose

    @property
    def answer(self) -> str:
        return "".join(self.text)


@dataclass(frozen=True)
class _Resume:
    """The next call continues a dropped round: what the client has, and what to send."""

    said: str
    messages: list[Message]
    prefill: bool = False


class Generation:
    """A generation: its spec, its journal, its state, and the greenlet that produces it."""

    def __init__(
        self,
        stream_id: str,
        spec: GenerationSpec,
        settings: Settings,
        providers: ProviderFactory,
        *,
        owner: str | None = None,
        client: str = "",
        on_entry: Callable[[Generation, Entry], None] | None = None,
        on_end: Callable[[Generation], None] | None = None,
        trace: NoTrace = NO_TRACE,
    ) -> None:
        self.id = stream_id
        self.spec = spec
        self.settings = settings
        self.providers = providers
        self.owner = owner
        self.client = client
        self.provider_name = spec.provider
        self.model = spec.model
        self.journal = Journal(stream_id, settings.max_stream_bytes)
        self.state = "running"
        self.outcome_reason: str | None = None
        self.stop_reason: str | None = None  # the model's (end_turn, max_tokens...); a cancel's is _cancel_reason
        self.created_at = time.time()
        self.ended_at: float | None = None
        self._t0 = time.monotonic()
        self.ttft_ms: int | None = None
        self.duration_ms: int | None = None
        self.relay = TextRelay(
            self.emit,
            self.emit_text,
            chunking=spec.chunking,
            coalesce_ms=settings.coalesce_ms,
            json_mode=spec.response_format == "json",
            keep_answer=settings.log_content,
            on_first=self._first_text,
        )
        self.subscribers = 0
        self._on_entry = on_entry
        self._on_end = on_end
        self.trace = trace
        self._greenlet: Greenlet | None = None
        self._running = False
        self._cancel_reason = "shutdown"
        self._grace: Greenlet | None = None
        self.meter = UsageMeter()
        self._upstream, self._upstream_model = spec.provider, spec.model  # changed by a fallback
        self._state = _Round()
        self._resume: _Resume | None = None
        self._recovered = False
        self._fell_back = False
        self._full = False  # the journal reached its byte bound: only the ending goes in now
        self._counted = 0  # text deltas already added to sluice_tokens_relayed_total

    # -- events -------------------------------------------------------------------------------

    def emit(self, payload: dict[str, Any] | str, *, terminal: bool = False) -> Entry | None:
        """Append an event to the journal (and mirror it to the shared backend, if any).

        Past the journal's byte bound the generation ends with an error (see `_overflow`); only a
        `terminal` event (the ending and `[DONE]`) always goes in. None: the event was refused.
        """
        return self._add(self.journal.append, payload, terminal)

    def emit_text(self, text: str) -> Entry | None:
        """`emit` for a `text` event: the hot path (see `Journal.append_text`)."""
        entry = self._add(self.journal.append_text, text, False)
        if self.relay.deltas - self._counted >= FAIR_SHARE:
            self._count_tokens()
            if gevent.getcurrent() is self._greenlet:
                # A fast upstream keeps the socket readable, so the SDK's reads never block and
                # this greenlet would never let another run: the worker's other streams, and
                # /healthz, would wait for this whole answer. Yield now and then; the responses
                # then find several events waiting and write them in one send.
                gevent.sleep(0)
        return entry

    def _add(self, add: Callable[..., Entry], item: Any, terminal: bool) -> Entry | None:
        if self._full and not terminal:
            return None
        try:
            entry = add(item, bounded=not terminal)
        except JournalFull:
            self._overflow()
            return None
        if self._on_entry is not None:
            self._on_entry(self, entry)
        return entry

    def _count_tokens(self) -> None:
        # In bulk: a Prometheus update per token would cost more than relaying the token.
        metrics.tokens_relayed(self.relay.deltas - self._counted)
        self._counted = self.relay.deltas

    def _overflow(self) -> None:
        """The journal is full: end with an error, from the producer (raise) or from elsewhere (kill)."""
        self._full = True
        exc = SluiceError(
            "internal",
            f"This answer passed the server's limit of {self.journal.max_bytes} bytes per stream "
            "(SLUICE_MAX_STREAM_BYTES) and was stopped there",
            retryable=False,
        )
        if self._greenlet is not None and gevent.getcurrent() is self._greenlet:
            raise exc
        if self._greenlet is not None:
            self._greenlet.kill(exc, block=False)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def upstream(self) -> str:
        """The provider answering: the request's, or the fallback once it took over."""
        return self._upstream

    # -- as a Feed (app.backends.base): subscribers on this worker read the journal directly ----

    def wait_after(self, seq: int, timeout: float | None, interrupt: Event | None = None) -> list[Entry]:
        """Entries after `seq`, waiting up to `timeout` for one."""
        return self.journal.wait_after(seq, timeout, interrupt)

    def listen(self, wake: Callable[[], None]) -> None:
        """Call `wake()` once, in the hub, at the next event (see `Journal.listen`)."""
        self.journal.listen(wake)

    @property
    def closed(self) -> bool:
        return self.journal.closed

    # -- control ------------------------------------------------------------------------------

    def start(self, cancelled: bool = False) -> None:
        """Publish `start` and run the producer (or end at once: an early-cancelled id)."""
        self.emit(
            {
                "type": "start",
                "stream_id": self.id,
                "provider": self.provider_name,
                "model": self.model,
                "cancel_url": "/cancel",
            }
        )
        if cancelled:
            self._end_cancelled("user")
            return
        self._greenlet = gevent.spawn(self._run)
        if self.subscribers == 0:
            # Created without a reader (POST /streams): give the client time to attach.
            self._arm_grace(max(self.settings.disconnect_grace_seconds, 10.0))

    def cancel(self, reason: str = "user") -> bool:
        """Stop the generation; True if it was running. Returns at once (the kill is async)."""
        if not self.running:
            return False
        self._cancel_reason = reason
        if not self._running or self._greenlet is None:
            # Not started yet: a kill would just drop it, with no terminal event.
            self._end_cancelled(reason)
            if self._greenlet is not None:
                self._greenlet.kill(block=False)
            return True
        self._greenlet.kill(GreenletExit, block=False)
        return True

    def join(self, timeout: float | None = None) -> None:
        """Wait for the producer to end."""
        if self._greenlet is not None:
            self._greenlet.join(timeout)

    def attach(self) -> None:
        """A subscriber arrived: it stops a pending disconnect cancel."""
        self.subscribers += 1
        if self._grace is not None:
            self._grace.kill(block=False)
            self._grace = None

    def detach(self) -> None:
        """A subscriber left: with nobody left, cancel after the grace period."""
        self.subscribers = max(0, self.subscribers - 1)
        if self.subscribers == 0 and self.running:
            self._arm_grace(self.settings.disconnect_grace_seconds)

    @property
    def unattended(self) -> bool:
        """Running, with no subscriber here and no disconnect grace counting down."""
        return self.running and self.subscribers == 0 and self._grace is None

    def recheck_attached(self) -> None:
        """Remote followers left (or vanished): start the grace if nobody follows here either."""
        if self.unattended:
            self._arm_grace(self.settings.disconnect_grace_seconds)

    def _arm_grace(self, seconds: float) -> None:
        if self._grace is not None:
            self._grace.kill(block=False)
        self._grace = gevent.spawn_later(seconds, self._grace_expired)

    def _grace_expired(self) -> None:
        self._grace = None
        if self.subscribers == 0 and self.running and not self.remote_subscribers():
            self.cancel("disconnect")

    def remote_subscribers(self) -> bool:
        """Overridden by the shared backend: are clients attached through other workers?"""
        return False

    def _first_text(self) -> None:
        """The first output (text, reasoning or a tool call) reached the client: the TTFT."""
        if self.ttft_ms is None:
            self.ttft_ms = int((time.monotonic() - self._t0) * 1000)
            self.trace.first_chunk()

    def usage(self) -> dict[str, Any]:
        """Token usage so far (see `UsageMeter`)."""
        return self.meter.as_dict()

    # -- the producer -------------------------------------------------------------------------

    def _run(self) -> None:
        self._running = True
        deadline = Timeout(self.settings.max_duration, _Deadline("max_duration", self.settings.max_duration))
        deadline.start()
        try:
            self._produce()
        except GreenletExit:
            self._end_cancelled(self._cancel_reason)
        except _Deadline as exc:
            self._end_error(UpstreamError("timeout", exc.message(), retryable=True))
        except SluiceError as exc:
            self._end_error(exc)
        except Exception:
            log.exception("generation %s failed", self.id)
            self._end_error(SluiceError("internal", "Sluice failed while streaming this answer"))
        finally:
            deadline.close()
            if self.running:  # defensive: every path above ends the stream
                self._end_error(SluiceError("internal", "the generation ended unexpectedly"))

    def _produce(self) -> None:
        spec = self.spec
        # The turns the model has really had; a continuation adds its scaffolding only to the
        # request that asks for the rest, never here (so it never reaches a later round).
        conversation = list(spec.messages)
        rounds = 0
        while True:
            resume = self._resume
            sent = resume.messages if resume is not None else conversation
            try:
                result = self._round(self.providers(self._upstream), self._request(sent), resume)
            except UpstreamError as exc:
                if self._retry_after(exc, conversation):
                    continue
                raise
            self._resume = None
            if result.stop == "tool_use" and result.calls and rounds < self.settings.max_tool_rounds:
                rounds += 1
                conversation += [
                    # Opaque blocks (thinking + signature) go back exactly as received: the API
                    # rejects a tool round that drops them.
                    Message("assistant", result.answer, tool_calls=tuple(result.calls), opaque=tuple(result.opaque)),
                    Message("user", tool_results=self._run_tools(result.calls)),
                ]
                continue
            self.stop_reason = result.stop
            break
        if spec.response_format == "json":
            self.relay.finish_json()
        self._end_done()

    def _request(self, messages: list[Message]) -> ProviderRequest:
        spec = self.spec
        return ProviderRequest(
            model=self._upstream_model,
            messages=tuple(messages),
            max_tokens=spec.max_tokens,
            system=spec.system,
            temperature=spec.temperature,
            tools=tuple(TOOLS[name].spec for name in spec.tools),
            json_mode=spec.response_format == "json",
            reasoning=spec.reasoning,
        )

    def _run_tools(self, calls: list[ToolCallPart]) -> tuple[ToolResultPart, ...]:
        results = []
        for call in calls:
            with self.trace.tool(call.name, call.id):
                content, is_error = run_tool(call.name, call.arguments)
            results.append(ToolResultPart(call.id, call.name, content, is_error))
            self.emit({"type": "tool_result", "id": call.id, "name": call.name,
                       "content": content, "is_error": is_error})
        return tuple(results)

    def _retry_after(self, exc: UpstreamError, conversation: list[Message]) -> bool:
        """After a failed upstream call: set up the next call and return True, or False to fail."""
        failed = self._state
        resume = self._resume
        if resume is not None and resume.prefill and exc.type == "invalid_request" and not failed.relayed:
            # This model refuses prefill (current Claude models: 400): ask with a user turn.
            recovery.prefill_refused(self._upstream, self._upstream_model)
            self._resume = _Resume(resume.said, recovery.continuation(conversation, resume.said, prefill=False))
            self.meter.close_round(discard=True)
            return True
        fallback = self.settings.fallback_provider
        if self.ttft_ms is None and fallback and fallback != self._upstream and not self._fell_back:
            self._fell_back = True
            self.emit({"type": "notice", "code": "fallback",
                       "message": f"{self._upstream} failed ({exc.type}); {fallback} is answering instead"})
            self._upstream, self._upstream_model = fallback, self.settings.default_model(fallback)
            self.meter.close_round(discard=True)
            return True
        said = failed.answer
        if (exc.type != "connection" or not said.strip() or failed.in_tool_call or self._recovered
                or not self.settings.midstream_recovery):
            # A drop inside a tool call is not continued as prose: its arguments would be lost.
            return False
        self._recovered = True
        self.emit({"type": "notice", "code": "upstream_reconnected",
                   "message": "The connection to the model dropped; the answer is being continued"})
        self.meter.close_round()
        prefill = recovery.prefill_allowed(self._upstream, self._upstream_model, self.spec.reasoning)
        self._resume = _Resume(said, recovery.continuation(conversation, said, prefill=prefill), prefill)
        return True

    def _round(self, provider: Provider, request: ProviderRequest, resume: _Resume | None) -> _Round:
        """One upstream call: relay its reasoning, text and tool calls, and return what it made.

        With `resume`, the call continues this round's answer after a drop: its text begins
        with what the client already has, and a repeat of that is filtered out.
        """
        # Kept on self: if the upstream drops mid-answer, `_retry_after` looks at it.
        state = self._state = _Round(text=[resume.said] if resume is not None else [])
        overlap = recovery.Overlap(resume.said) if resume is not None else None
        self.meter.open_round(sum(len(m.text) for m in request.messages) + len(request.system or ""))
        self.trace.upstream_start(provider.name, request.model)
        events = provider.stream(request)
        timer = _RoundTimer(gevent.getcurrent(), self.settings.first_token_timeout, self.settings.idle_timeout)
        try:
            for event in _timed(events, timer):
                self._take(event, state, overlap)
                if state.relayed and not timer.relayed:
                    timer.now_relayed()
        finally:
            timer.close()
            # Closing the provider's generator closes its upstream response (its `with`).
            events.close()
            self.trace.upstream_end(sys.exc_info()[1])
        if overlap is not None:
            self._relay_text(overlap.flush(), state)
        self.relay.flush()
        self.meter.close_round()
        return state

    def _take(self, event: ProviderEvent, state: _Round, overlap: recovery.Overlap | None) -> None:
        """Relay one provider event (or note it in `state`)."""
        if isinstance(event, TextDelta):
            if event.text:
                state.relayed = True
                self.meter.round_deltas += 1
                self._relay_text(overlap.push(event.text) if overlap is not None else event.text, state)
        elif isinstance(event, ReasoningDelta):
            if event.text:
                state.relayed = True
                self.meter.round_deltas += 1
                self.relay.flush()  # keep the order: text held by chunking goes first
                self._first_text()
                self.emit({"type": "reasoning", "content": event.text})
        elif isinstance(event, ToolCallStart):
            state.relayed = state.in_tool_call = True
        elif isinstance(event, ToolCall):
            state.relayed = state.in_tool_call = True
            self.relay.flush()
            self._first_text()
            state.calls.append(ToolCallPart(event.id, event.name, event.arguments))
            self.emit({"type": "tool_call", "id": event.id, "name": event.name, "arguments": event.arguments})
        elif isinstance(event, Opaque):
            state.opaque.append(event.block)
        elif isinstance(event, Usage):
            self.meter.reported(event)
        elif isinstance(event, Finish):
            state.stop = event.stop_reason

    def _relay_text(self, text: str, state: _Round) -> None:
        if text:
            state.text.append(text)
            self.relay.push(text)

    # -- endings: exactly one terminal event, then [DONE] --------------------------------------

    def _metrics(self) -> dict[str, Any]:
        self.duration_ms = int((time.monotonic() - self._t0) * 1000)
        return {"ttft_ms": self.ttft_ms, "duration_ms": self.duration_ms}

    def _end(self, state: str, payload: dict[str, Any], reason: str | None) -> None:
        if not self.running:
            return
        # Text held back (a partial word, a coalescing window) was received from the model:
        # it is sent before the terminal event, whatever the ending.
        try:
            self.relay.flush()
        except SluiceError as exc:  # that text passed the byte bound: say so, not "done"
            state, reason = "error", exc.type
            payload = {"type": "error", "error": exc.to_event_error()}
        self.state = state
        self.outcome_reason = reason
        self.ended_at = time.time()
        self.relay.stop()
        if self._grace is not None and self._grace is not gevent.getcurrent():
            self._grace.kill(block=False)
        self._grace = None
        self.emit(payload, terminal=True)
        self.emit(DONE, terminal=True)
        self._count_tokens()
        self.trace.end(state, self.stop_reason, self.usage(), reason)
        if self._on_end is not None:
            self._on_end(self)

    def _end_done(self) -> None:
        self._end(
            "done",
            {
                "type": "done",
                "stop_reason": self.stop_reason,
                "usage": self.usage(),
                "metrics": self._metrics(),
            },
            self.stop_reason,
        )

    def _end_cancelled(self, reason: str) -> None:
        usage = self.usage()
        self._metrics()
        self._end("cancelled", {"type": "cancelled", "reason": reason, "usage": usage}, reason)

    def _end_error(self, exc: SluiceError) -> None:
        self._metrics()
        self._end("error", {"type": "error", "error": exc.to_event_error()}, exc.type)

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The JSON of `GET /streams/<id>`."""
        return {
            "stream_id": self.id,
            "state": self.state,
            "provider": self.provider_name,
            "model": self.model,
            "created_at": self.created_at,
            "events": self.journal.last_seq,
            "usage": self.usage(),
            "stop_reason": self.stop_reason,
        }
