"""A reload's handover: the old workers accept until a worker of the new generation has booted.

On HUP gunicorn's master forks the new workers and SIGTERMs the old ones at once. A new worker
needs seconds of CPU before it accepts (importing the vendor SDKs, the app); had the old ones
stopped accepting on SIGTERM, every request of those seconds would wait for that boot.

`Board` is a few bytes of memory shared by gunicorn's master and every worker it forks
(anonymous, MAP_SHARED, made in the master before any fork by deploy/gunicorn.conf.py):

- the master writes there, when a reload begins, the age (gunicorn's spawn counter) of the last
  worker it had spawned: every worker up to that age is of the old generation;
- a worker writes its age once it has booted (gunicorn's `post_worker_init`: the app is loaded,
  the worker accepts next);
- a worker SIGTERMed by a reload that began after its own spawn, while no newer worker has
  booted, keeps accepting (and sending its heartbeat) until one has, for at most `HANDOVER_MAX`
  seconds (and half its graceful timeout), then drains as on any SIGTERM
  (`app.process.shutdown`). A stop (TERM to the master) is no reload: its workers drain at
  once.

Loaded by the master from this file, not as part of the `app` package (importing that in the
master would load Flask and the SDKs before gevent patches the workers): no app imports here.
"""

from __future__ import annotations

import mmap
import struct

HANDOVER_MAX = 60.0  # seconds an old worker waits for the new generation before draining anyway

_LAYOUT = struct.Struct("=qq")  # last old age at the latest reload, highest booted age
_RELOAD, _BOOTED = 0, 1


class Board:
    """The generations of one gunicorn master, shared with its workers (see the module doc)."""

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, _LAYOUT.size)  # anonymous and shared: inherited by every fork

    def _read(self) -> tuple[int, int]:
        reload_age, booted_age = _LAYOUT.unpack_from(self._mem, 0)
        return int(reload_age), int(booted_age)

    def reload_begins(self, last_age: int) -> None:
        """In the master, before a reload spawns: workers up to `last_age` are the old generation."""
        _, booted = self._read()
        _LAYOUT.pack_into(self._mem, 0, last_age, booted)

    def booted(self, age: int) -> None:
        """In a worker that has booted (it accepts next)."""
        reload_age, booted = self._read()
        if age > booted:  # only grows; two workers booting together may race: either age is new
            _LAYOUT.pack_into(self._mem, 0, reload_age, age)

    def replacing(self, age: int) -> bool:
        """A reload that began after worker `age` was spawned has no booted new worker yet."""
        reload_age, booted = self._read()
        return reload_age >= age and booted <= reload_age
