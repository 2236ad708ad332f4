"""The stream plane: sources, the coordinator and the sharded feature state.

Owns: reading sources with replayable positions (synthetic, file, Kafka, HTTP ingest), the
stream-wide watermark, partitioning by the stable entity hash, the ``FeatureShard`` state
(validation, dedup, event-time windows, label join, point-in-time training rows), aligned
checkpoints and exactly-once recovery.

May import: the core package ``streamfit`` only.

Exposes the names in ``__all__`` (imported lazily, so a Serve replica that looks up a shard
does not import Kafka or file readers).
"""

from streamfit.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "CheckpointStore": "checkpoint",
    "CoordinatorActor": "coordinator",
    "Watermark": "partition",
    "Coordinator": "coordinator_core",
    "LocalRunner": "local_runner",
    "FeatureShard": "feature_shard",
    "FeatureShardActor": "feature_shard",
    "ShardResult": "feature_shard",
    "LookupResult": "lookup",
    "ServedLog": "served_log",
    "FileReplaySource": "file_source",
    "HttpSource": "ingest",
    "IngestBufferActor": "ingest",
    "IngestLog": "ingest",
    "ingest_frame": "ingest",
    "KafkaSource": "kafka_source",
    "produce_events": "kafka_source",
    "FramesSource": "sources",
    "Source": "sources",
    "SyntheticSource": "sources",
    "make_source": "sources",
    "synthetic_source": "sources",
})
