"""Event sources with a replayable position.

``SyntheticSource`` is the embedded default: a seeded stream of events for many
entities whose binary label arrives a fixed number of events later, with abrupt
concept drifts. Position ``k`` is batch number ``k``; reading it again gives the
same batch, so a checkpoint that records ``k`` can replay from there.

Example:
    >>> from streamfit.config import StreamConfig, FeaturesConfig
    >>> src = SyntheticSource(StreamConfig(batch_size=100, label_delay_events=50), FeaturesConfig())
    >>> (a, nxt), (b, _) = src.read(3), src.read(3)
    >>> a.equals(b), nxt, int((a["kind"] == "event").sum()), int((a["kind"] == "label").sum())
    (True, 4, 100, 100)
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from streamfit.config import Config, FeaturesConfig, ModelConfig, StreamConfig
from streamfit.schema import ENTITY, EVENT, EVENT_ID, EVENT_TIME, KIND, LABEL, LABEL_KIND

START_TIME = 1_700_000_000.0  # fixed epoch so event times are reproducible

Position = Any  # JSON-serialisable: it is written into checkpoint manifests


@runtime_checkable
class Source(Protocol):
    """What the coordinator needs of a source: batches at replayable positions.

    ``tests/test_source_contract.py`` checks every implementation: a position read again gives
    the same rows, and after ``commit(p)`` a new instance continues at ``p``.
    """

    def initial_position(self) -> Position:
        """Where to start when there is no checkpoint (e.g. the consumer group's committed offsets)."""

    def read(self, position: Position) -> tuple[pd.DataFrame, Position]:
        """The batch at ``position`` and the position after it; an empty frame when nothing is there yet."""

    def at_end(self, position: Position) -> bool:
        """True when a bounded source has nothing after ``position``."""

    def commit(self, position: Position) -> None:
        """A checkpoint at ``position`` completed: the source may forget what lies before it."""

    def close(self) -> None:
        """Release connections and files."""


class SyntheticSource:
    """Deterministic drifting stream: per-entity bias, label from a concept that flips at drift points."""

    def __init__(self, stream: StreamConfig, features: FeaturesConfig) -> None:
        self.cfg = stream
        self.fields = [f.name for f in features.fields]
        rng = np.random.default_rng([stream.seed, 1_000_003])
        # Each entity has a level that shows up in x0; the label depends on it, so
        # per-entity window means carry signal that a single row does not.
        self.entity_bias = rng.normal(0.0, 1.0, size=stream.entities)
        n = len(self.fields)
        self.concepts = [rng.normal(0.0, 1.0, size=n) for _ in range(4)]
        self.concept_bias_sign = [1.0, -1.0, 1.0, -1.0]
        self._block = lru_cache(maxsize=8)(self._make_block)

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size

    def initial_position(self) -> int:
        """Batch 0."""
        return 0

    def at_end(self, position: int) -> bool:
        """True past ``max_events`` (never for an unbounded stream)."""
        if self.cfg.max_events is None:
            return False
        return position >= -(-self.cfg.max_events // self.cfg.batch_size)

    def commit(self, position: int) -> None:
        """Nothing to release: any batch can be regenerated."""

    def close(self) -> None:
        """Nothing to close."""

    def concept_at(self, index: np.ndarray) -> np.ndarray:
        """Concept number in force for each global event index."""
        return (np.asarray(index) // self.cfg.drift_every) % len(self.concepts)

    def _make_block(self, k: int) -> dict[str, np.ndarray]:
        b = self.cfg.batch_size
        rng = np.random.default_rng([self.cfg.seed, k])
        idx = np.arange(k * b, (k + 1) * b, dtype=np.int64)
        ent = rng.integers(0, self.cfg.entities, size=b)
        x = rng.normal(0.0, 1.0, size=(b, len(self.fields)))
        bias = self.entity_bias[ent]
        x[:, 0] += 2.0 * bias
        concept = self.concept_at(idx)
        w = np.stack([self.concepts[c] for c in concept])
        sign = np.array([self.concept_bias_sign[c] for c in concept])
        noise_free = x.copy()
        noise_free[:, 0] -= 2.0 * bias  # the row itself only shows bias + noise; the window mean recovers the bias
        logit = (w * noise_free).sum(axis=1) + 2.0 * sign * bias
        label = (logit + rng.normal(0.0, 0.3, size=b) > 0).astype(np.float64)
        bad = rng.random(b) < self.cfg.bad_row_rate
        which = rng.integers(0, 2, size=b)
        x[bad & (which == 0), 1] = np.nan  # missing required field
        x[bad & (which == 1), 2] = 1e6  # out of range
        return {"idx": idx, "entity": ent, "x": x, "label": label}

    def _event_frame(self, blk: dict[str, np.ndarray]) -> pd.DataFrame:
        idx = blk["idx"]
        df = pd.DataFrame(
            {
                KIND: EVENT,
                EVENT_ID: np.char.add("ev", idx.astype(str)).astype(object),
                ENTITY: np.char.add("u", blk["entity"].astype(str)).astype(object),
                EVENT_TIME: START_TIME + idx / self.cfg.events_per_second,
            }
        )
        for j, name in enumerate(self.fields):
            df[name] = blk["x"][:, j]
        df[LABEL] = np.nan
        return df

    def read(self, position: int) -> tuple[pd.DataFrame, int]:
        """Batch number ``position`` (its events plus the labels that arrive during it) and the next position."""
        b, d = self.cfg.batch_size, self.cfg.label_delay_events
        blk = self._block(position)
        events = self._event_frame(blk)
        lo, hi = max(position * b - d, 0), max((position + 1) * b - d, 0)
        parts = [events]
        if hi > lo:
            labelled = []
            for k in range(lo // b, (hi - 1) // b + 1):
                other = self._block(k)
                keep = (other["idx"] >= lo) & (other["idx"] < hi)
                labelled.append((other["idx"][keep], other["entity"][keep], other["label"][keep]))
            idx = np.concatenate([p[0] for p in labelled])
            labels = pd.DataFrame(
                {
                    KIND: LABEL_KIND,
                    EVENT_ID: np.char.add("ev", idx.astype(str)).astype(object),
                    ENTITY: np.char.add("u", np.concatenate([p[1] for p in labelled]).astype(str)).astype(object),
                    EVENT_TIME: START_TIME + (idx + d) / self.cfg.events_per_second,
                }
            )
            for name in self.fields:
                labels[name] = np.nan
            labels[LABEL] = np.concatenate([p[2] for p in labelled])
            parts.append(labels)
        df = pd.concat(parts, ignore_index=True)
        # Arrival order is event time; labels and events interleave as they would on a wire.
        return df.sort_values(EVENT_TIME, kind="stable", ignore_index=True), position + 1


class FramesSource:
    """Replays a fixed list of batches (position = index of the next one): for embedding and tests."""

    def __init__(self, frames: list[pd.DataFrame]) -> None:
        self.frames = frames

    def initial_position(self) -> int:
        """The first frame."""
        return 0

    def read(self, position: int) -> tuple[pd.DataFrame, int]:
        """Frame ``position`` and the next position."""
        return self.frames[position], position + 1

    def at_end(self, position: int) -> bool:
        """True after the last frame."""
        return position >= len(self.frames)

    def commit(self, position: int) -> None:
        """Nothing to release."""

    def close(self) -> None:
        """Nothing to close."""


def synthetic_source(stream: StreamConfig, features: FeaturesConfig, model: ModelConfig | None = None) -> Source:
    """The embedded generator for the task: ``SyntheticSource`` for a binary task without categorical fields (as
    always), else ``task_source.TaskSyntheticSource`` (labels of the task, categorical fields as text)."""
    if (model is None or model.task == "binary") and not features.categorical_fields():
        return SyntheticSource(stream, features)
    from streamfit.actors.stream.task_source import TaskSyntheticSource

    return TaskSyntheticSource(stream, features, model or ModelConfig())


def make_source(cfg: Config) -> Source:
    """The source the config names."""
    if cfg.stream.source == "file":
        from streamfit.actors.stream.file_source import FileReplaySource

        return FileReplaySource(cfg.stream.file, cfg.features)
    if cfg.stream.source == "kafka":
        from streamfit.actors.stream.kafka_source import KafkaSource

        return KafkaSource(cfg.stream.kafka, cfg.features)
    if cfg.stream.source == "http":
        from streamfit.actors.stream.ingest import HttpSource, IngestBufferActor
        from streamfit.names import INGEST_NAME

        # The coordinator owns the buffer (a named actor lives as long as a handle to it does);
        # its write-ahead log sits beside the checkpoints, so a restarted buffer resumes.
        wal = f"{cfg.checkpoints.uri}/ingest" if cfg.checkpoints.enabled else None
        buffer = IngestBufferActor.options(name=INGEST_NAME, get_if_exists=True).remote(
            wal, cfg.stream.http.buffer_max_bytes, cfg.stream.http.retry_after_s)
        return HttpSource(buffer, cfg.stream.http.batch_size)
    return synthetic_source(cfg.stream, cfg.features, cfg.model)
