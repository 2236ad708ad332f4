"""Issue 15, serving without Ray: slots of each task (categorical fields encoded with the version's dictionary,
unseen categories counted), refusal of a version of another task, ``/predict`` answers and OpenAPI per task,
the prediction log per contract 4, and 422s naming the field for a number given as a category or the reverse."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from serve_task_models import BINARY, CLASSES, MULTICLASS, REGRESSION, features_cfg, fit_version, row
from streamfit.config import ModelConfig
from streamfit.registry import Registry
from streamfit.serve.api import Backend, build_api
from streamfit.serve.auth import Authorizer
from streamfit.serve.backend import load_slot, schema_hashes, serving_core
from streamfit.serve.lookup import EventRows, LookupAnswer, LookupBatcher
from streamfit.serve.router import RouterCore
from streamfit.serve.slots import FeatureMismatchError, ModelSlot, score_batch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

FEATURES = features_cfg()


class LoggingBackend(Backend):
    """Keeps the prediction log; raw events' lookups answer the request's own fields plus zeros."""

    def __init__(self) -> None:
        self.logged: list[tuple[Any, ...]] = []
        self.looked_up: list[EventRows] = []

    def log_predictions(self, rows: list[tuple[Any, ...]]) -> None:
        self.logged.extend(rows)

    async def lookup(self, rows: EventRows, record: bool) -> LookupAnswer:
        self.looked_up.append(rows)
        names = FEATURES.feature_names(self.model)
        x = np.zeros((len(rows), len(names)))
        x[:, names.index("x0")] = rows.x[:, rows.fields.index("x0")]
        x[:, names.index("colour")] = np.nan  # its text comes in `text`, as the shards send it
        n = len(rows)
        return LookupAnswer(x, names, np.full(n, 5.0), np.full(n, 5.0), [""] * n, {"colour": rows.text["colour"]})


def _served(tmp_path: Path, model: ModelConfig) -> tuple[TestClient, RouterCore, LoggingBackend]:
    registry = Registry(str(tmp_path / "reg"))
    version = fit_version(registry, model, FEATURES)
    core = serving_core(FEATURES, model, seed=0)
    core.slots["blue"] = load_slot(registry, "blue", version, core.feature_names, FEATURES.schema_hash(model), model,
                                   FEATURES)
    core.desired_versions["blue"] = version
    backend = LoggingBackend()
    backend.model = model
    api = build_api(core, backend, FEATURES, model=model, auth=Authorizer({}, ["read", "ingest"]))
    return TestClient(api, raise_server_exceptions=False), core, backend


def test_a_regression_slot_answers_values_and_counts_unseen_categories(tmp_path: Path) -> None:
    client, core, backend = _served(tmp_path, REGRESSION)
    slot = core.slots["blue"]
    assert slot.verified is True  # the recorded sample's text re-encoded by the version's dictionary
    names = core.feature_names
    r = client.post("/predict", json={"features": row(names, "red"), "event_id": "e1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"prediction", "model_version", "slot"} and isinstance(body["prediction"], float)
    batch = client.post("/predict", json={"rows": [row(names, "red"), row(names, "purple"), row(names, None)],
                                          "event_ids": ["e2", "e3", "e4"]}).json()
    assert set(batch) == {"predictions", "model_version", "slot"} and len(batch["predictions"]) == 3
    red, unseen, missing = batch["predictions"]
    assert red > unseen and unseen == pytest.approx(missing)  # unseen is scored as missing
    assert core.stats()["unseen_categories"] == {"colour": 1}  # None is missing, not unseen
    assert client.get("/healthz").json()["unseen_categories"] == {"colour": 1}
    assert [type(p) for _, _, _, p, _ in backend.logged] == [float] * 4  # contract 4: the value
    assert backend.logged[0][:3] == ("e1", 1, "blue") and backend.logged[0][3] == pytest.approx(body["prediction"])


def test_a_multiclass_slot_answers_the_class_and_every_probability(tmp_path: Path) -> None:
    client, core, backend = _served(tmp_path, MULTICLASS)
    names = core.feature_names
    body = client.post("/predict", json={"features": row(names, "red", x0=2.0), "event_id": "e1"}).json()
    assert body["prediction"] == "high" and body["class_index"] == 2
    assert list(body["probabilities"]) == CLASSES and sum(body["probabilities"].values()) == pytest.approx(1.0)
    batch = client.post("/predict", json={"rows": [row(names, "green", x0=-2.0), row(names, "blue", x0=0.0)]}).json()
    assert batch["predictions"] == ["low", "mid"] and batch["class_indices"] == [0, 1]
    assert len(batch["probabilities"]) == 2 and list(batch["probabilities"][0]) == CLASSES
    (event_id, version, slot, probs, _), = backend.logged
    assert (event_id, version, slot) == ("e1", 1, "blue") and len(probs) == 3  # contract 4: k probabilities
    assert probs == pytest.approx([body["probabilities"][c] for c in CLASSES])
    # The slot's request figures bin the predicted class (the canary's shift test compares class mixes).
    preds = core.stats_by_slot["blue"].preds
    assert preds.sum() == 3 and preds[int((2 + 0.5) / 3 * len(preds))] >= 1


@pytest.mark.parametrize("model", [REGRESSION, MULTICLASS], ids=["regression", "multiclass"])
def test_bad_inputs_are_422s_naming_the_field(tmp_path: Path, model: ModelConfig) -> None:
    client, core, _ = _served(tmp_path, model)
    names = core.feature_names
    for body, loc in (({"features": row(names, colour=3)}, ["body", "features", "colour"]),
                      ({"features": {**row(names), "x0": "red"}}, ["body", "features", "x0"]),
                      ({"rows": [row(names), row(names, colour=True)]}, ["body", "rows", 1, "colour"]),
                      ({"event": {"entity": "u1", "x0": 1.0, "colour": 7}}, ["body", "event", "colour"]),
                      ({"event": {"entity": "u1", "x0": "red", "colour": "red"}}, ["body", "event", "x0"])):
        r = client.post("/predict", json=body)
        assert r.status_code == 422 and loc in [d["loc"] for d in r.json()["detail"]], (body, r.text)


def test_raw_events_send_categories_as_text_and_answer_per_task(tmp_path: Path) -> None:
    client, core, backend = _served(tmp_path, MULTICLASS)
    r = client.post("/predict", json={"events": [{"entity": "u1", "x0": 2.0, "colour": "red", "event_id": "e1"},
                                                 {"entity": "u2", "x0": -2.0, "colour": "teal"}],
                                      "return_features": True})
    assert r.status_code == 200, r.text
    first, second = r.json()["predictions"]
    assert first["prediction"] == "high" and first["class_index"] == 2 and first["features"]["colour"] == "red"
    assert set(second["probabilities"]) == set(CLASSES) and second["features"]["colour"] == "teal"
    sent = backend.looked_up[0]
    assert sent.text["colour"].tolist() == ["red", "teal"] and np.isnan(sent.x[:, sent.fields.index("colour")]).all()
    arrays = sent.arrays()
    assert arrays.text["colour"].tolist() == ["red", "teal"]  # as EventArrays carries them to the shards
    assert core.unseen == {"colour": 1} and len(backend.logged[0][3]) == 3


@pytest.mark.parametrize("model,names", [(BINARY, {"Prediction", "EventPrediction"}),
                                         (REGRESSION, {"ValuePrediction", "ValueBatchPrediction",
                                                       "ValueEventPrediction", "ValueEventBatchPrediction"}),
                                         (MULTICLASS, {"ClassPrediction", "ClassBatchPrediction",
                                                       "ClassEventPrediction", "ClassEventBatchPrediction"})],
                         ids=["binary", "regression", "multiclass"])
def test_openapi_documents_the_deployed_tasks_answer(model: ModelConfig, names: set[str]) -> None:
    core = serving_core(FEATURES, model)
    spec = TestClient(build_api(core, Backend(), FEATURES, model=model)).get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    answers = {"Prediction", "BatchPrediction", "EventPrediction", "EventBatchPrediction", "ValuePrediction",
               "ValueBatchPrediction", "ValueEventPrediction", "ValueEventBatchPrediction", "ClassPrediction",
               "ClassBatchPrediction", "ClassEventPrediction", "ClassEventBatchPrediction"}
    assert names <= set(schemas) and not (answers - names - {"BatchPrediction", "EventBatchPrediction"}) & set(schemas)
    colour = schemas["FeatureRow"]["properties"]["colour"]
    assert {"type": "string", "maxLength": 200} in colour["anyOf"]  # a category is text


@pytest.mark.parametrize("version_model,serving_model,why", [
    (REGRESSION, BINARY, "task regression != serving binary"),
    (MULTICLASS, REGRESSION, "task multiclass != serving regression"),
    (MULTICLASS, ModelConfig(task="multiclass", classes=["low", "mid", "top"]), "classes:"),
    (REGRESSION, ModelConfig(task="regression", objective="reg:absoluteerror"), "objective reg:squarederror"),
], ids=["regression-for-binary", "multiclass-for-regression", "other-classes", "other-objective"])
def test_a_version_of_another_task_is_refused_naming_the_difference(tmp_path: Path, version_model: ModelConfig,
                                                                     serving_model: ModelConfig, why: str) -> None:
    registry = Registry(str(tmp_path / "reg"))
    version = fit_version(registry, version_model, FEATURES)
    core = serving_core(FEATURES, serving_model)
    with pytest.raises(FeatureMismatchError, match=why) as err:
        load_slot(registry, "blue", version, core.feature_names, FEATURES.schema_hash(serving_model), serving_model,
                  FEATURES)
    assert str(err.value).startswith(f"v{version} task differs")


def test_a_version_without_the_categorical_field_is_refused(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "reg"))
    numeric = features_cfg(categorical=False)
    version = fit_version(registry, REGRESSION, numeric)
    core = serving_core(FEATURES, REGRESSION)
    with pytest.raises(FeatureMismatchError, match=r"categorical fields \[\] != serving \['colour'\]"):
        load_slot(registry, "blue", version, core.feature_names, None, REGRESSION, FEATURES)


def test_a_slot_deployment_answers_each_request_its_rows_and_unseen_counts(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "reg"))
    version = fit_version(registry, MULTICLASS, FEATURES)
    core = serving_core(FEATURES, MULTICLASS)
    slot = load_slot(registry, "green", version, core.feature_names, None, MULTICLASS, FEATURES)
    names = core.feature_names
    xs = [np.array([[r[n] for n in names] for r in rows], dtype=object)
          for rows in ([row(names, "red")], [row(names, "mauve"), row(names, "lilac"), row(names, None)])]
    first, second = score_batch(slot, xs)
    assert first["probs"].shape == (1, 3) and second["probs"].shape == (3, 3)
    assert first["unseen"] == {"colour": 0} and second["unseen"] == {"colour": 2}


def test_a_version_hashed_with_or_without_the_task_is_taken_another_schema_is_refused(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "reg"))
    version = fit_version(registry, MULTICLASS, FEATURES)
    booster, meta = registry.load(version)
    core = serving_core(FEATURES, MULTICLASS)
    hashes = schema_hashes(FEATURES, MULTICLASS)
    assert len(hashes) == 2 and schema_hashes(FEATURES, BINARY) == (FEATURES.schema_hash(),)
    for given in (FEATURES.schema_hash(MULTICLASS), FEATURES.schema_hash()):
        slot = ModelSlot.from_registry("blue", version, booster, {**meta, "schema_hash": given}, core.feature_names,
                                       hashes, MULTICLASS, FEATURES)
        assert slot.verified is True
    with pytest.raises(FeatureMismatchError, match="schema hash 0123 != serving .* or "):
        ModelSlot.from_registry("blue", version, booster, {**meta, "schema_hash": "0123"}, core.feature_names, hashes,
                                MULTICLASS, FEATURES)


def test_lookups_split_and_merge_the_categorical_text_per_request_and_shard() -> None:
    calls: list[int] = []

    async def call(shard: int, events: Any, record: bool) -> Any:
        calls.append(shard)
        n = len(events)
        text = {"colour": np.array([f"{c}@{shard}" for c in events.text["colour"]], dtype=object)}
        return SimpleNamespace(features=np.full((n, 2), float(shard)), feature_names=["x0", "colour"],
                               times=events.event_time, as_of=1.0, reasons=[""] * n, text=text)

    batcher = LookupBatcher(call, num_shards=2, wait_s=0.001)
    entities = [f"u{i}" for i in range(8)]
    rows = [EventRows.of([{"entity": e, "x0": 1.0, "colour": f"c{e}"} for e in entities[:5]], ["x0", "colour"],
                         ("colour",)),
            EventRows.of([{"entity": e, "x0": 1.0, "colour": None} for e in entities[5:]], ["x0", "colour"],
                         ("colour",))]

    async def main() -> list[LookupAnswer]:
        return list(await asyncio.gather(*(batcher.lookup(r) for r in rows)))

    first, second = asyncio.run(main())
    assert sorted(calls) == [0, 1]  # one call per shard for both requests
    owners = [int(first.features[i, 0]) for i in range(5)]
    assert first.text["colour"].tolist() == [f"cu{i}@{s}" for i, s in enumerate(owners)]
    assert second.text["colour"].tolist() == [f"None@{int(s)}" for s in second.features[:, 0]]


def test_slot_deployments_report_unseen_categories_to_the_router() -> None:
    class Handle:
        class predict:  # noqa: N801  (a DeploymentHandle's method)
            @staticmethod
            async def remote(x: np.ndarray) -> dict[str, Any]:
                return {"version": 4, "probs": np.full((len(x), 3), 1 / 3), "unseen": {"colour": 2}}

    core = serving_core(FEATURES, MULTICLASS, remote={"blue": Handle(), "green": Handle()})
    seen: list[tuple[str, int]] = []
    core.on_unseen = lambda f, n: seen.append((f, n))

    async def main() -> tuple[str, int, np.ndarray]:
        await core.apply({"slots": {"blue": 4, "green": None}, "weights": {"blue": 100, "green": 0}, "revision": 1},
                         lambda s, v: None)
        return await core.apredict(np.zeros((2, len(core.feature_names)), dtype=object))

    slot, version, probs = asyncio.run(main())
    assert (slot, version, probs.shape) == ("blue", 4, (2, 3)) and core.unseen == {"colour": 2} and seen == [("colour", 2)]
