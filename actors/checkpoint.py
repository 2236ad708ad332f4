"""Aligned checkpoints on a filesystem or object store (``pyarrow.fs``): shard snapshots and manifests.

Layout under the root::

    shards/000000012/shard-0/{meta.json, events.arrow, labels.arrow, pending.arrow, dedup.arrow}
    manifests/000000012.json   {"checkpoint_id", "batch_id", "position", "num_shards", "time"}

Each shard's snapshot is written to a temporary directory and moved into place; the
manifest is written last, so a checkpoint exists only once every shard's part is complete.
Loading with a different shard count re-partitions the saved state by the stable key hash.

Example:
    >>> import tempfile
    >>> from streamfit.config import FeaturesConfig
    >>> from streamfit.actors.feature_shard import FeatureShard
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> _ = store.write_shard(1, 0, FeatureShard(FeaturesConfig()).snapshot())
    >>> store.write_manifest(1, batch_id=5, position=5, num_shards=1)
    >>> store.latest_manifest()["batch_id"], store.load_shard_state(0, 1, FeaturesConfig())["meta"]["last_batch_id"]
    (5, 0)
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

from streamfit.config import FeaturesConfig
from streamfit.schema import hash_keys, shard_of_hash


def _resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        path = os.path.abspath(uri)
        os.makedirs(path, exist_ok=True)
        return pafs.LocalFileSystem(), path
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


def _matrix_table(prefix: str, m: np.ndarray, **cols: np.ndarray) -> pa.Table:
    data = {k: pa.array(v) for k, v in cols.items()}
    m = np.asarray(m)
    m = m.reshape(-1, 1) if m.ndim == 1 else m
    for j in range(m.shape[1]):
        data[f"{prefix}{j}"] = pa.array(m[:, j])
    return pa.table(data)


def _matrix(table: pa.Table, prefix: str) -> np.ndarray:
    names = sorted((c for c in table.column_names if c.startswith(prefix) and c[len(prefix):].isdigit()),
                   key=lambda c: int(c[len(prefix):]))
    if not names:
        return np.zeros((table.num_rows, 0))
    return np.column_stack([table[c].to_numpy(zero_copy_only=False) for c in names]).astype(np.float64)


class CheckpointStore:
    """Reads and writes shard snapshots and checkpoint manifests."""

    def __init__(self, uri: str, filesystem: pafs.FileSystem | None = None) -> None:
        if filesystem is not None:
            self.fs, self.root = filesystem, uri.split("://", 1)[-1].rstrip("/")
        else:
            self.fs, self.root = _resolve(uri)
        self.uri = uri
        for sub in ("shards", "manifests", "tmp"):
            self.fs.create_dir(f"{self.root}/{sub}", recursive=True)

    def _write(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as out:
            out.write(data)

    def _read(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def _write_table(self, path: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        self._write(path, sink.getvalue().to_pybytes())

    def _read_table(self, path: str) -> pa.Table:
        return ipc.open_file(pa.BufferReader(self._read(path))).read_all()

    # -- writes --------------------------------------------------------------------------
    def write_shard(self, checkpoint_id: int, shard_id: int, snap: dict[str, Any]) -> str:
        """Write one shard's snapshot atomically; returns its directory."""
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
        self.fs.create_dir(tmp, recursive=True)
        self._write(f"{tmp}/meta.json", json.dumps(snap["meta"]).encode())
        for name in ("events", "labels"):
            st = snap[name]
            self._write_table(f"{tmp}/{name}.arrow", _matrix_table("v", st["values"], keys=st["keys"], times=st["times"]))
        p = snap["pending"]
        self._write_table(f"{tmp}/pending.arrow", _matrix_table(
            "f", p["feats"], ids=p["ids"], event_ids=p["event_ids"].astype(str), entities=p["entities"].astype(str),
            times=p["times"]))
        self._write_table(f"{tmp}/dedup.arrow", pa.table({"ids": pa.array(snap["dedup"]["ids"], pa.uint64())}))
        parent = f"{self.root}/shards/{checkpoint_id:09d}"
        self.fs.create_dir(parent, recursive=True)
        final = f"{parent}/shard-{shard_id}"
        if self.fs.get_file_info(final).type != pafs.FileType.NotFound:
            self.fs.delete_dir(final)  # a retried write of the same checkpoint
        self.fs.move(tmp, final)
        return final

    def write_manifest(self, checkpoint_id: int, batch_id: int, position: Any, num_shards: int,
                       extra: dict[str, Any] | None = None) -> None:
        """Declare checkpoint ``checkpoint_id`` complete (every shard's part is written)."""
        body = {"checkpoint_id": checkpoint_id, "batch_id": batch_id, "position": position,
                "num_shards": num_shards, "time": time.time(), **(extra or {})}
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
        self._write(tmp, json.dumps(body).encode())
        self.fs.move(tmp, f"{self.root}/manifests/{checkpoint_id:09d}.json")
        self._prune(keep=checkpoint_id)

    def _prune(self, keep: int) -> None:
        """Forget checkpoints older than the previous complete one (two are kept)."""
        ids = self.checkpoint_ids()
        for old in ids[:-2]:
            self.fs.delete_file(f"{self.root}/manifests/{old:09d}.json")
            path = f"{self.root}/shards/{old:09d}"
            if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
                self.fs.delete_dir(path)

    # -- reads ---------------------------------------------------------------------------
    def checkpoint_ids(self) -> list[int]:
        """Complete checkpoints, ascending."""
        infos = self.fs.get_file_info(pafs.FileSelector(f"{self.root}/manifests", allow_not_found=True))
        return sorted(int(i.base_name[:-5]) for i in infos if i.base_name.endswith(".json"))

    def latest_manifest(self) -> dict[str, Any] | None:
        """The newest complete checkpoint's manifest, or None."""
        ids = self.checkpoint_ids()
        if not ids:
            return None
        return json.loads(self._read(f"{self.root}/manifests/{ids[-1]:09d}.json"))

    def read_shard(self, checkpoint_id: int, shard_id: int) -> dict[str, Any]:
        """One shard's snapshot as written by ``write_shard``."""
        d = f"{self.root}/shards/{checkpoint_id:09d}/shard-{shard_id}"
        snap: dict[str, Any] = {"meta": json.loads(self._read(f"{d}/meta.json"))}
        for name in ("events", "labels"):
            t = self._read_table(f"{d}/{name}.arrow")
            snap[name] = {"keys": t["keys"].to_numpy().astype(np.uint64), "times": t["times"].to_numpy().astype(np.int64),
                          "values": _matrix(t, "v")}
        t = self._read_table(f"{d}/pending.arrow")
        snap["pending"] = {"ids": t["ids"].to_numpy().astype(np.uint64),
                           "event_ids": np.asarray(t["event_ids"].to_pylist(), dtype=object),
                           "entities": np.asarray(t["entities"].to_pylist(), dtype=object),
                           "times": t["times"].to_numpy().astype(np.float64), "feats": _matrix(t, "f")}
        snap["dedup"] = {"ids": self._read_table(f"{d}/dedup.arrow")["ids"].to_numpy().astype(np.uint64)}
        return snap

    def load_shard_state(self, shard_id: int, num_shards: int, cfg: FeaturesConfig) -> dict[str, Any] | None:
        """Snapshot for shard ``shard_id`` of ``num_shards`` from the latest checkpoint (re-partitioned if needed)."""
        manifest = self.latest_manifest()
        if manifest is None:
            return None
        cid, old_n = manifest["checkpoint_id"], manifest["num_shards"]
        if old_n == num_shards:
            return self.read_shard(cid, shard_id)
        return repartition([self.read_shard(cid, i) for i in range(old_n)], shard_id, num_shards,
                           manifest["batch_id"])


