"""One generation's life: its journal, its state, and exactly one ending.

    provider ──next()──▶ producer greenlet ──append──▶ Journal ──▶ subscribers (HTTP responses)
                               ▲
     cancel / disconnect / timeout / shutdown: one path — the greenlet is killed (or a deadline
     fires) *while it is blocked in the provider's socket read*; the exception unwinds through
     the provider's `with` block, which closes the upstream HTTP response (the model stops, the
     bill stops), and `_run` turns it into exactly one terminal event.

A flag checked between chunks would do nothing while the model is silent; killing the greenlet
works wherever it is blocked. The rounds themselves are the producer's (`producer.py`), the
deadlines `deadlines.py`'s, who follows and the disconnect grace `attendance.py`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import gevent
from gevent import Greenlet, GreenletExit
from gevent.event import Event
from gevent.hub import get_hub

from app.config import Settings
from app.errors import SluiceError, UpstreamError
from app.lifecycle.attendance import Attendance
from app.lifecycle.deadlines import Deadline
from app.lifecycle.journal import Journal, JournalFull
from app.lifecycle.producer import Producer, ProviderFactory
from app.lifecycle.spec import GenerationSpec
from app.lifecycle.text_relay import TextRelay
from app.lifecycle.usage import UsageMeter
from app.observability import greenlets, metrics
from app.observability.tracing import NO_TRACE, NoTrace
from app.sse import DONE, Entry

__all__ = ["FAIR_SHARE", "Generation", "ProviderFactory"]

log = logging.getLogger("sluice.generation")

FAIR_SHARE = 64  # text deltas relayed between yields to the other greenlets (and metric updates)


class _ProducerGreenlet(Greenlet):  # type: ignore[misc]  # gevent ships no stubs
    """The producer's greenlet, without the spawning stack gevent records by default.

    That record is ten frame objects per stream (the request's call chain), kept as long as
    the stream runs, for debugging tools nothing here uses.
    """

    spawning_stack_limit = 0


class Generation:
    """A generation: its spec, its journal, its state, and the greenlet that produces it."""

    # One per open stream: no per-instance dict.
    __slots__ = (
        "id", "spec", "settings", "providers", "owner", "client", "provider_name", "model", "journal",
        "state", "outcome_reason", "stop_reason", "created_at", "ended_at", "_t0", "ttft_ms", "duration_ms",
        "relay", "_attendance", "_on_entry", "_on_ending", "_on_end", "trace", "meter", "producer", "_greenlet",
        "_producing", "_cancel_reason", "_full", "_counted",
    )
    lost = False  # as a Feed: a local journal is never trimmed

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
        on_ending: Callable[[Generation], None] | None = None,
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
            on_first=self.first_output,
        )
        self._attendance = Attendance(self._grace_expired)
        self._on_entry = on_entry
        self._on_end = on_end
        self._on_ending = on_ending  # before the terminal event: its usage is final (budgets)
        self.trace = trace
        self.meter = UsageMeter()
        self.producer = Producer(self)
        self._greenlet: Greenlet | None = None
        self._producing = False  # the producer greenlet has begun (`running` is the state)
        self._cancel_reason = "shutdown"
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
            self._count_deltas()
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

    def _count_deltas(self) -> None:
        # In bulk: a Prometheus update per delta would cost more than relaying the delta.
        metrics.text_deltas_relayed(self.relay.deltas - self._counted)
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
        """The state is `running`: no terminal event yet."""
        return self.state == "running"

    @property
    def upstream(self) -> str:
        """The provider answering: the request's, or the fallback once it took over."""
        return self.producer.upstream

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
        start: dict[str, Any] = {
            "type": "start",
            "stream_id": self.id,
            "provider": self.provider_name,
            "model": self.model,
            "cancel_url": "/cancel",
            "profile": self.spec.profile,
        }
        if self.spec.requested_max_tokens is not None:
            # The budget had room for a shorter answer only (app.lifecycle.budget).
            start["max_tokens"] = self.spec.max_tokens
            start["max_tokens_lowered_from"] = self.spec.requested_max_tokens
        self.emit(start)
        if cancelled:
            self._end_cancelled("user")
            return
        self._greenlet = greenlets.spawn(self._run, cls=_ProducerGreenlet)
        if self._attendance.count == 0:
            # Created without a reader (POST /streams): give the client time to attach.
            self._attendance.arm(max(self.settings.disconnect_grace_seconds, 10.0))

    def cancel(self, reason: str = "user") -> bool:
        """Stop the generation; True if it was running. Returns at once (the kill is async)."""
        if not self.running:
            return False
        self._cancel_reason = reason
        if not self._producing or self._greenlet is None:
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

    # -- subscribers (see `Attendance`) ------------------------------------------------------

    @property
    def subscribers(self) -> int:
        """Clients following this generation through this worker."""
        return self._attendance.count

    def attach(self) -> None:
        """A subscriber arrived: it stops a pending disconnect cancel."""
        self._attendance.attach()

    def detach(self) -> None:
        """A subscriber left: with nobody left, cancel after the grace period."""
        if self._attendance.detach() and self.running:
            self._attendance.arm(self.settings.disconnect_grace_seconds)

    @property
    def unattended(self) -> bool:
        """Running, with no subscriber here and no disconnect grace counting down."""
        return self.running and self._attendance.count == 0 and not self._attendance.counting_down

    def recheck_attached(self) -> None:
        """Remote followers left (or vanished): start the grace if nobody follows here either."""
        if self.unattended:
            self._attendance.arm(self.settings.disconnect_grace_seconds)

    def _grace_expired(self) -> None:
        if self._attendance.count == 0 and self.running and not self.remote_subscribers():
            self.cancel("disconnect")

    def remote_subscribers(self) -> bool:
        """Overridden by the shared backend: are clients attached through other workers?"""
        return False

    def first_output(self) -> None:
        """The first output (text, reasoning or a tool call) reached the client: the TTFT."""
        if self.ttft_ms is None:
            self.ttft_ms = int((time.monotonic() - self._t0) * 1000)
            self.trace.first_chunk()

    def usage(self) -> dict[str, Any]:
        """Token usage so far (see `UsageMeter`)."""
        return self.meter.as_dict()

    # -- the producer's greenlet: whatever ends it, one ending ------------------------------

    def _run(self) -> None:
        self._producing = True
        # A bare libev timer rather than a `gevent.Timeout` and its exception made up front: it
        # runs as long as the stream, so that is memory per open stream.
        deadline = get_hub().loop.timer(self.settings.max_duration)
        deadline.start(self._max_duration_passed)
        try:
            self.stop_reason = self.producer.run()
            if self.spec.response_format == "json":
                self.relay.finish_json()
            self._end_done()
        except GreenletExit:
            self._end_cancelled(self._cancel_reason)
        except Deadline as exc:
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

    def _max_duration_passed(self) -> None:
        # In the hub, while the producer is blocked: the Deadline is raised where it waits, as
        # `RoundTimer` does for the first-token and idle deadlines.
        if self._greenlet is not None and not self._greenlet.dead:
            self._greenlet.throw(Deadline("max_duration", self.settings.max_duration))

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
        self._attendance.stop()
        if self._on_ending is not None:
            # A client that reads the terminal event then finds the budget already settled.
            self._on_ending(self)
        self.emit(payload, terminal=True)
        self.emit(DONE, terminal=True)
        self._count_deltas()
        self.trace.end(state, self.stop_reason, self.usage(), reason)
        if self._on_end is not None:
            self._on_end(self)
        self._release()

    def _release(self) -> None:
        """Ended: drop what only the run needed, now. The relay, producer and attendance refer
        back to this generation, so without this the prompt and the round's deltas would wait
        for a full garbage collection (responses still following it hold it meanwhile)."""
        self.spec = replace(self.spec, messages=(), system=None)
        self.producer.release()
        self.relay.parts = []

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
