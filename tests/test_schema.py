"""``streamfit.schema``: one set of row rules for a batch frame (``validate``) and for plain arrays
(``check_columns``, the online lookup's path), and ``EventArrays``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamfit.config import FeaturesConfig, FieldSpec
from streamfit.schema import EventArrays, check_columns, validate

NAN, INF = float("nan"), float("inf")
CFG = FeaturesConfig(fields=[FieldSpec(name="x0", min=-50, max=50), FieldSpec(name="x1", required=False),
                             FieldSpec(name="x2", min=0, max=1, clip=True)],
                     aggregates=[{"field": "x0", "ops": ["mean"]}])
# entity, event_time, x0, x1, x2, event_id, and the reason validate gives
ROWS = [
    ("u", 1.0, 1.0, 2.0, 0.5, "a", ""),
    ("u", 1.0, NAN, 2.0, 0.5, "b", "missing:x0"),
    ("u", 1.0, 1.0, NAN, 0.5, "c", ""),  # x1 is optional
    ("u", 1.0, INF, 2.0, 0.5, "d", "non_finite:x0"),
    ("u", 1.0, 99.0, 2.0, 0.5, "e", "out_of_range:x0"),
    ("u", 1.0, 1.0, -INF, 0.5, "f", "non_finite:x1"),
    ("u", 1.0, 1.0, 2.0, 7.0, "g", ""),  # clipped to 1
    ("", 1.0, 1.0, 2.0, 0.5, "h", "missing:entity"),
    ("u", NAN, 1.0, 2.0, 0.5, "i", "missing:event_time"),
    ("u", INF, 1.0, 2.0, 0.5, "j", "missing:event_time"),
    ("u", 1.0, 1.0, 2.0, 0.5, "", "missing:event_id"),
]


def arrays() -> EventArrays:
    ent, t, x0, x1, x2, ids, _ = zip(*ROWS)
    return EventArrays(np.array(ent, dtype=object), np.array(t), np.column_stack([x0, x1, x2]), ["x0", "x1", "x2"],
                       np.array(ids, dtype=object))


def test_arrays_and_frames_meet_the_same_rules():
    ev = arrays()
    cols, reason = check_columns(ev.columns(), len(ev), CFG)
    assert reason.tolist() == [r[-1] for r in ROWS]
    as_json = pd.DataFrame({**ev.columns(), "kind": "event"}).astype(object)  # every column parsed by pandas
    clean, frame_reason = validate(as_json, CFG)
    assert frame_reason.tolist() == reason.tolist()
    for name in ("event_time", "x0", "x1", "x2"):
        assert np.array_equal(clean[name].to_numpy(float), cols[name], equal_nan=True), name
    assert clean["entity"].tolist() == cols["entity"].tolist() and cols["x2"][6] == 1.0
    assert (cols["kind"] == "event").all() and np.isnan(cols["label"]).all()


@pytest.mark.parametrize("x0, why", [("a", "non_numeric:x0"), (None, "missing:x0"), ("2.5", "")])
def test_untyped_arrays_are_parsed_as_a_frame_would_be(x0, why):
    cols = {"entity": np.array(["u"], dtype=object), "event_time": np.array([1.0]), "event_id": np.array(["e"]),
            "x0": np.array([x0], dtype=object), "x1": np.array([1.0]), "x2": np.array([0.0])}
    out, reason = check_columns(cols, 1, CFG)
    assert reason.tolist() == [why] and validate(pd.DataFrame(cols), CFG)[1].tolist() == [why]
    if not why:
        assert out["x0"].tolist() == [2.5]


def test_text_that_is_not_a_string_goes_through_pandas():
    cols = {"entity": np.array([None, 7], dtype=object), "event_time": np.array([1.0, 1.0]),
            "event_id": np.array(["a", "b"], dtype=object), "x0": np.zeros(2), "x1": np.zeros(2), "x2": np.zeros(2)}
    out, reason = check_columns(cols, 2, CFG)
    assert reason.tolist() == ["missing:entity", ""] and out["entity"][1] == "7"


def test_absent_columns_are_missing_and_rows_are_events():
    out, reason = check_columns({}, 2, CFG)
    assert reason.tolist() == ["missing:event_id"] * 2
    assert out["kind"].tolist() == ["event"] * 2 and np.isnan(out["x0"]).all()
    assert validate(pd.DataFrame(index=range(2)), CFG)[1].tolist() == reason.tolist()
