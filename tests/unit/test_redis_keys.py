"""The Redis status hash, written and read back by one module (app.backends.redis.keys)."""

from __future__ import annotations

from redis.crc import key_slot

from app.backends.redis.cluster import per_slot
from app.backends.redis.keys import decode_status, encode_progress, encode_status, redacted_url, stream_key, tomb_key
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


def test_a_cluster_url_is_logged_with_every_seed_and_without_its_password() -> None:
    assert redacted_url("redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7001") == \
        "redis+cluster://:***@10.0.0.1:7000,10.0.0.2:7001"
    assert redacted_url("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redacted_url("redis://host:6379/0") == "redis://host:6379/0"


def test_the_writer_groups_generations_by_cluster_slot() -> None:
    ids = [f"id-{n}" for n in range(50)] + ["id-3"]
    groups = per_slot(ids, lambda i: stream_key(i, "meta"))
    assert sorted(i for g in groups for i in g) == sorted(ids)
    for group in groups:
        assert len({key_slot(stream_key(i, "events").encode()) for i in group}) == 1
