"""This worker's generations: start, find, cancel, forget, drain. The backend answers for the rest."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol

import gevent

from app.backends.base import Backend, Feed, Mirrored
from app.config import Settings
from app.errors import RequestError
from app.lifecycle.budget import Budgets, Hold
from app.lifecycle.ended import Ended
from app.lifecycle.generation import Generation, ProviderFactory
from app.lifecycle.replays import Replays
from app.lifecycle.slots import Slot
from app.lifecycle.spec import GenerationSpec
from app.lifecycle.usage import BREAKDOWN
from app.observability import metrics
from app.observability.logging import log_generation
from app.observability.tracing import Tracing
from app.sse import Entry

log = logging.getLogger("sluice.registry")

SETTLE_MAX = 30.0  # s a drained worker waits at most for Redis to take its endings
RESPONSES = "responses"  # the slots of open event-stream responses (SLUICE_MAX_RESPONSES_PER_CLIENT)
GENERATIONS = "generations"  # the slots of running generations (SLUICE_MAX_STREAMS_PER_CLIENT)


def visible_to(owner: str | None, principal: str | None) -> bool:
    """A generation is its owner's alone; one started with authentication off is everyone's."""
    return owner is None or owner == principal


def new_stream_id() -> str:
    """22 characters of URL-safe base64: 128 random bits, unguessable."""
    return secrets.token_urlsafe(16)


class GenerationView:
    """What the backend sees of a generation (`Mirrored`): its events and status, nothing to steer."""

    __slots__ = ("_gen",)

    def __init__(self, gen: Generation) -> None:
        self._gen = gen

    @property
    def id(self) -> str:
        return self._gen.id

    @property
    def owner(self) -> str | None:
        return self._gen.owner

    @property
    def client(self) -> str:
        return self._gen.client

    @property
    def running(self) -> bool:
        return self._gen.running

    @property
    def ended(self) -> bool:
        return not self._gen.running and self._gen.journal.closed

    def events_after(self, seq: int, limit: int | None = None) -> Sequence[Entry]:
        journal = self._gen.journal
        return journal.after(seq, journal.last_seq if limit is None else limit)

    def status(self) -> dict[str, Any]:
        return self._gen.status()



class _Closable(Protocol):
    def close(self) -> None: ...


class WrittenElsewhere(Protocol):
    """Responses the worker's server no longer counts (written from the event loop)."""

    def writing(self) -> Sequence[_Closable]: ...

    def deciding(self) -> int: ...


