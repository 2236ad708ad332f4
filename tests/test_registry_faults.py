"""Registry under concurrent writers and damaged files: alias writes are compare-and-set on a generation
(a stale writer retries on fresh data), damaged entries are reported by path and skipped or rebuilt."""

from __future__ import annotations

import json
import logging
import threading

import numpy as np
import pytest
import xgboost as xgb

from streamfit.errors import RegistryError
from streamfit.registry import Registry


def _booster() -> xgb.Booster:
    return xgb.train({"max_depth": 1}, xgb.DMatrix(np.eye(4), label=[0, 1, 0, 1]), 1)


@pytest.fixture
def two(tmp_path):
    """Two Registry objects over the same storage (the trainer's and the controller's), three versions."""
    trainer, controller = Registry(str(tmp_path)), Registry(str(tmp_path))
    for _ in range(3):
        trainer.register(_booster(), {"features": ["a"]})
    controller.set_alias("live", 1, actor="controller")
    return trainer, controller


def _after_first_aliases_read(reg: Registry, action) -> None:
    """Run ``action`` right after ``reg`` first reads aliases.json (the other writer slips in there)."""
    get, fired = reg.store.get, []

    def get_then_interleave(path: str) -> bytes:
        data = get(path)
        if path.endswith("aliases.json") and not fired:
            fired.append(True)
            action()
        return data

    reg.store.get = get_then_interleave


def test_a_stale_trainer_write_does_not_revert_the_controllers_promotion(two):
    trainer, controller = two

    def promote() -> None:  # the controller promotes v2 between the trainer's read and its write
        controller.set_alias("live", 2, actor="controller")
        controller.set_alias("previous", 1, actor="controller")

    _after_first_aliases_read(trainer, promote)
    trainer.set_alias("candidate", 3, actor="trainer")
    assert Registry(controller.uri).aliases() == {"live": 2, "previous": 1, "candidate": 3}


def test_a_stale_controller_write_does_not_drop_the_trainers_candidate(two):
    trainer, controller = two
    _after_first_aliases_read(controller, lambda: trainer.set_alias("candidate", 3, actor="trainer"))
    controller.set_alias("live", 2, actor="controller")
    assert controller.aliases() == {"live": 2, "candidate": 3}


def test_many_concurrent_alias_writes_lose_none(tmp_path):
    regs = [Registry(str(tmp_path)) for _ in range(4)]
    regs[0].register(_booster(), {"features": ["a"]})

    def write(i: int) -> None:
        for j in range(5):
            regs[i].set_alias(f"a{i}_{j}", 1, actor=f"w{i}")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert regs[0].aliases() == {f"a{i}_{j}": 1 for i in range(4) for j in range(5)}


def test_a_damaged_meta_raises_a_registry_error_naming_the_path(tmp_path, caplog):
    reg = Registry(str(tmp_path))
    reg.register(_booster(), {"features": ["a"]})
    reg.register(_booster(), {"features": ["a"]})
    meta = tmp_path / "versions" / "v000001" / "meta.json"
    meta.write_bytes(b'{"version": 1, "sha')  # truncated by a disk that lost a write
    with pytest.raises(RegistryError, match="meta.json"):
        reg.meta(1)
    with caplog.at_level(logging.WARNING, logger="streamfit.registry"):
        listed = reg.list_versions()
    assert [m["version"] for m in listed] == [2]
    assert str(meta) in caplog.text


def test_a_damaged_audit_entry_is_logged_and_skipped(tmp_path, caplog):
    reg = Registry(str(tmp_path))
    reg.audit("one")
    reg.audit("two")
    first = sorted((tmp_path / "audit").iterdir())[0]
    first.write_bytes(b"")  # zero-length
    with caplog.at_level(logging.WARNING, logger="streamfit.registry"):
        assert [e["event"] for e in reg.audit_log()] == ["two"]
    assert str(first) in caplog.text


def test_a_damaged_aliases_file_is_rebuilt_from_the_audit_log(tmp_path, caplog):
    reg = Registry(str(tmp_path))
    for _ in range(3):
        reg.register(_booster(), {"features": ["a"]})
    reg.set_alias("live", 1)
    reg.set_alias("candidate", 2)
    reg.set_alias("live", 2)
    reg.set_alias("previous", 1)
    reg.set_alias("candidate", None)
    (tmp_path / "aliases.json").write_bytes(b'{"live": ')
    with caplog.at_level(logging.WARNING, logger="streamfit.registry"):
        assert Registry(str(tmp_path)).aliases() == {"live": 2, "previous": 1}
    assert str(tmp_path / "aliases.json") in caplog.text
    reg.set_alias("candidate", 3)  # the next write replaces the damaged file
    assert json.loads((tmp_path / "aliases.json").read_bytes())["aliases"] == {"live": 2, "previous": 1, "candidate": 3}
