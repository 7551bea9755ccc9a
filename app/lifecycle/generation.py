"""One generation's life: its journal, its state, and exactly one ending.

    provider ──next()──▶ producer greenlet ──append──▶ Journal ◀── LocalFeed ◀── readers (HTTP responses)
                               ▲
     cancel / disconnect / timeout / shutdown: one path — the greenlet is killed (or a deadline
     fires) *while it is blocked in the provider's socket read*; the exception unwinds through
     the provider's `with` block, which closes the upstream HTTP response (the model stops, the
     bill stops), and `_run` turns it into exactly one terminal event.

A flag checked between chunks would do nothing while the model is silent; killing the greenlet
works wherever it is blocked. The rounds themselves are the producer's (`producer.py`, which
also yields to the other greenlets now and then), the deadlines `deadlines.py`'s; what readers
see of it is `local_feed.py`'s, who follows and the disconnect grace `attendance.py`'s.

What varies is injected, by the registry: the `Mirror` that copies each event for the other
workers (none without a shared backend), whether clients follow through other workers
(`followed_elsewhere`), the `Trace`, and the `Watcher` that hears how it went (budgets,
metrics, the log line, replay).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import gevent
from gevent import Greenlet, GreenletExit
from gevent.hub import get_hub

from app.backends.base import Mirror
from app.config import Settings
from app.errors import SluiceError, UpstreamError
from app.lifecycle.attendance import Attendance
from app.lifecycle.deadlines import Deadline
from app.lifecycle.journal import Journal, JournalFull
from app.lifecycle.local_feed import LocalFeed
from app.lifecycle.producer import Producer, ProviderFactory
from app.lifecycle.spec import GenerationSpec
from app.lifecycle.text_relay import TextRelay
from app.lifecycle.usage import UsageMeter
from app.observability import greenlets
from app.observability.tracing import NO_TRACE, Trace
from app.sse import DONE, Entry

__all__ = ["UNWATCHED", "Generation", "ProviderFactory", "Watcher"]

log = logging.getLogger("sluice.generation")


class Watcher(Protocol):
    """Who hears how a generation goes, besides its readers (the registry: budgets, metrics,
    the log line, replay). Called in the generation's own greenlet, or where it was cancelled."""

    def relayed(self, deltas: int) -> None:
        """`deltas` more text deltas were relayed (in bulk: see `producer.FAIR_SHARE`)."""

    def ending(self, gen: Generation) -> None:
        """Its usage is final and its terminal event not yet in (a client that reads that event
        then finds the budget already settled)."""

    def finished(self, gen: Generation) -> None:
        """Its terminal event and `[DONE]` are in."""


class _Unwatched:
    """Nobody to tell (a generation made outside a registry: tests, benchmarks)."""

    def relayed(self, deltas: int) -> None:
        pass

    def ending(self, gen: Generation) -> None:
        pass

    def finished(self, gen: Generation) -> None:
        pass


UNWATCHED: Watcher = _Unwatched()


def _nobody_elsewhere(stream_id: str) -> bool:
    return False


class _ProducerGreenlet(Greenlet):  # type: ignore[misc]  # gevent ships no stubs
    """The producer's greenlet, without the spawning stack gevent records by default.

    That record is ten frame objects per stream (the request's call chain), kept as long as
    the stream runs, for debugging tools nothing here uses.
    """

    spawning_stack_limit = 0


class Generation:
    """A generation: its spec, its journal, its state, and the greenlet that produces it.

    Readers do not read it: they follow its `feed` (a `LocalFeed`).
    """

    # One per open stream: no per-instance dict.
    __slots__ = (
        "id", "spec", "settings", "providers", "client", "journal", "feed",
        "state", "outcome_reason", "stop_reason", "created_at", "_t0", "ttft_ms", "duration_ms",
        "relay", "meter", "producer", "trace", "watcher", "_mirror",
        "_greenlet", "_producing", "_cancel_reason", "_full",
    )

    def __init__(
        self,
        stream_id: str,
        spec: GenerationSpec,
        settings: Settings,
        providers: ProviderFactory,
        *,
        owner: str | None = None,
        client: str = "",
        mirror: Mirror | None = None,
        followed_elsewhere: Callable[[str], bool] = _nobody_elsewhere,
        watcher: Watcher = UNWATCHED,
        trace: Trace = NO_TRACE,
    ) -> None:
        self.id = stream_id
        self.spec = spec
        self.settings = settings
        self.providers = providers
        self.client = client
        self.journal = Journal(stream_id, settings.max_stream_bytes)
        attendance = Attendance(stream_id, settings.disconnect_grace_seconds, self._nobody_left, followed_elsewhere)
        self.feed = LocalFeed(stream_id, owner, self.journal, attendance)
        self.state = "running"
        self.outcome_reason: str | None = None
        self.stop_reason: str | None = None  # the model's (end_turn, max_tokens...); a cancel's is _cancel_reason
        self.created_at = time.time()
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
        self.meter = UsageMeter()
        self.producer = Producer(self)
        self.trace = trace
        self.watcher = watcher
        self._mirror = mirror  # each event, for the other workers: None when nobody else reads it
        self._greenlet: Greenlet | None = None
        self._producing = False  # the producer greenlet has begun (`running` is the state)
        self._cancel_reason = "shutdown"
        self._full = False  # the journal reached its byte bound: only the ending goes in now

    @property
    def owner(self) -> str | None:
        """The principal that started it (None: authentication off)."""
        return self.feed.owner

    @property
    def provider_name(self) -> str:
        """The provider the request asked for (`upstream`: the one answering)."""
        return self.spec.provider

    @property
    def model(self) -> str:
        """The model the request asked for."""
        return self.spec.model

    # -- events -------------------------------------------------------------------------------

    def emit(self, payload: dict[str, Any] | str, *, terminal: bool = False) -> Entry | None:
        """Append an event to the journal (and mirror it to the shared backend, if any).

        Past the journal's byte bound the generation ends with an error (see `_overflow`); only a
        `terminal` event (the ending and `[DONE]`) always goes in. None: the event was refused.
        """
        return self._add(self.journal.append, payload, terminal)

    def emit_text(self, text: str) -> Entry | None:
        """`emit` for a `text` event: the hot path (see `Journal.append_text`)."""
        return self._add(self.journal.append_text, text, False)

    def _add(self, add: Callable[..., Entry], item: Any, terminal: bool) -> Entry | None:
        if self._full and not terminal:
            return None
        try:
            entry = add(item, bounded=not terminal)
        except JournalFull:
            self._overflow()
            return None
        if self._mirror is not None:
            self._mirror.changed(self.id, entry.done)
        return entry

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
        self.feed.attendance.begin()

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

    def _nobody_left(self) -> None:
        # The disconnect grace ran out with nobody following, here or elsewhere (`Attendance`).
        self.cancel("disconnect")

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
        self.relay.stop()
        self.feed.attendance.end()
        self.watcher.ending(self)
        self.emit(payload, terminal=True)
        self.emit(DONE, terminal=True)
        self.trace.end(state, self.stop_reason, self.usage(), reason)
        self.watcher.finished(self)
        self._release()

    def _release(self) -> None:
        """Ended: drop what only the run needed, now. The relay and producer refer back to this
        generation, so without this the prompt and the round's deltas would wait for a full
        garbage collection. (Responses still following it hold only its feed.)"""
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
