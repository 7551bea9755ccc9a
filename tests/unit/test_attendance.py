"""Attendance: the disconnect grace runs while nobody follows here, and decides with what it was given."""

from __future__ import annotations

import gevent
import pytest

from app.lifecycle.attendance import Attendance

pytestmark = pytest.mark.timeout(10)

GRACE = 0.05


def watched(followed_elsewhere: bool = False) -> tuple[Attendance, list[str]]:
    left: list[str] = []
    return Attendance("s" * 22, GRACE, lambda: left.append("left"), lambda stream_id: followed_elsewhere), left


def test_the_last_reader_leaving_starts_the_grace_and_a_return_stops_it() -> None:
    attendance, left = watched()
    attendance.attach()
    attendance.detach()
    assert attendance.counting_down
    attendance.attach()
    gevent.sleep(GRACE * 3)
    assert left == [] and not attendance.counting_down


def test_nobody_back_within_the_grace_is_a_leave() -> None:
    attendance, left = watched()
    attendance.attach()
    attendance.detach()
    gevent.sleep(GRACE * 3)
    assert left == ["left"]


def test_readers_through_other_workers_keep_it_and_a_recheck_starts_the_grace_again() -> None:
    attendance, left = watched(followed_elsewhere=True)
    attendance.attach()
    attendance.detach()
    gevent.sleep(GRACE * 3)
    assert left == [] and attendance.unattended
    attendance.recheck()
    assert attendance.counting_down and not attendance.unattended


def test_once_ended_nothing_is_armed_or_left() -> None:
    attendance, left = watched()
    attendance.attach()
    attendance.end()
    attendance.detach()
    attendance.recheck()
    gevent.sleep(GRACE * 3)
    assert left == [] and not attendance.counting_down and not attendance.unattended


def test_a_generation_without_a_reader_waits_for_its_first_one_at_least_the_first_reader_time() -> None:
    attendance, left = watched()
    attendance.begin()
    assert attendance.counting_down
    gevent.sleep(GRACE * 3)
    assert left == [], "a POST /streams client gets FIRST_READER_SECONDS to attach"
    attendance.end()
