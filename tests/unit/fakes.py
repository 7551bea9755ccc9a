"""In-memory stand-ins for the registry's tests: a provider held at a gate, and a shared backend.

`FakeBackend` is to `app.backends.base.Backend` what httpx's MockTransport is to a transport:
the whole interface, in memory, one small fake per group (`ids`, `mirror`, `remote`, `slots`;
`ledger` and `revocations` are the in-process ones), with "the other workers" as plain dicts
a test fills in, and a record of what the registry asked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from gevent.event import Event

from app.backends.base import Feed, Local, Mirrored
from app.backends.ledger import LocalLedger
from app.backends.memory import LocalRevocations, LocalSlots
from app.backends.tombstones import tombstone_name
from app.providers.base import Finish, ProviderEvent, ProviderRequest, TextDelta, Usage


class GatedProvider:
    """Sends one token once `gate` is set, then ends the answer."""

    name = "demo"

    def __init__(self) -> None:
        self.gate = Event()
        self.waiting = Event()

    def stream(self, request: ProviderRequest) -> Generator[ProviderEvent, None, None]:
        yield Usage(input_tokens=1)
        self.waiting.set()
        self.gate.wait()
        yield TextDelta("hi")
        yield Usage(output_tokens=1)
        yield Finish("end_turn")


@dataclass
class Elsewhere:
    """A generation running on another worker, as the fake backend knows it."""

    owner: str | None = None
    state: str = "running"
    events: int = 1
    cancelled_by: list[str] = field(default_factory=list)

    def status(self, stream_id: str) -> dict[str, Any]:
        return {"stream_id": stream_id, "state": self.state, "provider": "demo", "model": "elsewhere",
                "created_at": 0.0, "events": self.events, "usage": {}, "stop_reason": None,
                "owner": self.owner}


class FakeIds:
    """Ids claimed by the other workers, and tombstones."""

    def __init__(self) -> None:
        self.claimed_elsewhere: set[str] = set()
        self.tombstones: set[str] = set()

    def claim(self, stream_id: str, ttl: float) -> bool | None:
        return stream_id not in self.claimed_elsewhere

    def add_tombstone(self, stream_id: str, ttl: float, principal: str | None) -> bool:
        self.tombstones.add(tombstone_name(stream_id, principal))
        return True

    def take_tombstone(self, stream_id: str, principal: str | None) -> bool:
        name = tombstone_name(stream_id, principal)
        found = name in self.tombstones
        self.tombstones.discard(name)
        return found


class FakeMirror:
    """A record of what the registry mirrored."""

    def __init__(self) -> None:
        self.views: dict[str, Mirrored] = {}
        self.urgent: list[str] = []  # ids whose change asked for an immediate write
        self.finished_ids: list[str] = []
        self.forgotten_ids: list[str] = []

    def add(self, view: Mirrored) -> None:
        self.views[view.id] = view

    def changed(self, stream_id: str, urgent: bool) -> None:
        if urgent:
            self.urgent.append(stream_id)

    def finished(self, stream_id: str, view: Mirrored) -> None:
        self.finished_ids.append(stream_id)
        self.views[stream_id] = view

    def forget(self, stream_id: str) -> None:
        self.forgotten_ids.append(stream_id)


class FakeRemote:
    """The other workers: their generations, who follows ours there, and counts per client."""

    def __init__(self) -> None:
        self.elsewhere: dict[str, Elsewhere] = {}
        self.followed_elsewhere: set[str] = set()

    def status(self, stream_id: str) -> dict[str, Any] | None:
        gen = self.elsewhere.get(stream_id)
        return None if gen is None else gen.status(stream_id)

    def feed(self, stream_id: str) -> Feed | None:
        return None  # following a remote stream is app.backends.redis's (tests/redis)

    def cancel(self, stream_id: str, reason: str, caller: str | None) -> str:
        gen = self.elsewhere.get(stream_id)
        if gen is None or (gen.owner is not None and gen.owner != caller):
            return "unknown"
        if gen.state != "running":
            return "finished"
        gen.state = "cancelled"
        gen.cancelled_by.append(reason)
        return "cancelled"

    def followed(self, stream_id: str) -> bool:
        return stream_id in self.followed_elsewhere


class FakeSlots(LocalSlots):
    """This worker's places, and the places the other workers hold (`elsewhere[(kind, client)]`)."""

    def __init__(self) -> None:
        super().__init__()
        self.elsewhere: Counter[tuple[str, str]] = Counter()

    def reserve(self, kind: str, client: str, limit: int) -> bool:
        return super().reserve(kind, client, limit - self.elsewhere[(kind, client)])


class FakeBackend:
    """A shared backend in memory (see the module docstring)."""

    shared = True

    def __init__(self) -> None:
        self.ids = FakeIds()
        self.mirror = FakeMirror()
        self.remote = FakeRemote()
        self.ledger = LocalLedger()  # budgets: the in-process one is the reference
        self.slots = FakeSlots()
        self.revocations = LocalRevocations()  # sessions: the in-process list is the reference
        self.local: Local | None = None
        self.closed = False

    def start(self, local: Local) -> None:
        self.local = local

    def settle(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def ready(self) -> tuple[bool, str]:
        return True, "fake"
