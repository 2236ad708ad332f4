"""Unit tests of streamfit/config.py: defaults, YAML loading, field paths in errors."""

from __future__ import annotations

import textwrap

import pytest

from streamfit.config import Config, FeaturesConfig, FieldSpec, config_from_dict, load_config
from streamfit.errors import ConfigError


def _write(tmp_path, text: str):
    path = tmp_path / "streamfit.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_default_config_is_valid_and_round_trips():
    cfg = Config()
    # The defaults validate again as an explicit config (no hidden invalid default).
    again = Config.model_validate(cfg.model_dump())
    assert again == cfg
    assert cfg.shards.num_shards >= 1
    assert cfg.features.window_s > 0
    assert set(cfg.features.mean_of) <= {f.name for f in cfg.features.fields}


def test_load_config_none_gives_defaults():
    assert load_config(None) == Config()


def test_load_config_empty_file_gives_defaults(tmp_path):
    assert load_config(_write(tmp_path, "")) == Config()


def test_load_config_reads_values(tmp_path):
    path = _write(
        tmp_path,
        """
        shards:
          num_shards: 4
        features:
          window_s: 60
          mean_of: [x1, x2]
        trainer:
          refit_every_rows: 123
        """,
    )
    cfg = load_config(path)
    assert cfg.shards.num_shards == 4
    assert cfg.features.window_s == 60
    assert cfg.features.mean_of == ["x1", "x2"]
    assert cfg.trainer.refit_every_rows == 123
    # untouched sections keep their defaults
    assert cfg.serving == Config().serving


def test_unknown_key_names_dotted_path(tmp_path):
    path = _write(tmp_path, "trainer:\n  refit_every: 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "trainer.refit_every" in str(info.value)


def test_unknown_top_level_section_is_refused(tmp_path):
    path = _write(tmp_path, "trainr:\n  refit_every_rows: 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "trainr" in str(info.value)


def test_mistyped_value_names_dotted_path(tmp_path):
    path = _write(tmp_path, 'shards:\n  num_shards: "two"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "shards.num_shards" in msg
    # only the bad field is reported
    assert "trainer" not in msg


def test_out_of_range_value_names_dotted_path(tmp_path):
    path = _write(tmp_path, "shards:\n  num_shards: 0\n")
    with pytest.raises(ConfigError, match=r"shards\.num_shards"):
        load_config(path)


def test_nested_list_item_error_names_index(tmp_path):
    path = _write(
        tmp_path,
        """
        features:
          fields:
            - {name: a}
            - {name: b, min: low}
          mean_of: [a]
        """,
    )
    with pytest.raises(ConfigError, match=r"features\.fields\.1\.min"):
        load_config(path)


def test_mean_of_unknown_field_names_it(tmp_path):
    path = _write(tmp_path, "features:\n  mean_of: [x0, nope]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "nope" in msg
    assert "features" in msg
    assert "mean_of.1" in msg


def test_mean_of_unknown_field_from_dict():
    with pytest.raises(ConfigError, match="ghost"):
        config_from_dict({"features": {"mean_of": ["ghost"]}})


def test_non_mapping_yaml_is_refused(tmp_path):
    path = _write(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_invalid_yaml_is_config_error(tmp_path):
    path = _write(tmp_path, "shards: {num_shards: [\n")
    with pytest.raises(ConfigError):
        load_config(path)


def test_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "does-not-exist.yaml")


def test_feature_names_order_default():
    assert Config().features.feature_names() == ["x0", "x1", "x2", "count_5m", "x0_mean_5m"]


@pytest.mark.parametrize(
    "window_s, tag", [(300, "5m"), (45, "45s"), (3600, "1h"), (7200, "2h"), (90, "90s")]
)
def test_feature_names_order_custom(window_s, tag):
    cfg = FeaturesConfig(
        fields=[FieldSpec(name="b"), FieldSpec(name="a"), FieldSpec(name="c")],
        window_s=window_s,
        mean_of=["c", "b"],
    )
    # raw fields in declared order, then the count, then means in mean_of order
    assert cfg.feature_names() == ["b", "a", "c", f"count_{tag}", f"c_mean_{tag}", f"b_mean_{tag}"]


def test_feature_names_sub_second_window_is_not_labelled_zero():
    # window_s only has to be > 0; a 0.5 s window must not be named as a zero-length ("0h") window,
    # and two different windows must not get the same column names.
    half = FeaturesConfig(window_s=0.5).feature_names()
    assert "count_0h" not in half
    assert half != FeaturesConfig(window_s=1.0).feature_names()
