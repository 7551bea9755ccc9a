"""The in-process revocation list (`backend.revocations` without Redis): signed-out sessions."""

from __future__ import annotations

import time

from app.backends.memory import LocalRevocations, MemoryBackend
from app.config import Settings


def test_a_revoked_session_is_refused_and_others_are_not() -> None:
    revocations = LocalRevocations()
    revocations.revoke("sid-a", time.time() + 60)
    assert revocations.revoked("sid-a")
    assert not revocations.revoked("sid-b")


def test_expired_entries_are_dropped_on_the_next_revoke() -> None:
    revocations = LocalRevocations()
    revocations.revoke("old", time.time() - 1)  # its cookie has expired: nothing left to refuse
    revocations.revoke("new", time.time() + 60)
    assert not revocations.revoked("old") and revocations.revoked("new")


def test_the_memory_backend_has_a_revocation_list() -> None:
    backend = MemoryBackend(Settings.from_env({"SLUICE_PROVIDER": "demo"}))
    backend.revocations.revoke("sid", time.time() + 60)
    assert backend.revocations.revoked("sid")