def repartition(snaps: list[dict[str, Any]], shard_id: int, num_shards: int, batch_id: int) -> dict[str, Any]:
    """The part of several shards' snapshots that shard ``shard_id`` of ``num_shards`` owns."""

    def series(name: str) -> dict[str, np.ndarray]:
        keys = np.concatenate([s[name]["keys"] for s in snaps])
        times = np.concatenate([s[name]["times"] for s in snaps])
        values = np.concatenate([s[name]["values"] for s in snaps])
        mine = shard_of_hash(keys, num_shards) == shard_id
        order = np.lexsort((times[mine], keys[mine]))
        return {"keys": keys[mine][order], "times": times[mine][order], "values": values[mine][order]}

    pend = {k: np.concatenate([s["pending"][k] for s in snaps]) for k in snaps[0]["pending"]}
    mine = shard_of_hash(hash_keys(pend["entities"]), num_shards) == shard_id
    pend = {k: v[mine] for k, v in pend.items()}
    counters: dict[str, int] = {}
    return {
        "meta": {"last_batch_id": batch_id, "latest_us": max(s["meta"]["latest_us"] for s in snaps),
                 "clock_us": max(s["meta"].get("clock_us", s["meta"]["latest_us"]) for s in snaps),
                 "counters": counters, "shard_id": shard_id},
        "events": series("events"),
        "labels": series("labels"),
        "pending": pend,
        "dedup": {"ids": np.concatenate([s["dedup"]["ids"] for s in snaps])},
    }