class Registry:
    """Generations owned by this worker, plus the backend for the ones it does not own."""

    def __init__(self, settings: Settings, backend: Backend, providers: ProviderFactory) -> None:
        self.settings = settings
        self.backend = backend
        self.providers = providers
        self.local: dict[str, Generation] = {}  # running here (and ending: see `finished`)
        # Ended here and still replayable (SLUICE_REPLAY_TTL_SECONDS, SLUICE_REPLAY_MAX_BYTES).
        self.replays = Replays(settings.replay_ttl_seconds, settings.replay_max_bytes, backend.mirror.forget)
        self.draining = False
        self.closing = False  # past the drain deadline: what still runs is being ended
        self._live = 0  # running generations, counted: `running()` lists them (a walk of `local`)
        self._started = False
        self.tracing = Tracing(settings.otel_traces)
        self.budgets = Budgets(settings, backend.ledger)
        self._holds: dict[str, Hold] = {}  # budget reservations of running generations, by id
        self._followed_elsewhere = backend.remote.followed  # bound once: shared by every generation

    def ensure_started(self) -> None:
        """Start the backend's background work on first use (never at import time)."""
        if not self._started:
            self._started = True
            self.backend.start(self)

    # -- counts -------------------------------------------------------------------------------

    def running(self) -> list[Generation]:
        """This worker's generations that are still running (what SLUICE_MAX_STREAMS bounds)."""
        return [g for g in self.local.values() if g.running]

    # -- open responses -----------------------------------------------------------------------

    def open_response(self, client: str) -> Slot:
        """A place for one more event-stream response of `client` (SLUICE_MAX_RESPONSES_PER_CLIENT,
        on every worker and host), or `RequestError` 429. The response's body releases it."""
        slots = self.backend.slots
        if not slots.reserve(RESPONSES, client, self.settings.max_responses_per_client):
            raise RequestError(429, "Too many open streams for this client; close one first",
                               type="rate_limit", headers={"Retry-After": "5"})
        return Slot(partial(slots.release, RESPONSES, client))

    # -- start --------------------------------------------------------------------------------

    def create(
        self,
        spec: GenerationSpec,
        *,
        owner: str | None,
        client: str,
        attached: bool = False,
        trace_headers: Mapping[str, str] | None = None,
    ) -> Generation:
        """Start a generation, or raise `RequestError` (503 draining/at capacity, 429, 409).

        `trace_headers`: the request's headers, for a `traceparent` to continue (tracing on).
        """
        # A worker that drains has stopped accepting (app.process.shutdown); a request that
        # still reached it is served, within the drain deadline, rather than refused.
        if self.closing:
            raise RequestError(503, "The server is restarting; try again in a moment", type="overloaded",
                               headers={"Retry-After": "2"})
        if self._live >= self.settings.max_streams:
            raise RequestError(503, "The server is at capacity; try again shortly", type="overloaded",
                               headers={"Retry-After": "5"})
        # Both counts are taken here, before anything below yields to another request (the Redis
        # calls do), and given back if the start fails: checked and counted in one step, so
        # parallel requests cannot all pass the check first (issue 22).
        self._live += 1
        slots = self.backend.slots
        reserved = False
        hold: Hold | None = None
        try:
            reserved = slots.reserve(GENERATIONS, client, self.settings.max_streams_per_client)
            if not reserved:
                raise RequestError(429, "Too many streams running for this client; wait for one to end",
                                   type="rate_limit", headers={"Retry-After": "5"})
            stream_id = spec.stream_id or new_stream_id()
            if stream_id in self.local or stream_id in self.replays:
                raise RequestError(409, "stream_id is already in use", field="stream_id")
            # Before the claim: a refusal (429) must leave the id free for a retry.
            spec, hold = self.budgets.reserve(spec, owner or client)
            claimed = self.backend.ids.claim(stream_id, self.settings.max_duration + 60)
            if claimed is None and spec.stream_id:
                # Redis cannot tell whether another worker runs this client-chosen id (a
                # server-made id is 128 random bits: nobody else has it).
                raise RequestError(
                    503, "The server cannot check now that this stream_id is free; try again shortly,"
                    " or start without a stream_id", type="overloaded", field="stream_id",
                    headers={"Retry-After": "1"})
            if claimed is False:
                raise RequestError(409, "stream_id is already in use", field="stream_id")
            cancelled = self.backend.ids.take_tombstone(stream_id, owner)
            backend = self.backend
            gen = Generation(
                stream_id, spec, self.settings, self.providers,
                owner=owner, client=client,
                # Nobody reads the mirror of a backend that shares nothing: not a call per event.
                mirror=backend.mirror if backend.shared else None,
                followed_elsewhere=self._followed_elsewhere,
                watcher=self,
                trace=self.tracing.generation(trace_headers, provider=spec.provider, model=spec.model, spec=spec),
            )
        except BaseException:
            self._live -= 1
            if reserved:
                slots.release(GENERATIONS, client)
            if hold is not None:
                self.budgets.settle(hold, {})
            raise
        if hold is not None:
            self._holds[stream_id] = hold
        self.local[stream_id] = gen
        metrics.generation_started()
        view: Mirrored = GenerationView(gen)
        self.backend.mirror.add(view)
        if attached:
            gen.feed.attach()
        gen.start(cancelled=cancelled)
        return gen

    # -- what a generation tells its registry (`generation.Watcher`) ----------------------------

    def relayed(self, deltas: int) -> None:
        """Text deltas relayed, in bulk: `sluice_tokens_relayed_total`."""
        metrics.text_deltas_relayed(deltas)

    def ending(self, gen: Generation) -> None:
        """Charge a generation's budget what it used (see app.lifecycle.budget)."""
        hold = self._holds.pop(gen.id, None)
        if hold is not None:
            self.budgets.settle(hold, gen.usage())

    def finished(self, gen: Generation) -> None:
        """A generation ended: its slot back, metrics, its log line; keep what replays need."""
        self._live -= 1
        self.backend.slots.release(GENERATIONS, gen.client)
        usage = gen.usage()
        self.ending(gen)  # already done, unless the generation never got to its ending
        metrics.generation_finished(
            gen.state, gen.outcome_reason,
            None if gen.ttft_ms is None else gen.ttft_ms / 1000.0, (gen.duration_ms or 0) / 1000.0,
        )
        metrics.tokens_used(gen.upstream, usage)
        if gen.state == "error":
            metrics.upstream_error(gen.outcome_reason or "internal")
        fields: dict[str, Any] = {
            "event": "generation_end",
            "stream_id": gen.id,
            "provider": gen.provider_name,
            "model": gen.model,
            "outcome": gen.state,
            "reason" if gen.state != "error" else "error_type": gen.outcome_reason,
            "ttft_ms": gen.ttft_ms,
            "input_tokens": usage.get("input_tokens"),
            "output_tokens": usage.get("output_tokens"),
            **{k: usage[k] for k in BREAKDOWN if k in usage},
            "usage_estimated": bool(usage.get("estimated")),
            "duration_ms": gen.duration_ms,
        }
        if self.settings.log_content:
            fields["prompt"] = gen.spec.prompt_text
            fields["answer"] = gen.relay.answer
        log_generation(fields, content=self.settings.log_content)
        # From here on only its events and status are kept (compressed), not the Generation:
        # responses that follow it hold its feed (the journal) until they have sent its end.
        ended = Ended(gen, self.replays.expires())
        if self.local.get(gen.id) is gen:
            del self.local[gen.id]
        self.backend.mirror.finished(gen.id, ended)
        self.replays.keep(ended)

    def find(self, stream_id: str) -> Generation | Ended | None:
        """This worker's generation `stream_id`, running or ended (and still replayable)."""
        gen = self.local.get(stream_id)
        return gen if gen is not None else self.replays.get(stream_id)

    # -- lookups ------------------------------------------------------------------------------

    def feed(self, stream_id: str, principal: str | None = None) -> Feed | None:
        """Where to read `stream_id`'s events from: this worker, or the shared backend.

        None, as for an unknown id, when the generation belongs to another principal.
        """
        gen = self.find(stream_id)
        if gen is not None:
            feed: Feed | None = gen.feed if isinstance(gen, Generation) else gen
        else:
            feed = self.backend.remote.feed(stream_id)
        return feed if feed is not None and visible_to(feed.owner, principal) else None

    def status(self, stream_id: str, principal: str | None = None) -> dict[str, Any] | None:
        """The JSON status, or None when unknown or another principal's."""
        gen = self.find(stream_id)
        if gen is not None:
            return gen.status() if visible_to(gen.owner, principal) else None
        status = self.backend.remote.status(stream_id)
        # The owner travels with the status from Redis; it is checked here, never shown.
        if status is None or not visible_to(status.pop("owner", None), principal):
            return None
        return status

    # -- cancel -------------------------------------------------------------------------------

    # -- what the backend asks on behalf of the other workers (app.backends.base.Local) ---------

    def cancel_local(self, stream_id: str, reason: str, principal: str | None) -> bool:
        """A cancel sent from another worker: stop `principal`'s generation running here."""
        gen = self.find(stream_id)
        return gen is not None and visible_to(gen.owner, principal) and gen.cancel(reason)

    def followers_left(self, stream_id: str) -> None:
        """Clients following through other workers left: nobody here either starts the grace."""
        gen = self.local.get(stream_id)
        if gen is not None:
            gen.feed.attendance.recheck()

    def unattended(self) -> list[str]:
        """Running generations nobody follows here, with no disconnect grace counting down."""
        return [sid for sid, gen in self.local.items() if gen.feed.attendance.unattended]

    def cancel(self, stream_id: str, caller: str | None) -> tuple[int, dict[str, Any]]:
        """POST /cancel by `caller` (the principal asking; None with authentication off):
        (status, body) per the contract."""
        gen = self.find(stream_id)
        if gen is not None and visible_to(gen.owner, caller):
            if gen.cancel("user"):
                gen.join(timeout=1.0)  # the terminal event is in the journal before we answer
                # The producer may have run to its end before the kill reached it (its last
                # bytes were already in): answer what happened, not what was asked.
                if gen.state in ("running", "cancelled"):
                    return 200, {"stream_id": stream_id, "status": "cancelled"}
            return 200, {"stream_id": stream_id, "status": "finished"}
        if gen is None:
            outcome = self.backend.remote.cancel(stream_id, "user", caller)
            if outcome in ("cancelled", "finished"):
                return 200, {"stream_id": stream_id, "status": outcome}
            # Unknown, or not the caller's: remember it, and answer exactly the same either way.
            if outcome == "unreachable" or not self.backend.ids.add_tombstone(
                stream_id, self.settings.cancel_tombstone_seconds, caller
            ):
                # Redis cannot tell where it runs, nor keep the early cancel: say so, not 202.
                raise RequestError(503, "The server cannot reach this stream now; send the cancel again shortly",
                                   type="overloaded", headers={"Retry-After": "1"})
        return 202, {"stream_id": stream_id, "status": "pending"}

    # -- shutdown -----------------------------------------------------------------------------

    def drain(self, grace: float, limit: float | None = None, serving: Callable[[], int] | None = None,
              elsewhere: WrittenElsewhere | None = None) -> None:
        """Let running generations, and the requests this worker is serving (`serving()`: how
        many; gunicorn's connections, see shutdown.install), finish for `grace` s; then refuse
        new generations and cancel what still runs.

        A request the worker had read before it stopped accepting may still start a generation,
        after a wait on Redis: finding no generation running is not the end of the drain, or the
        backend would be closed under it and the worker exit under its stream.

        Then wait, up to SETTLE_MAX s and until `limit` s after the start of the drain (default:
        `grace` + 2 s), for the backend to publish every ending, and for every stream written
        from the event loop (`elsewhere`: `app.delivery.loop_writer`) to have written its own: the worker exits
        once this returns (see shutdown.install).
        """
        if self.draining:
            return
        self.draining = True
        log.info("draining: %d generations running, %.0f s to finish", len(self.running()), grace)
        start = time.monotonic()
        deadline = start + grace
        end = start + (grace + 2.0 if limit is None else max(grace, limit))
        while (self.running() or (serving is not None and serving())) and time.monotonic() < deadline:
            gevent.sleep(0.1)
        self.closing = True
        left = self.running()
        for gen in left:
            gen.cancel("shutdown")
        for gen in left:
            gen.join(timeout=max(0.0, min(2.0, end - time.monotonic())))
        # An ending written while Redis was down is still to be mirrored: other workers and
        # hosts must learn how those streams ended (a follower resuming there would get 204).
        self.backend.settle(min(SETTLE_MAX, end - time.monotonic()))
        # Streams written from the event loop (they went on writing meanwhile) are no connection
        # gunicorn waits for: wait here until they have written their ending; close what is left.
        if elsewhere is not None:
            while (elsewhere.writing() or elsewhere.deciding()) and time.monotonic() < end:
                gevent.sleep(0.05)
            for response in elsewhere.writing():
                response.close()
        self.backend.close()
