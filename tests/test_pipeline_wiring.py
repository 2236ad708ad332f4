"""What the config accepts but the planes do not run end to end yet is refused at start, naming the field."""

from __future__ import annotations

import pytest

from streamfit.config import config_from_dict
from streamfit.errors import ConfigError
from streamfit.scripts.pipeline import check_wired


def test_a_binary_numeric_config_starts():
    check_wired(config_from_dict({}))


@pytest.mark.parametrize("cfg, field", [
    ({"model": {"task": "regression"}}, "model.task"),
    ({"model": {"task": "multiclass", "classes": ["a", "b", "c"]}}, "model.task"),
    ({"features": {"fields": [{"name": f"x{i}"} for i in range(3)] + [{"name": "country", "type": "categorical"}]}},
     "features.fields"),
])
def test_a_task_or_field_not_wired_yet_is_refused_naming_it(cfg, field):
    with pytest.raises(ConfigError, match=field):
        check_wired(config_from_dict(cfg))
