"""Unit tests of streamfit/registry.py on a local temporary directory."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import xgboost as xgb

from streamfit.errors import ModelIntegrityError, RegistryError
from streamfit.registry import Registry

FEATURES = ["a", "b", "c", "d"]


def _booster(seed: int, rounds: int = 5) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.3, 200) > 0).astype(float)
    return xgb.train(
        {"max_depth": 3, "objective": "binary:logistic", "eta": 0.3, "seed": seed},
        xgb.DMatrix(x, label=y, feature_names=FEATURES),
        rounds,
    )


X_TEST = np.random.default_rng(99).normal(size=(50, 4))


def _predict(bst: xgb.Booster) -> np.ndarray:
    return bst.predict(xgb.DMatrix(X_TEST, feature_names=FEATURES))


def _meta(**extra):
    return {"features": FEATURES, "metrics": {"auc": 0.9}, "trigger": "volume", **extra}


def test_register_load_round_trip_gives_identical_predictions(tmp_path):
    reg = Registry(str(tmp_path))
    bst = _booster(1)
    v = reg.register(bst, _meta(parent=None))
    loaded, meta = reg.load(v)
    assert np.array_equal(_predict(loaded), _predict(bst))
    assert meta["features"] == FEATURES
    assert meta["metrics"] == {"auc": 0.9}
    assert meta["version"] == v
    assert meta["format"] == "ubj"
    # the recorded sha256 is that of the stored bytes
    stored = (tmp_path / "versions" / f"v{v:06d}" / "model.ubj").read_bytes()
    assert meta["sha256"] == hashlib.sha256(stored).hexdigest()


def test_versions_are_numbered_from_one(tmp_path):
    reg = Registry(str(tmp_path))
    assert reg.version_numbers() == []
    assert [reg.register(_booster(s), _meta()) for s in range(3)] == [1, 2, 3]
    assert reg.version_numbers() == [1, 2, 3]
    assert [m["version"] for m in reg.list_versions()] == [1, 2, 3]
    # each version holds its own model
    p = [_predict(reg.load(v)[0]) for v in (1, 2, 3)]
    assert not np.array_equal(p[0], p[1]) and not np.array_equal(p[1], p[2])
    assert np.array_equal(p[2], _predict(_booster(2)))


def test_aliases_set_get_move_remove(tmp_path):
    reg = Registry(str(tmp_path))
    assert reg.aliases() == {}
    for s in range(3):
        reg.register(_booster(s), _meta())
    reg.set_alias("live", 1, actor="alice", reason="first")
    reg.set_alias("candidate", 2)
    assert reg.aliases() == {"live": 1, "candidate": 2}
    reg.set_alias("previous", 1)
    reg.set_alias("live", 3)
    assert reg.aliases() == {"live": 3, "candidate": 2, "previous": 1}
    listed = {m["version"]: m["aliases"] for m in reg.list_versions()}
    assert listed == {1: ["previous"], 2: ["candidate"], 3: ["live"]}
    reg.set_alias("candidate", None)
    assert reg.aliases() == {"live": 3, "previous": 1}


def test_unknown_version_is_refused(tmp_path):
    reg = Registry(str(tmp_path))
    reg.register(_booster(0), _meta())
    reg.set_alias("live", 1)
    with pytest.raises(RegistryError):
        reg.set_alias("live", 2)
    with pytest.raises(RegistryError):
        reg.set_alias("live", 0)
    assert reg.aliases() == {"live": 1}  # a refused alias change leaves the old one
    with pytest.raises(RegistryError):
        reg.load(7)
    with pytest.raises(RegistryError):
        reg.meta(7)


def test_tampered_model_is_refused(tmp_path):
    reg = Registry(str(tmp_path))
    v = reg.register(_booster(0), _meta())
    path = tmp_path / "versions" / f"v{v:06d}" / "model.ubj"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError):
        reg.load(v)


def test_model_replaced_by_another_valid_model_is_refused(tmp_path):
    reg = Registry(str(tmp_path))
    reg.register(_booster(0), _meta())
    reg.register(_booster(1), _meta())
    v1 = tmp_path / "versions" / "v000001" / "model.ubj"
    v2 = tmp_path / "versions" / "v000002" / "model.ubj"
    v1.write_bytes(v2.read_bytes())  # a perfectly loadable model, but not the one registered as v1
    with pytest.raises(ModelIntegrityError):
        reg.load(1)
    reg.load(2)  # the untouched version still loads


def test_audit_log_has_register_and_alias_entries_in_order(tmp_path):
    reg = Registry(str(tmp_path))
    reg.register(_booster(0), _meta(trigger="manual"), actor="tester")
    reg.set_alias("live", 1, actor="bob", reason="go live")
    reg.register(_booster(1), _meta(trigger="drift"))
    reg.set_alias("candidate", 2)
    reg.set_alias("candidate", None, reason="aborted")
    log = reg.audit_log()
    assert [(e["event"], e.get("version"), e.get("alias")) for e in log] == [
        ("register", 1, None),
        ("alias", 1, "live"),
        ("register", 2, None),
        ("alias", 2, "candidate"),
        ("alias", None, "candidate"),
    ]
    assert log[0]["actor"] == "tester" and log[0]["reason"] == "manual"
    assert log[1]["actor"] == "bob" and log[1]["reason"] == "go live"
    assert log[4]["reason"] == "aborted"
    times = [e["time"] for e in log]
    assert times == sorted(times)


def test_audit_is_append_only_and_custom_events_recorded(tmp_path):
    reg = Registry(str(tmp_path))
    reg.audit("traffic", actor="cli", reason="canary", weights={"blue": 95, "green": 5})
    first = reg.audit_log()
    reg.audit("rollback", actor="controller", reason="p99")
    log = reg.audit_log()
    assert log[: len(first)] == first
    assert log[-1]["event"] == "rollback" and log[0]["weights"] == {"blue": 95, "green": 5}


def test_no_pickle_files_written(tmp_path):
    reg = Registry(str(tmp_path))
    for s in range(2):
        reg.register(_booster(s), _meta())
    reg.set_alias("live", 2)
    reg.set_alias("previous", 1)
    reg.load(1)
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs]
    assert files, "registry wrote nothing"
    assert all(f.endswith((".ubj", ".json")) for f in files), files
    for f in files:
        with open(f, "rb") as fh:
            head = fh.read(2)
        assert head[:1] != b"\x80", f"{f} looks like a pickle"
    # metadata is plain JSON
    meta = json.loads((tmp_path / "versions" / "v000001" / "meta.json").read_text())
    assert meta["features"] == FEATURES


def test_new_instance_on_same_dir_sees_everything(tmp_path):
    reg = Registry(str(tmp_path))
    b1, b2 = _booster(0), _booster(1)
    reg.register(b1, _meta())
    reg.register(b2, _meta())
    reg.set_alias("live", 2)
    reg.set_alias("previous", 1)
    log_before = reg.audit_log()
    del reg

    again = Registry(str(tmp_path))
    assert again.version_numbers() == [1, 2]
    assert again.aliases() == {"live": 2, "previous": 1}
    assert again.audit_log() == log_before
    assert np.array_equal(_predict(again.load(2)[0]), _predict(b2))
    # and numbering continues where it stopped
    assert again.register(_booster(5), _meta()) == 3


def test_half_written_version_is_invisible(tmp_path):
    reg = Registry(str(tmp_path))
    reg.register(_booster(0), _meta())
    # a crashed writer leaves its staging directory under tmp/
    (tmp_path / "tmp" / "deadbeef").mkdir()
    (tmp_path / "tmp" / "deadbeef" / "model.ubj").write_bytes(b"partial")
    assert reg.version_numbers() == [1]
    assert reg.register(_booster(1), _meta()) == 2
