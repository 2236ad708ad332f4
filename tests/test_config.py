"""Unit tests of the streamfit.config package: defaults, YAML loading, field paths in errors."""

from __future__ import annotations

import textwrap

import pytest

from streamfit.config import (
    AggregateSpec,
    Config,
    FeaturesConfig,
    FieldSpec,
    LabelHistoryConfig,
    config_from_dict,
    load_config,
    window_tag,
)
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
    assert cfg.features.windows_s and all(w > 0 for w in cfg.features.windows_s)
    assert {a.field for a in cfg.features.aggregates} <= {f.name for f in cfg.features.fields}
    assert cfg.features.late_policy == "drop"
    assert not any(f.clip for f in cfg.features.fields)


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
          windows_s: [60, 0.5]
          aggregates:
            - {field: x1, ops: [sum, std], last: true}
            - {field: x2}
          count: false
          age: false
          label_history: {enabled: false}
          late_policy: apply
          fields:
            - {name: x0, min: -1, max: 1, clip: true}
            - {name: x1}
            - {name: x2}
        trainer:
          refit_every_rows: 123
        """,
    )
    cfg = load_config(path)
    assert cfg.shards.num_shards == 4
    f = cfg.features
    assert f.windows_s == [60.0, 0.5]
    assert f.aggregates == [AggregateSpec(field="x1", ops=["sum", "std"], last=True), AggregateSpec(field="x2")]
    assert f.aggregates[1].ops == ["mean"] and f.aggregates[1].last is False
    assert f.late_policy == "apply"
    assert f.fields[0].clip is True and f.fields[1].clip is False
    assert f.feature_names() == [
        "x0", "x1", "x2", "x1_sum_1m", "x1_std_1m", "x2_mean_1m", "x1_sum_500ms", "x1_std_500ms", "x2_mean_500ms",
        "x1_last",
    ]
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
          aggregates: [{field: a}]
        """,
    )
    with pytest.raises(ConfigError, match=r"features\.fields\.1\.min"):
        load_config(path)


