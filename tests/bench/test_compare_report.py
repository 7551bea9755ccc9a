"""The report judges issue 19's memory target only where both servers keep up: a peer that
falls behind has users waiting, which cost it no memory, so its figure per N is too low."""

from __future__ import annotations

from typing import Any

from bench.compare_report import targets


def step(n: int, kb_end: float, holds: bool, answering: int | None = None) -> dict[str, Any]:
    return {"n": n, "holds": holds, "kb_per_stream": kb_end - 5, "kb_per_stream_end": kb_end,
            "answering_at_end": n if answering is None else answering, "cpu_us_per_token": 100.0,
            "ttft_added": {"p50": 0.004, "p99": 0.01}, "cancel": {"p99": 0.01, "n": 5}}


def memory_row(fastapi: list[dict[str, Any]], sluice: list[dict[str, Any]]) -> str:
    run = {"config": {"reference": 300}, "servers": [{"key": "fastapi", "label": "FastAPI", "steps": fastapi},
                                                     {"key": "sluice", "label": "Sluice", "steps": sluice}]}
    return next(line for line in targets(run).splitlines() if "issue 19" in line)


def test_met_only_when_every_step_both_hold_is_within_0_8() -> None:
    row = memory_row([step(100, 68, True), step(300, 60, True)], [step(100, 40, True), step(300, 50, True)])
    assert "N=300: 50 KB vs 60 KB (0.83×)" in row and row.endswith("| not met |")
    row = memory_row([step(100, 68, True), step(300, 65, True)], [step(100, 40, True), step(300, 50, True)])
    assert row.endswith("| **met** |")


def test_a_step_the_peer_does_not_hold_is_shown_but_not_judged() -> None:
    row = memory_row([step(100, 68, True), step(300, 52, False, answering=180)],
                     [step(100, 40, True), step(300, 43, True)])
    assert "FastAPI does not hold, 180 of 300 answering, not judged" in row
    assert "43 vs 87 KB per stream answering" in row
    assert row.endswith("| **met** |")
    # With no step both hold, nothing is judged.
    row = memory_row([step(300, 52, False, answering=180)], [step(300, 43, True)])
    assert row.endswith("| — |")


def test_sluice_falling_behind_where_the_peer_keeps_up_is_not_met() -> None:
    row = memory_row([step(100, 68, True), step(300, 60, True)], [step(100, 40, True), step(300, 30, False, 200)])
    assert "N=300 (Sluice does not hold, not met)" in row and row.endswith("| not met |")
