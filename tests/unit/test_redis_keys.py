"""The Redis status hash, written and read back by one module (app.backends.redis.keys)."""

from __future__ import annotations

from app.backends.redis.keys import decode_status, encode_progress, encode_status, tomb_key
from app.config import Settings
from app.lifecycle.registry import Registry
from app.lifecycle.spec import GenerationSpec
from app.providers.base import Message
from tests.unit.fakes import FakeBackend, GatedProvider


def test_a_status_read_back_from_redis_is_the_status_a_local_generation_answers() -> None:
    settings = Settings.from_env({"SLUICE_PROVIDER": "demo"})
    backend, provider = FakeBackend(), GatedProvider()
    reg = Registry(settings, backend, lambda name: provider)
    gen = reg.create(GenerationSpec(provider="demo", model="gated", messages=(Message("user", "x"),), max_tokens=10),
                     owner="alice", client="c", attached=True)
    provider.gate.set()
    gen.join(5)
    view = backend.mirror.views[gen.id]
    # As Redis hands it back: every field a string.
    stored = {k: str(v) for k, v in encode_status(view, "worker-1").items()}
    assert decode_status(gen.id, stored) == {**gen.status(), "owner": "alice"}
    stored.update({k: str(v) for k, v in encode_progress(2, {"output_tokens": 1}).items()})
    status = decode_status(gen.id, stored)
    assert (status["events"], status["usage"]) == (2, {"output_tokens": 1})


def test_tombstones_of_one_id_share_its_hash_tag_but_not_their_key() -> None:
    mine, theirs, anyone = tomb_key("abc", "alice"), tomb_key("abc", "bob"), tomb_key("abc", None)
    assert all(k.startswith("sluice:{abc}:tomb") for k in (mine, theirs, anyone))
    assert len({mine, theirs, anyone}) == 3
