"""Aligned checkpoints on a filesystem or object store (``pyarrow.fs``): shard snapshots and manifests.

Layout under the root (a local path or a URI such as
``s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1``)::

    shards/000000012/shard-0/{events.arrow, labels.arrow, pending.arrow, dedup.arrow, [texts.arrow,] meta.json}
    manifests/000000012.json   {"checkpoint_id", "batch_id", "position", "num_shards", "time"}

The files hold the parts of ``FeatureShard.snapshot()``; ``dedup.arrow``'s schema metadata
``n_old`` says how many of its ids are the dedup memory's older generation (absent in
checkpoints written before: then all are). ``texts.arrow`` (``code``, ``text``) is the category map of a
config with a categorical ``<field>_last`` (``task_columns.CategoryTexts``), absent otherwise and in
checkpoints written before it.

Object stores have no atomic directory rename, so the same protocol is used everywhere:
each file is one atomic object write (a single PUT; on a local disk a temporary file
renamed into place); a shard's part writes its data files first and ``meta.json`` last,
and is complete only once ``meta.json`` exists; the manifest is written last of all, only
when every shard's part is complete, so a checkpoint exists only once it is whole. A
committed checkpoint is never rewritten. Leftovers of crashed writers are invisible and
are removed when a later checkpoint commits. A checkpoint found damaged at start (a
zero-length or truncated manifest or part file: a disk that lost writes) is reported with
its path and skipped for the one before it; two good checkpoints are kept for that. Loading with a different shard count
re-partitions the saved state by the stable key hash.

Example:
    >>> import tempfile
    >>> from streamfit.config import FeaturesConfig
    >>> from streamfit.actors.stream.feature_shard import FeatureShard
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> _ = store.write_shard(1, 0, FeatureShard(FeaturesConfig()).snapshot())
    >>> store.write_manifest(1, batch_id=5, position=5, num_shards=1)
    >>> store.latest_manifest()["batch_id"], store.load_shard_state(0, 1, FeaturesConfig())["meta"]["last_batch_id"]
    (5, 0)
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

from streamfit.config import FeaturesConfig
from streamfit.errors import StreamfitError
from streamfit.storage import STALE_AFTER_S, Storage
from streamfit.schema import hash_keys, shard_of_hash
from streamfit.actors.stream.served_log import text_arrays, text_matrix
from streamfit.actors.stream.task_columns import merge_texts

PART_MARKER = "meta.json"  # written last: a shard's part is complete once it exists

log = logging.getLogger(__name__)


WRITE_ATTEMPTS = 5  # tries of each checkpoint write, with exponential backoff (0.05 s, 0.1 s, …)


class CheckpointError(StreamfitError):
    """A checkpoint could not be written or read (storage error, incomplete or committed checkpoint)."""


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
        # A transient storage error must not cost a checkpoint (nor stop the stream): each write is retried.
        self.store = Storage(uri, filesystem, error=CheckpointError, what="checkpoint store",
                             write_attempts=WRITE_ATTEMPTS)
        self.fs, self.root, self.uri = self.store.fs, self.store.root, uri
        self.damaged: list[str] = []  # files of damaged checkpoints found, each once
        self.damaged_ids: set[int] = set()
        for sub in ("shards", "manifests", "tmp"):
            self.store.ensure_dir(self.store.path(sub))

    def _read(self, path: str) -> bytes:
        return self.store.get(path)

    def _write_table(self, path: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        self.store.put(path, sink.getvalue().to_pybytes())

    def _read_table(self, path: str) -> pa.Table:
        return ipc.open_file(pa.BufferReader(self._read(path))).read_all()

    def _cdir(self, checkpoint_id: int) -> str:
        return self.store.path("shards", f"{checkpoint_id:09d}")

    def _part(self, checkpoint_id: int, shard_id: int) -> str:
        return f"{self._cdir(checkpoint_id)}/shard-{shard_id}"

    def _manifest_path(self, checkpoint_id: int) -> str:
        return self.store.path("manifests", f"{checkpoint_id:09d}.json")

    # -- writes --------------------------------------------------------------------------
    def write_shard(self, checkpoint_id: int, shard_id: int, snap: dict[str, Any]) -> str:
        """Write one shard's snapshot (data files, then its ``meta.json``); returns its directory.

        Writing the part again before the checkpoint's manifest exists (a retried call)
        replaces it; a committed checkpoint is never rewritten (``CheckpointError``).
        """
        if self.store.exists(self._manifest_path(checkpoint_id)):
            raise CheckpointError(f"checkpoint {checkpoint_id} is already committed; its parts are immutable")
        final = self._part(checkpoint_id, shard_id)
        self.store.delete_file(f"{final}/{PART_MARKER}")  # a retried write: incomplete until rewritten
        for name in ("events", "labels"):
            st = snap[name]
            self._write_table(f"{final}/{name}.arrow",
                              _matrix_table("v", st["values"], keys=st["keys"], times=st["times"]))
        p = snap["pending"]
        pending = _matrix_table("f", p["feats"], ids=p["ids"], event_ids=p["event_ids"].astype(str),
                                entities=p["entities"].astype(str), times=p["times"])
        for name, col in text_arrays(p.get("cats")).items():  # categorical fields' text, when there are any
            pending = pending.append_column(name, col)
        self._write_table(f"{final}/pending.arrow", pending)
        d = snap["dedup"]
        n_old = int(d.get("n_old", len(d["ids"])))
        self._write_table(f"{final}/dedup.arrow", pa.table({"ids": pa.array(d["ids"], pa.uint64())},
                                                          metadata={"n_old": str(n_old)}))
        if "texts" in snap:
            t = snap["texts"]
            self._write_table(f"{final}/texts.arrow", pa.table({"code": pa.array(t["codes"], pa.float64()),
                                                                "text": pa.array(list(t["texts"]), pa.string())},
                                                               metadata={"wait": str(int(t.get("wait", 0)))}))
        self.store.put(f"{final}/{PART_MARKER}", json.dumps(snap["meta"]).encode())  # the part's commit
        return final

    def part_complete(self, checkpoint_id: int, shard_id: int) -> bool:
        """Whether shard ``shard_id``'s part of checkpoint ``checkpoint_id`` is completely written."""
        return self.store.exists(f"{self._part(checkpoint_id, shard_id)}/{PART_MARKER}")

    def write_manifest(self, checkpoint_id: int, batch_id: int, position: Any, num_shards: int,
                       extra: dict[str, Any] | None = None) -> None:
        """Declare checkpoint ``checkpoint_id`` complete; every shard's part must be written."""
        missing = [i for i in range(num_shards) if not self.part_complete(checkpoint_id, i)]
        if missing:
            raise CheckpointError(f"checkpoint {checkpoint_id}: parts of shards {missing} are not complete")
        body = {"checkpoint_id": checkpoint_id, "batch_id": batch_id, "position": position,
                "num_shards": num_shards, "time": time.time(), **(extra or {})}
        self.store.put(self._manifest_path(checkpoint_id), json.dumps(body).encode())  # the commit
        self._prune(keep=checkpoint_id)

    def _prune(self, keep: int) -> None:
        """Forget checkpoints older than the previous good one (two good ones are kept), and leftovers."""
        ids = self.checkpoint_ids()
        good = [i for i in ids if i not in self.damaged_ids]
        for old in [i for i in ids if len(good) > 2 and i < good[-2]]:
            self.store.delete_file(self._manifest_path(old))  # the checkpoint disappears first
            self.store.delete_dir(self._cdir(old))
        kept = {i for i in ids if len(good) <= 2 or i >= good[-2]}
        oldest_kept = min(kept) if kept else keep
        for info in self.store.list(self.store.path("shards")):
            name = info.base_name
            # parts of checkpoints that never committed (a crash before the manifest) and are now superseded
            if name.isdigit() and int(name) < oldest_kept and int(name) not in kept:
                self.store.delete_dir(info.path)
        self.store.clean_stale(self.store.path("tmp"), STALE_AFTER_S)

    # -- reads ---------------------------------------------------------------------------
    def checkpoint_ids(self) -> list[int]:
        """Complete checkpoints, ascending."""
        infos = self.store.list(self.store.path("manifests"))
        return sorted(int(i.base_name[:-5]) for i in infos
                      if i.base_name.endswith(".json") and i.base_name[:-5].isdigit() and i.type == pafs.FileType.File)

    def latest_manifest(self) -> dict[str, Any] | None:
        """The newest complete checkpoint whose files are all readable, or None when there is none.

        A damaged one (a zero-length or truncated manifest or part file) is logged with its
        path, listed in ``damaged`` and skipped; when every checkpoint is damaged the error
        names the files.
        """
        ids = self.checkpoint_ids()
        for cid in reversed(ids):
            manifest = self._readable(cid)
            if manifest is not None:
                return manifest
        if ids:
            raise CheckpointError(f"checkpoint store {self.store.shown}: every checkpoint is damaged "
                                  f"({', '.join(self.damaged)}); move them aside to start without one")
        return None

    def _readable(self, checkpoint_id: int) -> dict[str, Any] | None:
        """The manifest of checkpoint ``checkpoint_id`` if it and every file of its parts can be read."""
        path = self._manifest_path(checkpoint_id)
        try:
            manifest = json.loads(self._read(path))
            for shard in range(int(manifest["num_shards"])):
                part = self._part(checkpoint_id, shard)
                path = f"{part}/{PART_MARKER}"
                if not self.store.exists(path):
                    raise ValueError("the part is missing")
                json.loads(self._read(path))
                for info in self.store.list(part):
                    if info.base_name.endswith(".arrow"):
                        path = info.path
                        with self.store.open(path) as f:  # the footer: a truncated file has none
                            ipc.open_file(f)
            return manifest
        except (ValueError, KeyError, TypeError, pa.ArrowException) as err:  # storage errors propagate
            if path not in self.damaged:
                log.error("checkpoint %d is damaged: %s (%s); starting from an older one", checkpoint_id, path, err)
                self.damaged.append(path)
            self.damaged_ids.add(checkpoint_id)
            return None

    def last_id(self) -> int:
        """The highest checkpoint id written (damaged or not): the next one goes after it."""
        return max(self.checkpoint_ids(), default=0)

    def read_shard(self, checkpoint_id: int, shard_id: int) -> dict[str, Any]:
        """One shard's snapshot as written by ``write_shard`` (refused unless the part is complete)."""
        d = self._part(checkpoint_id, shard_id)
        if not self.part_complete(checkpoint_id, shard_id):
            raise CheckpointError(f"checkpoint {checkpoint_id} has no complete part for shard {shard_id}")
        snap: dict[str, Any] = {"meta": json.loads(self._read(f"{d}/{PART_MARKER}"))}
        for name in ("events", "labels"):
            t = self._read_table(f"{d}/{name}.arrow")
            snap[name] = {"keys": t["keys"].to_numpy().astype(np.uint64), "times": t["times"].to_numpy().astype(np.int64),
                          "values": _matrix(t, "v")}
        t = self._read_table(f"{d}/pending.arrow")
        snap["pending"] = {"ids": t["ids"].to_numpy().astype(np.uint64),
                           "event_ids": np.asarray(t["event_ids"].to_pylist(), dtype=object),
                           "entities": np.asarray(t["entities"].to_pylist(), dtype=object),
                           "times": t["times"].to_numpy().astype(np.float64), "feats": _matrix(t, "f")}
        cats = text_matrix(t)
        if cats is not None:
            snap["pending"]["cats"] = cats
        t = self._read_table(f"{d}/dedup.arrow")
        ids = t["ids"].to_numpy().astype(np.uint64)
        n_old = (t.schema.metadata or {}).get(b"n_old")  # absent in older checkpoints: all ids count as older
        snap["dedup"] = {"ids": ids, "n_old": len(ids) if n_old is None else int(n_old)}
        if self.store.exists(f"{d}/texts.arrow"):
            t = self._read_table(f"{d}/texts.arrow")
            snap["texts"] = {"codes": t["code"].to_numpy().astype(np.float64),
                             "texts": np.asarray(t["text"].to_pylist(), dtype=object),
                             "wait": int((t.schema.metadata or {}).get(b"wait", b"0"))}
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
    meta = {"last_batch_id": batch_id, "latest_us": max(s["meta"]["latest_us"] for s in snaps),
            "clock_us": max(s["meta"].get("clock_us", s["meta"]["latest_us"]) for s in snaps),
            "counters": counters, "shard_id": shard_id}
    if snaps[0]["meta"].get("task") is not None:  # what the rows mean (task_columns.TaskColumns.fingerprint)
        meta["task"] = snaps[0]["meta"]["task"]
    texts = [s["texts"] for s in snaps if "texts" in s]
    return {
        "meta": meta,
        "events": series("events"),
        "labels": series("labels"),
        "pending": pend,
        "dedup": _merge_dedup([s["dedup"] for s in snaps]),
        **({"texts": merge_texts(texts)} if texts else {}),
    }


def _merge_dedup(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several shards' remembered ids as one memory, generation by generation."""
    n_old = [int(p.get("n_old", len(p["ids"]))) for p in parts]
    older = [p["ids"][:n] for p, n in zip(parts, n_old)]
    newer = [p["ids"][n:] for p, n in zip(parts, n_old)]
    return {"ids": np.concatenate([*older, *newer]).astype(np.uint64), "n_old": sum(len(o) for o in older)}
