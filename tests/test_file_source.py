"""File replay: CSV, Parquet and JSON lines replayed in event-time order with delayed labels."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamfit.actors.stream import file_source
from streamfit.schema import validate
from streamfit.actors.stream.file_source import FileReplaySource, Pacer
from streamfit.config import FeaturesConfig, FileSourceConfig
from streamfit.errors import ConfigError

FEATURES = FeaturesConfig()
MAPPING = {"entity": "customer_id", "event_time": "ts", "label": "y"}
N = 60
DELAY = 7.5


def raw_rows(n: int = N) -> pd.DataFrame:
    """A file as a user would have it: own column names, not sorted by time, an extra column."""
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i % 7}" for i in range(n)],
            "ts": rng.permutation(np.arange(n) * 2.0 + 1_700_000_000.0),  # distinct, shuffled
            "x0": rng.normal(size=n).round(3),
            "x1": rng.normal(size=n).round(3),
            "x2": rng.normal(size=n).round(3),
            "y": rng.integers(0, 2, size=n),
            "comment": ["note"] * n,
        }
    )


def write(df: pd.DataFrame, path, fmt: str) -> None:
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in df.to_dict(orient="records")))


def source(path, **kw) -> FileReplaySource:
    opts = {"columns": MAPPING, "label_delay_s": DELAY, "batch_size": 1000, **kw}
    return FileReplaySource(FileSourceConfig(path=str(path), **opts), FEATURES)


def read_all(src: FileReplaySource, position: int = 0) -> tuple[list[pd.DataFrame], int]:
    batches = []
    while not src.at_end(position):
        batch, nxt = src.read(position)
        assert nxt == position + len(batch) and len(batch) > 0
        batches.append(batch)
        position = nxt
    return batches, position


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_unsorted_file_replays_in_event_time_order_with_delayed_label_rows(tmp_path, fmt):
    raw = raw_rows()
    path = tmp_path / f"data.{fmt}"
    write(raw, path, fmt)
    stream = source(path).read(0)[0]

    assert len(stream) == 2 * N
    assert list(stream.columns) == ["kind", "event_id", "entity", "event_time", "x0", "x1", "x2", "label"]
    assert np.all(np.diff(stream["event_time"].to_numpy()) >= 0), "rows are not in event-time order"

    events = stream[stream["kind"] == "event"].set_index("event_id")
    labels = stream[stream["kind"] == "label"].set_index("event_id")
    assert sorted(events.index) == sorted(f"row-{i}" for i in range(N))
    assert events["label"].isna().all(), "events must not carry their label"
    assert labels[["x0", "x1", "x2"]].isna().all().all()
    for i, r in raw.iterrows():
        ev, lab = events.loc[f"row-{i}"], labels.loc[f"row-{i}"]
        assert ev["entity"] == r["customer_id"] == lab["entity"]
        assert ev["event_time"] == r["ts"]
        assert ev["x0"] == pytest.approx(r["x0"]) and ev["x2"] == pytest.approx(r["x2"])
        assert lab["event_time"] == r["ts"] + DELAY
        assert lab["label"] == r["y"]
    # a label never comes before its own event
    order = {(k, e): j for j, (k, e) in enumerate(zip(stream["kind"], stream["event_id"]))}
    assert all(order[("label", f"row-{i}")] > order[("event", f"row-{i}")] for i in range(N))


def test_same_position_gives_same_batch_and_batches_cover_the_stream_exactly(tmp_path):
    path = tmp_path / "data.parquet"
    write(raw_rows(), path, "parquet")
    whole = source(path).read(0)[0]
    src = source(path, batch_size=7)

    a, next_a = src.read(14)
    b, next_b = src.read(14)
    pd.testing.assert_frame_equal(a, b)
    assert next_a == next_b == 21

    batches, end = read_all(src, src.initial_position())
    assert end == 2 * N and src.at_end(end)
    assert [len(x) for x in batches] == [7] * (2 * N // 7) + [2 * N % 7]
    glued = pd.concat(batches, ignore_index=True)
    pd.testing.assert_frame_equal(glued, whole)
    assert not glued.duplicated(["kind", "event_id"]).any()
    empty, same = src.read(end)
    assert len(empty) == 0 and same == end


def test_pacing_at_speed_10(tmp_path):
    pacer = Pacer(10.0)
    assert pacer.delay(1000.0, now=50.0) == 0.0  # origin
    assert pacer.delay(1020.0, now=50.0) == pytest.approx(2.0)  # 20 s of event time at 10x
    assert pacer.delay(1020.0, now=51.5) == pytest.approx(0.5)
    assert pacer.delay(1010.0, now=53.0) == 0.0  # overdue: no wait

    # In read(): rows 10 s of event time apart, a fake clock that sleeping advances.
    path = tmp_path / "paced.csv"
    df = pd.DataFrame({"customer_id": ["a"] * 5, "ts": [0.0, 10.0, 20.0, 30.0, 40.0], "x0": 1.0, "x1": 1.0, "x2": 1.0})
    write(df, path, "csv")
    clock = {"now": 100.0}
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        clock["now"] += s

    src = FileReplaySource(
        FileSourceConfig(path=str(path), columns={"entity": "customer_id", "event_time": "ts"}, speed=10.0),
        FEATURES,
        clock=lambda: clock["now"],
        sleep=sleep,
    )
    batch, pos = src.read(0)
    assert batch["event_time"].tolist() == [0.0] and pos == 1 and sleeps == []  # only t=0 is due at the start
    batch, pos = src.read(pos)
    assert sleeps == [pytest.approx(1.0)]  # t=10 is due 1 s later at 10x
    assert batch["event_time"].tolist() == [10.0] and pos == 2
    clock["now"] += 2.5  # the consumer was busy: 25 s of event time are due now
    batch, pos = src.read(pos)
    assert batch["event_time"].tolist() == [20.0, 30.0] and pos == 4 and len(sleeps) == 1

    fast = source(path, columns={"entity": "customer_id", "event_time": "ts"})
    assert fast.pacer is None and len(fast.read(0)[0]) == 5


def test_bad_values_do_not_crash_and_are_rejected_by_the_shards(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "customer_id,ts,x0,x1,x2,y\n"
        "c1,2024-01-01T00:00:10Z,1.0,2.0,3.0,1\n"
        "c2,2024-01-01T00:00:05Z,abc,2.0,3.0,0\n"  # non-numeric field
        "c3,yesterday-ish,1.0,2.0,3.0,1\n"  # unparseable time
        "c4,2024-01-01 00:00:20,1.5,,3.0,\n"  # missing x1, no label
    )
    src = source(path, time_unit="datetime", label_delay_s=1)
    stream = src.read(0)[0]
    events = stream[stream["kind"] == "event"].set_index("event_id")
    assert len(events) == 4
    assert events.loc["row-1", "x0"] == "abc"  # kept as-is for the shard to reject
    assert np.isnan(events.loc["row-2", "event_time"])
    assert events.loc["row-0", "event_time"] == pd.Timestamp("2024-01-01T00:00:10Z").timestamp()
    assert events.loc["row-3", "event_time"] == pd.Timestamp("2024-01-01T00:00:20Z").timestamp()
    # labels only for rows that have one and a time to attach it to
    assert sorted(stream.loc[stream["kind"] == "label", "event_id"]) == ["row-0", "row-1"]

    _, reasons = validate(stream, FEATURES)
    why = dict(zip(zip(stream["kind"], stream["event_id"]), reasons))
    assert why[("event", "row-1")] == "non_numeric:x0"
    assert why[("event", "row-2")] == "missing:event_time"
    assert why[("event", "row-3")] == "missing:x1"
    assert why[("event", "row-0")] == "" and why[("label", "row-0")] == ""


def test_time_units_ids_and_mixed_json_lines(tmp_path):
    path = tmp_path / "events.json"  # .json is read as JSON lines
    path.write_text(
        '{"id": 11, "user": 5, "t_ms": 3000, "x0": 1, "x1": 2, "x2": 3}\n'
        "\n"
        '{"id": 12, "user": 6, "t_ms": 1000, "x0": "oops", "x1": 2, "x2": 3}\n'  # number then string: pyarrow refuses
        "this line is not json\n"
    )
    cfg = FileSourceConfig(
        path=str(path), columns={"event_id": "id", "entity": "user", "event_time": "t_ms"}, time_unit="ms"
    )
    stream = FileReplaySource(cfg, FEATURES).read(0)[0]
    assert stream["event_time"].tolist()[:2] == [1.0, 3.0]
    assert stream["event_id"].tolist()[:2] == ["12", "11"] and stream["entity"].tolist()[:2] == ["6", "5"]
    assert stream["x0"].tolist()[:2] == ["oops", 1.0]
    assert len(stream) == 3 and (stream["kind"] == "event").all()  # the broken line is a row the shards reject
    _, reasons = validate(stream, FEATURES)
    assert list(reasons) == ["non_numeric:x0", "", "missing:event_id"]

    ts = tmp_path / "ts.parquet"  # a real timestamp column, whatever time_unit says
    pq.write_table(
        pa.table({"entity": ["a", "b"], "event_time": pa.array([2_000_000, 1_000_000], pa.timestamp("us")), "x0": [1.0, 2.0]}), ts
    )
    out = FileReplaySource(FileSourceConfig(path=str(ts)), FEATURES).read(0)[0]
    assert out["event_time"].tolist() == [1.0, 2.0] and out["entity"].tolist() == ["b", "a"]


def test_config_mistakes_fail_at_start_naming_the_setting(tmp_path):
    path = tmp_path / "data.csv"
    write(raw_rows(5), path, "csv")
    with pytest.raises(ConfigError, match=r"stream\.file\.columns\.entity: column 'cust' not in"):
        source(path, columns={"entity": "cust", "event_time": "ts"})
    with pytest.raises(ConfigError, match=r"stream\.file\.columns\.event_time: no 'event_time' column"):
        source(path, columns={"entity": "customer_id"})
    with pytest.raises(ConfigError, match=r"stream\.file\.path: no such file"):
        source(tmp_path / "missing.csv")
    with pytest.raises(ConfigError, match=r"stream\.file\.format"):
        source(tmp_path / "data.txt")


def test_module_docstring_examples_run():
    result = doctest.testmod(file_source)
    assert result.attempted > 0 and result.failed == 0