def test_aggregate_of_unknown_field_names_its_path(tmp_path):
    path = _write(tmp_path, "features:\n  aggregates:\n    - {field: nope, ops: [mean]}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "nope" in msg
    assert "features.aggregates.0.field" in msg


def test_aggregate_of_non_required_field_names_its_path():
    # a non-required field may be missing, so it cannot be aggregated
    with pytest.raises(ConfigError) as info:
        config_from_dict({"features": {"fields": [{"name": "x0"}, {"name": "opt", "required": False}],
                                       "aggregates": [{"field": "opt"}]}})
    msg = str(info.value)
    assert "opt" in msg
    assert "features.aggregates.0.field" in msg


def test_aggregate_of_unknown_field_from_dict():
    with pytest.raises(ConfigError, match="ghost"):
        config_from_dict({"features": {"aggregates": [{"field": "x0"}, {"field": "ghost"}]}})


def test_unknown_aggregate_op_names_its_path():
    with pytest.raises(ConfigError, match=r"features\.aggregates\.0\.ops\.1"):
        config_from_dict({"features": {"aggregates": [{"field": "x0", "ops": ["mean", "median"]}]}})


def test_bad_late_policy_is_refused():
    with pytest.raises(ConfigError, match=r"features\.late_policy"):
        config_from_dict({"features": {"late_policy": "keep"}})


def test_empty_windows_list_is_refused():
    with pytest.raises(ConfigError, match=r"features\.windows_s"):
        config_from_dict({"features": {"windows_s": []}})


@pytest.mark.parametrize("bad", [0, -5])
def test_non_positive_window_is_refused(bad):
    # a window [t - 0, t) is always empty and a negative one is meaningless; the old window_s was > 0
    with pytest.raises(ConfigError, match=r"features\.windows_s"):
        config_from_dict({"features": {"windows_s": [60, bad]}})


def test_non_positive_label_history_window_is_refused():
    with pytest.raises(ConfigError, match=r"features\.label_history\.windows_s"):
        config_from_dict({"features": {"label_history": {"windows_s": [-60]}}})


@pytest.mark.parametrize(
    "features",
    [{"windows_s": [60, 60]}, {"aggregates": [{"field": "x0"}, {"field": "x0"}]}],
    ids=["same-window-twice", "same-aggregate-twice"],
)
def test_feature_names_are_never_duplicated(features):
    # the model's input columns must be unique (pandas selects, XGBoost names features by them):
    # a config that would repeat a column is refused, or names it once
    try:
        cfg = config_from_dict({"features": features})
    except ConfigError:
        return
    names = cfg.features.feature_names()
    assert len(names) == len(set(names)), names


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
    assert Config().features.feature_names() == [
        "x0", "x1", "x2",
        "count_5m", "x0_mean_5m", "x0_std_5m", "x0_min_5m", "x0_max_5m", "x1_mean_5m",
        "count_1h", "x0_mean_1h", "x0_std_1h", "x0_min_1h", "x0_max_1h", "x1_mean_1h",
        "x0_last", "age_s",
        "label_last", "label_rate_5m", "label_count_5m", "label_rate_1h", "label_count_1h",
    ]


@pytest.mark.parametrize(
    "window_s, tag", [(300, "5m"), (45, "45s"), (3600, "1h"), (7200, "2h"), (90, "90s"), (0.5, "500ms")]
)
def test_feature_names_order_custom(window_s, tag):
    cfg = FeaturesConfig(
        fields=[FieldSpec(name="b"), FieldSpec(name="a"), FieldSpec(name="c")],
        windows_s=[window_s],
        aggregates=[AggregateSpec(field="c", ops=["max", "sum"]), AggregateSpec(field="b", last=True)],
        label_history=LabelHistoryConfig(windows_s=[window_s]),
    )
    # raw fields in declared order; per window the count then each aggregate's ops in config order;
    # then last values, age, and the label history
    assert cfg.feature_names() == [
        "b", "a", "c", f"count_{tag}", f"c_max_{tag}", f"c_sum_{tag}", f"b_mean_{tag}", "b_last", "age_s",
        "label_last", f"label_rate_{tag}", f"label_count_{tag}",
    ]


def test_feature_names_without_count_age_and_label_history():
    cfg = FeaturesConfig(windows_s=[60], aggregates=[], count=False, age=False,
                         label_history=LabelHistoryConfig(enabled=False))
    assert cfg.feature_names() == ["x0", "x1", "x2"]


@pytest.mark.parametrize(
    "seconds, tag",
    [(0.5, "500ms"), (300, "5m"), (300.0, "5m"), (45, "45s"), (3600, "1h"), (7200, "2h"), (90, "90s"),
     (1.5, "1500ms"), (86400, "24h")],
)
def test_window_tag(seconds, tag):
    assert window_tag(seconds) == tag


def test_feature_names_sub_second_window_is_not_labelled_zero():
    # a 0.5 s window must not be named as a zero-length ("0h") window,
    # and two different windows must not get the same column names.
    half = FeaturesConfig(windows_s=[0.5]).feature_names()
    assert "count_0h" not in half and "count_500ms" in half
    assert half != FeaturesConfig(windows_s=[1.0]).feature_names()


def test_online_scoring_fields_have_defaults_and_validate():
    cfg = Config()
    assert cfg.trainer.training_features == "served"
    assert cfg.features.served_log_capacity > 0
    assert cfg.features.max_future_s >= 0 and cfg.features.max_past_s >= 0
    assert cfg.serving.lookup_timeout_s == 1.0 and cfg.serving.lookup_wait_ms == 2.0
    assert cfg.serving.lookup_max_batch == 256 and cfg.serving.max_batch_events == 1000
    bad = [
        ({"trainer": {"training_features": "both"}}, "trainer.training_features"),
        ({"features": {"served_log_capacity": 0}}, "features.served_log_capacity"),
        ({"features": {"max_future_s": -1}}, "features.max_future_s"),
        ({"features": {"max_past_s": -1}}, "features.max_past_s"),
        ({"serving": {"lookup_timeout_s": 0}}, "serving.lookup_timeout_s"),
        ({"serving": {"lookup_wait_ms": -1}}, "serving.lookup_wait_ms"),
        ({"serving": {"lookup_max_batch": 0}}, "serving.lookup_max_batch"),
        ({"serving": {"max_batch_events": 0}}, "serving.max_batch_events"),
    ]
    for data, path in bad:
        with pytest.raises(ConfigError, match=path):
            config_from_dict(data)


def test_scoring_limits_do_not_change_the_schema_hash():
    # Versions registered before these fields existed must still match the serving schema.
    base = FeaturesConfig().schema_hash()
    assert FeaturesConfig(served_log_capacity=5, max_future_s=1, max_past_s=2).schema_hash() == base
    assert base == "9f33e57914fa85f3"
    assert FeaturesConfig(windows_s=[60]).schema_hash() != base
