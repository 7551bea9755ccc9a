"""Overlap: the start of a continuation that repeats what the client already has is dropped;
a model's refusal of prefill is remembered, for a while and for so many models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.lifecycle import recovery
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


@pytest.fixture
def refusals() -> Iterator[None]:
    recovery._prefill_refused.clear()
    yield
    recovery._prefill_refused.clear()


def test_a_refusal_of_prefill_is_forgotten_after_a_while(refusals: None, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(recovery.time, "monotonic", lambda: now[0])
    recovery.prefill_refused("anthropic", "m")
    assert not recovery.prefill_allowed("anthropic", "m", "off")
    now[0] += recovery.PREFILL_REFUSAL_SECONDS + 1
    assert recovery.prefill_allowed("anthropic", "m", "off"), "tried again once the refusal is old"


def test_refusals_of_prefill_are_remembered_for_so_many_models_the_oldest_forgotten_first(refusals: None) -> None:
    for i in range(recovery.PREFILL_REFUSALS_MAX + 10):
        recovery.prefill_refused("anthropic", f"model-{i}")
    assert not recovery.prefill_allowed("anthropic", f"model-{recovery.PREFILL_REFUSALS_MAX + 9}", "off")
    assert recovery.prefill_allowed("anthropic", "model-0", "off")
