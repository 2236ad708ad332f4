"""The alias compare-and-set on an object store (no lock there): a stale writer still retries on fresh data."""

from __future__ import annotations

from s3_server import s3_fixture
from test_registry_faults import _after_first_aliases_read, _booster

from streamfit.registry import Registry

s3 = s3_fixture()


def test_a_stale_trainer_write_does_not_revert_the_controllers_promotion_on_s3(s3):
    uri = s3.uri("registry/cas")
    trainer, controller = Registry(uri), Registry(uri)
    for _ in range(3):
        trainer.register(_booster(), {"features": ["a"]})
    controller.set_alias("live", 1, actor="controller")

    def promote() -> None:
        controller.set_alias("live", 2, actor="controller")
        controller.set_alias("previous", 1, actor="controller")

    _after_first_aliases_read(trainer, promote)
    trainer.set_alias("candidate", 3, actor="trainer")
    assert Registry(uri).aliases() == {"live": 2, "previous": 1, "candidate": 3}
