"""An offline replay through POST /predict (raw events) on real FeatureShards, without Ray: every event is
scored once the shards have applied every earlier event, and the model row it was scored on equals the
point-in-time training row the shard makes for it when its label arrives, column by column."""

from __future__ import annotations

import asyncio
import warnings

import numpy as np
import pandas as pd
import xgboost as xgb

from streamfit.actors.stream import FeatureShard
from streamfit.config import FeaturesConfig
from streamfit.schema import EventArrays, shard_of
from streamfit.serve.api import Backend, build_api
from streamfit.serve.auth import Authorizer
from streamfit.serve.lookup import LookupBatcher
from streamfit.serve.router import RouterCore
from streamfit.serve.slots import ModelSlot

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

CFG = FeaturesConfig(windows_s=[30, 120], label_history={"windows_s": [60]})
NAMES = CFG.feature_names()
FIELDS = [f.name for f in CFG.fields]
N_SHARDS = 2
LABEL_AFTER = 4  # an event's label arrives this many events later


class ShardsBackend(Backend):
    """Lookups answered by in-process shards through the replica's batcher."""

    def __init__(self, shards: list[FeatureShard]) -> None:
        async def call(shard: int, events: EventArrays, record: bool):
            await asyncio.sleep(0)
            return shards[shard].lookup(events, record)

        self.batcher = LookupBatcher(call, len(shards), wait_s=0.0)

    async def lookup(self, rows, record):
        return await self.batcher.lookup(rows, record)


def _stream(n: int, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = 1_000.0 + np.cumsum(rng.exponential(4.0, n))
    df = pd.DataFrame({"kind": "event", "event_id": [f"e{i}" for i in range(n)],
                       "entity": rng.choice([f"c{i}" for i in range(6)], n), "event_time": t})
    for f in FIELDS:
        df[f] = rng.normal(0, 5, n)
    df["label"] = (rng.random(n) < 0.4).astype(float)
    return df


def _booster() -> xgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(NAMES)))
    bst = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                    xgb.DMatrix(x, label=x[:, 0] > 0, feature_names=NAMES), 10)
    bst.set_param({"nthread": 1})  # as in a slot: one row gains nothing from threads
    return bst


def test_served_rows_equal_point_in_time_training_rows():
    shards = [FeatureShard(CFG, i, training_features="point_in_time") for i in range(N_SHARDS)]
    core = RouterCore(NAMES, seed=0)
    bst = _booster()
    core.slots["blue"] = ModelSlot("blue", 1, bst, NAMES)
    core.desired_versions["blue"] = 1
    # Scored with event ids (the served vectors are recorded): the ingest scope, open here (rules: test_auth_scopes).
    client = TestClient(build_api(core, ShardsBackend(shards), CFG, auth=Authorizer({}, ["read", "ingest"])),
                        raise_server_exceptions=True)
    stream = _stream(80)
    served: dict[str, tuple[dict, float]] = {}
    training, skews = [], []

    def apply(rows: pd.DataFrame, clock: float) -> None:
        owner = shard_of(rows["entity"].values, N_SHARDS)
        for i, shard in enumerate(shards):
            if (owner == i).any():  # each shard numbers its own batches (a shard without rows skips a beat)
                out = shard.process(shard.last_batch_id + 1, rows[owner == i],
                                    watermark=clock - CFG.allowed_lateness_s, clock=clock)
                training.append(out.training_rows)
                skews.append(out.skew or {"compared_rows": 0, "rows_differing": 0})

    for i, ev in stream.iterrows():
        event = {"entity": ev["entity"], "event_time": ev["event_time"], "event_id": ev["event_id"],
                 **{f: ev[f] for f in FIELDS}}
        r = client.post("/predict", json={"event": event, "return_features": True})
        assert r.status_code == 200, r.text
        served[ev["event_id"]] = (r.json()["features"], r.json()["probability"])
        rows = stream.iloc[[i]].drop(columns="label")
        if i >= LABEL_AFTER:  # the label of an earlier event arrives with this one
            j = i - LABEL_AFTER
            label = stream.iloc[[j]].assign(kind="label", event_time=ev["event_time"])
            rows = pd.concat([rows, label[["kind", "event_id", "entity", "event_time", "label"]]], ignore_index=True)
        apply(rows, float(ev["event_time"]))
    rows = pd.concat([t for t in training if len(t)], ignore_index=True)
    assert len(rows) == len(stream) - LABEL_AFTER
    # Each scored event's served vector was recorded (it had an id) and matches: no skew.
    assert sum(k["compared_rows"] for k in skews) == len(rows) and sum(k["rows_differing"] for k in skews) == 0
    assert rows["label_count_1m"].max() > 0 and rows["count_30s"].max() > 1  # history really was used
    for _, row in rows.iterrows():
        feats, prob = served[row["event_id"]]
        want = row[NAMES].to_numpy(dtype=float)
        got = np.array([np.nan if feats[n] is None else feats[n] for n in NAMES])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=row["event_id"])  # NaN == NaN
        assert prob == float(bst.inplace_predict(want.reshape(1, -1))[0])  # the booster saw that very row
