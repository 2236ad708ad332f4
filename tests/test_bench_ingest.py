"""The ingest bench's figures: throughput by decile of the stream, and the offline vectorised pass
(what the bench compares the shards with at scale) equal to a FeatureShard's rows on a small stream."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamfit.actors.stream import FramesSource, LocalRunner
from streamfit.scripts.bench_ingest import ingest_config, make_batches
from streamfit.scripts.ingest_offline import compare, decile_rates, done_times, offline_features


def test_decile_rates_take_the_first_and_last_tenth_of_the_batches():
    events = np.full(20, 100)
    seconds = np.r_[[4.0, 4.0], np.ones(16), [2.0, 2.0]]  # the first two batches and the last two are slow
    done = 10.0 + np.cumsum(seconds)
    r = decile_rates(events, done, start=10.0)
    assert r["first_decile_events_per_s"] == 200 / 8
    assert r["last_decile_events_per_s"] == 200 / 4
    assert r["steady_state_ratio"] == 2.0


def test_done_times_shift_the_reads_by_the_batches_in_flight():
    reads = np.arange(10.0)
    np.testing.assert_array_equal(done_times(reads, end=20.0, depth=2), np.r_[np.arange(3.0, 10.0), [20.0] * 3])
    np.testing.assert_array_equal(done_times(reads[:2], end=5.0, depth=2), [5.0, 5.0])


@pytest.fixture(scope="module")
def small_stream():
    """A sparse stream (5,000 entities, 40,000 events over 5.5 h): windows fill, idle entities expire."""
    cfg = ingest_config(5_000, 2_000, events_per_second=2.0)
    batches = make_batches(cfg, 40_000)
    rows: list[pd.DataFrame] = []
    LocalRunner(cfg.features, FramesSource(batches), on_rows=lambda r, _clock: rows.append(r)).run()
    return cfg, batches, pd.concat(rows, ignore_index=True)


def test_offline_pass_equals_the_shards_rows(small_stream):
    cfg, batches, rows = small_stream
    offline = offline_features(batches, cfg.features)
    assert len(offline) == 40_000 and len(rows) == 39_000
    got = compare(rows, offline, cfg.features.feature_names(), 3600.0, 5.0 + 3 * 1000.0)
    assert got["rows_compared"] == 39_000 and got["max_abs_diff"] < 1e-9
    assert got["expired_nan"] > 0  # entities idle over an hour: the shard expired them, NaN accepted there
    assert (rows["count_1h"] > 0).mean() > 0.5


def test_compare_fails_loudly_on_a_difference(small_stream):
    cfg, batches, rows = small_stream
    offline = offline_features(batches, cfg.features)
    bad = rows.copy()
    bad.loc[100, "x0_mean_5m"] = np.nan_to_num(bad.loc[100, "x0_mean_5m"]) + 1e-6
    with pytest.raises(AssertionError, match="x0_mean_5m: 1 rows"):
        compare(bad, offline, cfg.features.feature_names(), 3600.0, 5.0 + 3 * 1000.0)
