"""Overlap: the start of a continuation that repeats what the client already has is dropped."""

from __future__ import annotations

import pytest

from app.lifecycle.recovery import Overlap


def run(said: str, pieces: list[str]) -> str:
    overlap = Overlap(said)
    return "".join(overlap.push(p) for p in pieces) + overlap.flush()


@pytest.mark.parametrize(("said", "pieces", "relayed"), [
    # A prefill continued exactly (with the space the stripped prefill lost).
    ("The sky is ", [" blue", " because"], "blue because"),
    ("The sky is", [" blue."], " blue."),
    # A restart from the very beginning, in any cut.
    ("The sky is ", ["The s", "ky is bl", "ue."], "blue."),
    ("t0 t1 t2 ", ["t0 ", "t1 ", "t2 ", "t3 "], "t3 "),
    # A restart that never got past what was said: nothing new.
    ("t0 t1 t2 ", ["t0 ", "t1 "], ""),
    # The last words repeated.
    ("Rivers flow to the sea ", ["to the sea and", " rain."], "and rain."),
    # Short common words at the seam are not a repeat.
    ("I went to the ", ["the shop."], "the shop."),
    ("Answer: 42", ["."], "."),
    # A continuation that merely uses words from earlier.
    ("The cat sat on the mat. The dog ", ["sat", " too."], "sat too."),
    # Nothing said: everything passes.
    ("", ["a", "b"], "ab"),
])
def test_overlap(said: str, pieces: list[str], relayed: str) -> None:
    assert run(said, pieces) == relayed


def test_after_the_decision_text_passes_at_once() -> None:
    overlap = Overlap("one two ")
    assert overlap.push("three") == "three"
    assert overlap.push(" one two") == " one two"
