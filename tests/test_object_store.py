"""Registry and CheckpointStore on a real S3 endpoint (moto_server on 127.0.0.1), one server per module.

Everything goes through an ``s3://bucket/prefix?endpoint_override=…&scheme=http&region=…`` URI,
as a cluster deployment would configure it; the test reaches behind the classes only through
pyarrow's own S3 filesystem (to corrupt a model, or to leave a crashed writer's debris).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest
import xgboost as xgb
from s3_server import s3_fixture
from shard_streams import assert_same_state, feed, make_batches, reshard_two_into_three, shard_state

from streamfit.actors.stream.checkpoint import CheckpointError, CheckpointStore
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.config import AggregateSpec, FeaturesConfig, LabelHistoryConfig, StreamConfig
from streamfit.errors import ModelIntegrityError, RegistryError, StreamfitError
from streamfit.registry import Registry

s3 = s3_fixture()

FEATURES = ["a", "b", "c", "d"]
X_TEST = np.random.default_rng(99).normal(size=(64, 4))


def _booster(seed: int, rounds: int = 5) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.3, 300) > 0).astype(float)
    return xgb.train({"max_depth": 3, "objective": "binary:logistic", "eta": 0.3, "seed": seed},
                     xgb.DMatrix(x, label=y, feature_names=FEATURES), rounds)


def _predict(bst: xgb.Booster) -> np.ndarray:
    return bst.predict(xgb.DMatrix(X_TEST, feature_names=FEATURES))


def _objects(fs: pafs.FileSystem, prefix: str) -> list[str]:
    sel = pafs.FileSelector(prefix, recursive=True, allow_not_found=True)
    return sorted(i.path[len(prefix) + 1:] for i in fs.get_file_info(sel) if i.type == pafs.FileType.File)


def _put(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as out:
        out.write(data)


def _get(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


# == Registry ===================================================================================


@pytest.fixture(scope="module")
def populated(s3):
    """A registry on S3 with 3 versions, two aliases moved once, and the boosters registered."""
    uri = s3.uri("registry/main")
    reg = Registry(uri)
    boosters = [_booster(s) for s in range(3)]
    versions = [reg.register(b, {"features": FEATURES, "metrics": {"auc": 0.9 + s / 100}, "trigger": f"t{s}"},
                             actor="trainer") for s, b in enumerate(boosters)]
    reg.set_alias("live", 1, actor="alice", reason="first")
    reg.set_alias("candidate", 2, actor="controller", reason="canary")
    reg.set_alias("previous", 1, actor="controller", reason="promote")
    reg.set_alias("live", 2, actor="controller", reason="promote")
    reg.set_alias("candidate", 3, actor="controller", reason="canary")
    return uri, reg, boosters, versions


def test_s3_registry_numbers_versions_and_round_trips_predictions(s3, populated):
    uri, reg, boosters, versions = populated
    assert versions == [1, 2, 3]
    assert reg.version_numbers() == [1, 2, 3]
    for v, b in zip(versions, boosters):
        loaded, meta = reg.load(v)
        assert np.array_equal(_predict(loaded), _predict(b)), v
        assert meta["version"] == v and meta["features"] == FEATURES and meta["format"] == "ubj"
    # the objects really are in the bucket, under the prefix, in the documented layout
    fs, prefix = s3.filesystem(), f"{s3.bucket}/registry/main"
    names = _objects(fs, prefix)
    for v in versions:
        assert f"versions/v{v:06d}/model.ubj" in names and f"versions/v{v:06d}/meta.json" in names
    raw = _get(fs, f"{prefix}/versions/v000002/model.ubj")
    assert hashlib.sha256(raw).hexdigest() == reg.meta(2)["sha256"]
    assert not any(n.startswith("tmp/") for n in names), "no temporaries left behind on S3"


def test_s3_aliases_and_audit_log_in_order(populated):
    _, reg, _, _ = populated
    assert reg.aliases() == {"live": 2, "candidate": 3, "previous": 1}
    assert {m["version"]: m["aliases"] for m in reg.list_versions()} == {
        1: ["previous"], 2: ["live"], 3: ["candidate"]}
    log = reg.audit_log()
    assert [(e["event"], e.get("version"), e.get("alias")) for e in log] == [
        ("register", 1, None), ("register", 2, None), ("register", 3, None),
        ("alias", 1, "live"), ("alias", 2, "candidate"), ("alias", 1, "previous"),
        ("alias", 2, "live"), ("alias", 3, "candidate"),
    ]
    assert log[0]["reason"] == "t0" and log[3]["actor"] == "alice" and log[3]["reason"] == "first"
    assert [e["time"] for e in log] == sorted(e["time"] for e in log)
    with pytest.raises(RegistryError):
        reg.set_alias("live", 9)
    assert reg.aliases()["live"] == 2  # a refused change leaves the alias where it was


def test_s3_registry_restart_sees_everything(s3, populated):
    uri, reg, boosters, _ = populated
    log = reg.audit_log()
    again = Registry(uri)  # a new process, e.g. a restarted controller
    assert again.version_numbers() == [1, 2, 3]
    assert again.aliases() == {"live": 2, "candidate": 3, "previous": 1}
    assert again.audit_log() == log
    assert np.array_equal(_predict(again.load(3)[0]), _predict(boosters[2]))
    # the same URI written differently (trailing slash, other option order) is the same registry
    other = f"s3://{s3.bucket}/registry/main/?region=us-east-1&scheme=http&endpoint_override={s3.endpoint}"
    assert Registry(other).aliases() == again.aliases()


def test_s3_corrupted_model_is_refused(s3):
    reg = Registry(s3.uri("registry/corrupt"))
    reg.register(_booster(0), {"features": FEATURES})
    reg.register(_booster(1), {"features": FEATURES})
    fs, prefix = s3.filesystem(), f"{s3.bucket}/registry/corrupt/versions"
    # one flipped byte
    data = bytearray(_get(fs, f"{prefix}/v000001/model.ubj"))
    data[len(data) // 2] ^= 0xFF
    _put(fs, f"{prefix}/v000001/model.ubj", bytes(data))
    with pytest.raises(ModelIntegrityError):
        reg.load(1)
    # a perfectly loadable model, but not the one registered as v2
    _put(fs, f"{prefix}/v000002/model.ubj", bytes(_booster(7).save_raw("ubj")))
    with pytest.raises(ModelIntegrityError):
        reg.load(2)
    v3 = reg.register(_booster(3), {"features": FEATURES})
    assert np.array_equal(_predict(reg.load(v3)[0]), _predict(_booster(3)))


def test_s3_incomplete_write_is_invisible_and_cleaned_up(s3):
    reg = Registry(s3.uri("registry/crash"))
    reg.register(_booster(0), {"features": FEATURES})
    fs, prefix = s3.filesystem(), f"{s3.bucket}/registry/crash"
    # A writer crashed after uploading the model of v2 but before committing its meta.json,
    # and another left a temporary behind.
    _put(fs, f"{prefix}/versions/v000002/model.ubj", b"partial model bytes")
    _put(fs, f"{prefix}/tmp/deadbeef/model.ubj", b"partial")
    reader = Registry(s3.uri("registry/crash"))
    assert reader.version_numbers() == [1]
    assert [m["version"] for m in reader.list_versions()] == [1]
    with pytest.raises(RegistryError):
        reader.load(2)
    with pytest.raises(RegistryError):
        reader.set_alias("live", 2)
    # the next register takes the number, replacing the debris with a whole version
    assert reg.register(_booster(1), {"features": FEATURES}) == 2
    assert np.array_equal(_predict(reader.load(2)[0]), _predict(_booster(1)))
    # stale temporaries are removed (fresh ones may belong to a live writer, so they are kept)
    assert "tmp/deadbeef/model.ubj" in _objects(fs, prefix)
    reg.clean_staging(older_than_s=0)
    assert not [n for n in _objects(fs, prefix) if n.startswith("tmp/")]
    assert reader.version_numbers() == [1, 2]


def test_s3_versions_are_immutable(s3):
    """A second writer with a stale view (it believes v1 is still free) cannot overwrite the committed v1."""
    uri = s3.uri("registry/immutable")
    first = Registry(uri)
    first.register(_booster(0), {"features": FEATURES})
    meta_before = first.meta(1)
    stale = Registry(uri, filesystem=s3.filesystem())  # also: an explicit filesystem with the same URI
    stale.version_numbers = lambda: []  # listed before the first writer committed
    with pytest.raises(RegistryError, match="already exists"):
        stale.register(_booster(1), {"features": FEATURES})
    assert first.meta(1) == meta_before
    assert np.array_equal(_predict(first.load(1)[0]), _predict(_booster(0)))
    assert Registry(uri).register(_booster(1), {"features": FEATURES}) == 2


def test_s3_missing_bucket_and_bad_uri_give_clear_errors(s3):
    uri = s3.uri("registry", bucket="no-such-bucket")
    with pytest.raises(RegistryError, match="no-such-bucket"):
        Registry(uri)
    with pytest.raises(CheckpointError, match="no-such-bucket"):
        CheckpointStore(s3.uri("ckpt", bucket="no-such-bucket"))
    with pytest.raises(StreamfitError, match="nosuchscheme://"):
        Registry("nosuchscheme://bucket/x")
    # credentials in a URI never end up in a message
    with pytest.raises(RegistryError) as err:
        Registry(s3.uri("x", bucket="no-such-bucket") + "&access_key=AKIDSECRET&secret_key=VERYSECRET")
    assert "VERYSECRET" not in str(err.value) and "AKIDSECRET" not in str(err.value)


# == CheckpointStore ============================================================================

SHARD_FEATURES = FeaturesConfig(
    windows_s=[30.0, 300.0],
    aggregates=[AggregateSpec(field="x0", ops=["sum", "mean", "std", "min", "max"], last=True),
                AggregateSpec(field="x1", ops=["mean", "min"], last=True)],
    label_history=LabelHistoryConfig(windows_s=[60.0, 600.0]),
)
STREAM = StreamConfig(batch_size=60, entities=25, label_delay_events=40, events_per_second=2.0,
                      bad_row_rate=0.0, seed=5)


def _batches(n: int) -> list[tuple[int, pd.DataFrame, float]]:
    return make_batches(n, STREAM, SHARD_FEATURES)


_feed = feed


_state, _assert_same_state = shard_state, assert_same_state


def _sorted_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values("event_id").reset_index(drop=True)


def test_s3_checkpoint_round_trip_resumes_exactly(s3):
    batches = _batches(16)
    shard = FeatureShard(SHARD_FEATURES)
    for b, d, w in batches[:12]:
        shard.process(b, d, w)
    store = CheckpointStore(s3.uri("ckpt/round-trip"))
    assert store.latest_manifest() is None and store.load_shard_state(0, 1, SHARD_FEATURES) is None
    store.write_shard(1, 0, shard.snapshot())
    assert store.latest_manifest() is None  # a part without its manifest is not a checkpoint
    store.write_manifest(1, batch_id=12, position={"offset": 12}, num_shards=1)

    reopened = CheckpointStore(s3.uri("ckpt/round-trip"))  # a restarted shard's view
    m = reopened.latest_manifest()
    assert (m["checkpoint_id"], m["batch_id"], m["position"], m["num_shards"]) == (1, 12, {"offset": 12}, 1)
    resumed = FeatureShard(SHARD_FEATURES)
    resumed.restore(reopened.load_shard_state(0, 1, SHARD_FEATURES))
    _assert_same_state(_state(resumed), _state(shard))
    assert len(resumed.pending) == len(shard.pending) > 0
    for b, d, w in batches[12:]:
        pd.testing.assert_frame_equal(resumed.process(b, d, w).training_rows, shard.process(b, d, w).training_rows)
    _assert_same_state(_state(resumed), _state(shard))


def test_s3_checkpoints_commit_only_when_whole_and_are_pruned(s3):
    uri = s3.uri("ckpt/commit")
    store = CheckpointStore(uri)
    fs, prefix = s3.filesystem(), f"{s3.bucket}/ckpt/commit"
    two = [FeatureShard(SHARD_FEATURES, i) for i in range(2)]
    batches = _batches(5)
    for cid, batch in enumerate(batches[:4], start=1):
        _feed(two, [batch])
        for i, s in enumerate(two):
            store.write_shard(cid, i, s.snapshot())
        store.write_manifest(cid, batch_id=cid, position=cid, num_shards=2)
    assert store.checkpoint_ids() == [3, 4]
    assert sorted({n.split("/")[1] for n in _objects(fs, prefix) if n.startswith("shards/")}) == [
        "000000003", "000000004"]
    # a checkpoint is not declared while a shard's part is missing ...
    _feed(two, batches[4:5])
    store.write_shard(5, 0, two[0].snapshot())
    with pytest.raises(CheckpointError, match=r"shards \[1\]"):
        store.write_manifest(5, batch_id=5, position=5, num_shards=2)
    # ... nor while a part is half-written (its data uploaded, its meta.json not yet)
    _put(fs, f"{prefix}/shards/000000005/shard-1/events.arrow", b"partial")
    with pytest.raises(CheckpointError):
        store.write_manifest(5, batch_id=5, position=5, num_shards=2)
    assert store.latest_manifest()["checkpoint_id"] == 4
    assert store.load_shard_state(1, 2, SHARD_FEATURES)["meta"]["last_batch_id"] == 4
    # once whole it commits, and then it is immutable
    store.write_shard(5, 1, two[1].snapshot())
    store.write_manifest(5, batch_id=5, position=5, num_shards=2)
    assert store.latest_manifest()["checkpoint_id"] == 5
    with pytest.raises(CheckpointError, match="committed"):
        store.write_shard(5, 0, FeatureShard(SHARD_FEATURES).snapshot())
    assert store.load_shard_state(0, 2, SHARD_FEATURES)["meta"]["last_batch_id"] == 5
    assert not [n for n in _objects(fs, prefix) if n.startswith("tmp/")]


def test_s3_repartition_two_shards_into_three(s3):
    batches = _batches(30)
    cut = 18
    two, moved, fresh = reshard_two_into_three(lambda: CheckpointStore(s3.uri("ckpt/repartition")), SHARD_FEATURES,
                                               batches, cut)
    assert sum(len(s.pending) for s in moved) == sum(len(s.pending) for s in two)

    # and from there the 3 moved shards emit the same training rows as 3 shards that never stopped
    rows_moved, rows_fresh = _feed(moved, batches[cut:]), _feed(fresh, batches[cut:])
    assert len(rows_moved) > 0
    feats = SHARD_FEATURES.feature_names()
    a, b = _sorted_rows(rows_moved), _sorted_rows(rows_fresh)
    assert list(a["event_id"]) == list(b["event_id"])
    assert np.allclose(a[feats].to_numpy(float), b[feats].to_numpy(float), rtol=1e-9, atol=1e-12, equal_nan=True)


def test_s3_manifest_and_parts_are_plain_files(s3):
    """No pickles: the manifest is JSON and the shard parts are Arrow IPC files."""
    store = CheckpointStore(s3.uri("ckpt/format"))
    shard = FeatureShard(SHARD_FEATURES)
    _feed([shard], _batches(3))
    store.write_shard(1, 0, shard.snapshot())
    store.write_manifest(1, batch_id=3, position=3, num_shards=1)
    fs, prefix = s3.filesystem(), f"{s3.bucket}/ckpt/format"
    assert _objects(fs, prefix) == ["manifests/000000001.json"] + [
        f"shards/000000001/shard-0/{n}" for n in ("dedup.arrow", "events.arrow", "labels.arrow", "meta.json",
                                                  "pending.arrow")]
    assert json.loads(_get(fs, f"{prefix}/manifests/000000001.json"))["batch_id"] == 3
    assert _get(fs, f"{prefix}/shards/000000001/shard-0/events.arrow")[:6] == b"ARROW1"
