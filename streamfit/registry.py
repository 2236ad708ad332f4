"""Model registry on a filesystem (local directory or object store) through ``pyarrow.fs``.

Layout under the root::

    versions/v000001/model.ubj   booster in XGBoost's UBJSON format (never pickle)
    versions/v000001/meta.json   metadata, including the model's sha256 — written LAST: the commit marker
    aliases.json                 {"generation": 7, "aliases": {"live": 3, "previous": 2, ...}, "writer": ...}
    audit/<time>-<id>.json       one immutable file per audit entry (append-only on object stores too)
    tmp/                         local temporaries (renamed into place); stale ones are removed

The root is a local path or a URI that ``pyarrow.fs.FileSystem.from_uri`` understands, with
its options in the query string, for example
``s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1``
(credentials from the usual ``AWS_*`` environment variables).

Object stores have no atomic directory rename (pyarrow's ``S3FileSystem.move`` cannot move a
directory at all), so a version is committed the same way on every filesystem: the model
file is written first, then ``meta.json``, each as one atomic object write (a single PUT on
an object store; a temporary file renamed into place on a local disk). Readers count a
version only once its ``meta.json`` exists, so they never see a half-written version; a
crashed writer's leftovers are invisible and are removed by the next ``register``. A
committed version is never written again (versions are immutable), and ``load`` checks the
model's sha256 against ``meta.json``. Writers are serialised by design (the trainer actor
registers, the rollout controller moves aliases); a second writer with a stale view of the
versions is refused (``RegistryError``) rather than overwriting a committed version, and in
the worst interleaving it can only replace the other's model bytes, which ``load`` then
refuses by their sha256 — never a silently wrong model.

Aliases have several writers (the trainer names a candidate, the controller moves ``live`` and
``previous``), so ``set_alias`` is a compare-and-set on ``aliases.json``'s generation number: it
reads the aliases, changes one, and writes generation + 1 only if the file still holds the
generation it read (checked under a file lock on a local disk; on an object store, which has no
conditional PUT through ``pyarrow.fs``, checked just before the write and confirmed by reading the
writer's token back). A stale writer retries on fresh data, so no interleaving reverts another
writer's alias. Damaged files (a disk that lost a write) are reported by path: a version's
``meta.json`` raises ``RegistryError``, listings skip the entry with a warning, and a damaged
``aliases.json`` is rebuilt from the ``alias`` entries of the audit log (every alias change is
audited right after it is written, so the log holds the state; refusing instead would keep the
controller from starting at all).

Example:
    >>> import tempfile, numpy as np, xgboost as xgb
    >>> reg = Registry(tempfile.mkdtemp())
    >>> bst = xgb.train({"max_depth": 2}, xgb.DMatrix(np.eye(4), label=[0, 1, 0, 1]), 2)
    >>> reg.register(bst, {"features": ["a", "b", "c", "d"]})
    1
    >>> reg.load(1)[1]["features"]
    ['a', 'b', 'c', 'd']
    >>> reg.task(1).spec.task.value  # a version without a task is binary, with no categories
    'binary'
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import pyarrow.fs as pafs
import xgboost as xgb

from streamfit.dictionaries import CategoryDictionary, LabelDictionary
from streamfit.errors import ModelIntegrityError, RegistryError
from streamfit.retry import retrying
from streamfit.storage import STALE_AFTER_S, Storage  # noqa: F401  (Storage re-exported until importers move)
from streamfit.task import TaskSpec

if TYPE_CHECKING:
    from streamfit.config import FeaturesConfig, ModelConfig

MODEL_FILE = "model.ubj"
META_FILE = "meta.json"
ALIASES_FILE = "aliases.json"
log = logging.getLogger("streamfit.registry")


class StaleAliases(RegistryError):
    """Another writer changed the aliases between this writer's read and its write (retried on fresh data)."""

class Registry:
    """Versions, aliases and audit log of the models, on local disk or an object store."""

    def __init__(self, uri: str, filesystem: pafs.FileSystem | None = None) -> None:
        self.store = Storage(uri, filesystem, error=RegistryError, what="registry")
        self.fs, self.root, self.uri = self.store.fs, self.store.root, uri
        self._last_audit_us = 0
        for sub in ("versions", "tmp", "audit"):
            self.store.ensure_dir(self.store.path(sub))

    # -- low-level helpers -------------------------------------------------------------
    def _read(self, path: str) -> bytes:
        return self.store.get(path)

    @staticmethod
    def _vdir_name(version: int) -> str:
        return f"v{version:06d}"

    def _vpath(self, version: int, name: str = "") -> str:
        base = self.store.path("versions", self._vdir_name(version))
        return f"{base}/{name}" if name else base

    # -- versions ----------------------------------------------------------------------
    def version_numbers(self) -> list[int]:
        """All complete (committed) versions, ascending."""
        pattern = re.compile(r"^v(\d+)/" + re.escape(META_FILE) + "$")
        prefix = self.store.path("versions")
        out = []
        for info in self.store.list(prefix, recursive=True):
            m = pattern.match(info.path[len(prefix) + 1:])
            if m and info.type == pafs.FileType.File:
                out.append(int(m.group(1)))
        return sorted(out)

    def clean_staging(self, older_than_s: float = STALE_AFTER_S) -> list[str]:
        """Remove a crashed writer's leftovers: stale temporaries and uncommitted version directories."""
        removed = self.store.clean_stale(self.store.path("tmp"), older_than_s)
        # An uncommitted version directory is removed once it is stale, like temporaries.
        prefix = self.store.path("versions")
        committed = set(self.version_numbers())
        cutoff = time.time() - older_than_s
        newest: dict[str, float] = {}
        for info in self.store.list(prefix, recursive=True):
            top = info.path[len(prefix) + 1:].split("/", 1)[0]
            if not (top.startswith("v") and top[1:].isdigit()) or int(top[1:]) in committed:
                continue
            newest.setdefault(top, float("-inf"))
            if info.type == pafs.FileType.File:
                mtime = info.mtime.timestamp() if info.mtime is not None else float("inf")
                newest[top] = max(newest[top], mtime)
        for top, mtime in sorted(newest.items()):
            if mtime < cutoff:
                self.store.delete_dir(f"{prefix}/{top}")
                removed.append(f"{prefix}/{top}")
        return removed

    def register(self, booster: xgb.Booster, meta: dict[str, Any], actor: str = "trainer") -> int:
        """Store a booster with its metadata as the next version; returns the version number."""
        raw = bytes(booster.save_raw("ubj"))
        digest = hashlib.sha256(raw).hexdigest()
        existing = self.version_numbers()
        version = (existing[-1] + 1) if existing else 1
        token = uuid.uuid4().hex
        full_meta = dict(meta)
        full_meta.update(version=version, sha256=digest, format="ubj", registered_at=time.time(), writer=token)
        meta_path = self._vpath(version, META_FILE)
        if self.store.exists(meta_path):
            raise RegistryError(f"version {version} already exists (concurrent writer?)")
        # Leftovers of a writer that crashed before committing this number are invisible; the
        # model file is simply replaced (never a directory delete, which could race a committing writer).
        self.store.put(self._vpath(version, MODEL_FILE), raw)
        if self.store.exists(meta_path):
            raise RegistryError(f"version {version} was committed by another writer meanwhile")
        self.store.put(meta_path, json.dumps(full_meta, sort_keys=True).encode())  # the commit
        if json.loads(self._read(meta_path)).get("writer") != token:
            raise RegistryError(f"version {version} was committed by another writer meanwhile")
        self.audit("register", actor=actor, version=version, reason=meta.get("trigger", ""))
        try:
            self.clean_staging()
        except RegistryError:
            pass  # housekeeping only
        return version

    def meta(self, version: int) -> dict[str, Any]:
        """Metadata of one version."""
        try:
            version = int(version)
        except (TypeError, ValueError):
            raise RegistryError(f"unknown version {version!r}") from None
        if version < 1:
            raise RegistryError(f"unknown version {version}")
        try:
            raw = self._read(self._vpath(version, META_FILE))
        except RegistryError as err:
            raise RegistryError(f"unknown version {version} ({err})") from None
        return self._json(raw, self._vpath(version, META_FILE))

    @staticmethod
    def _json(raw: bytes, path: str) -> Any:
        try:
            return json.loads(raw)
        except ValueError as err:  # zero-length or truncated: a disk that lost a write
            raise RegistryError(f"damaged registry file {path}: {err}") from None

    def load(self, version: int) -> tuple[xgb.Booster, dict[str, Any]]:
        """Booster and metadata of a version, after checking the model's sha256."""
        meta = self.meta(version)
        raw = self._read(self._vpath(version, MODEL_FILE))
        digest = hashlib.sha256(raw).hexdigest()
        if digest != meta.get("sha256"):
            raise ModelIntegrityError(
                f"model v{version}: sha256 {digest[:12]}… does not match registered {str(meta.get('sha256'))[:12]}…"
            )
        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        return booster, meta

    def task(self, version: int) -> VersionTask:
        """What a version predicts, with its label and category dictionaries (see ``version_task``)."""
        return version_task(self.meta(version))

    def list_versions(self) -> list[dict[str, Any]]:
        """Metadata of every version, ascending, with the aliases that point at it."""
        aliases = self.aliases()
        out = []
        for v in self.version_numbers():
            try:
                m = self.meta(v)
            except RegistryError as err:
                log.warning("version %d skipped: %s", v, err)
                continue
            m["aliases"] = sorted(a for a, av in aliases.items() if av == v)
            out.append(m)
        return out

    # -- aliases -----------------------------------------------------------------------
    def aliases(self) -> dict[str, int]:
        """Current aliases (live, candidate, previous …) to version numbers."""
        return dict(self._read_aliases()[1])

    def _read_aliases(self) -> tuple[int, dict[str, int], str | None]:
        """(generation, aliases, writer token) as stored; a damaged file is rebuilt from the audit log."""
        path = self.store.path(ALIASES_FILE)
        if not self.store.exists(path):
            return 0, {}, None
        try:
            doc = self._json(self._read(path), path)
        except RegistryError as err:
            log.warning("%s; aliases rebuilt from the audit log", err)
            return -1, self._aliases_from_audit(), None
        if isinstance(doc.get("aliases"), dict):
            return int(doc.get("generation", 0)), doc["aliases"], doc.get("writer")
        return 0, doc, None  # the format before generations: a plain mapping

    def _aliases_from_audit(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for entry in self.audit_log():
            if entry.get("event") == "alias":
                if entry.get("version") is None:
                    out.pop(entry.get("alias"), None)
                else:
                    out[entry["alias"]] = int(entry["version"])
        return out

    @contextmanager
    def _aliases_locked(self) -> Iterator[None]:
        """Exclusive between writers on this machine's disk (object stores: nothing to lock)."""
        if self.store.fs.type_name != "local":
            yield
            return
        fd = os.open(self.root, os.O_RDONLY)  # the registry's directory itself: no lock file to leave behind
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _set_alias_once(self, name: str, version: int | None) -> None:
        generation, current, _ = self._read_aliases()
        current = dict(current)
        if version is None:
            current.pop(name, None)
        else:
            current[name] = version
        token = uuid.uuid4().hex
        body = {"generation": max(generation, 0) + 1, "aliases": current, "writer": token}
        path = self.store.path(ALIASES_FILE)
        with self._aliases_locked():
            if self._read_aliases()[0] != generation:
                raise StaleAliases(f"{path} changed since generation {generation}")
            self.store.put(path, json.dumps(body, sort_keys=True).encode())
        if self._read_aliases()[2] != token:  # an object store's writer that raced past the check
            raise StaleAliases(f"{path} was overwritten by another writer")

    def set_alias(self, name: str, version: int | None, actor: str = "system", reason: str = "") -> None:
        """Point an alias at a version (None removes it) by compare-and-set on the aliases' generation
        (retried on fresh data when another writer got in first), and audit it."""
        if version is not None and version not in self.version_numbers():
            raise RegistryError(f"unknown version {version}")
        retrying(self._set_alias_once, name, version, on=(StaleAliases,), attempts=20, first_wait_s=0.005,
                 max_wait_s=0.2)
        self.audit("alias", actor=actor, alias=name, version=version, reason=reason)

    # -- audit -------------------------------------------------------------------------
    def audit(self, event: str, actor: str = "system", reason: str = "", **fields: Any) -> None:
        """Append one entry to the audit log (one new object per entry; entries are never rewritten)."""
        now = time.time()
        # strictly increasing within this process, so that entries list in the order they were made
        stamp = max(int(now * 1e6), self._last_audit_us + 1)
        self._last_audit_us = stamp
        entry = {"time": now, "event": event, "actor": actor, "reason": reason, **fields}
        name = f"{stamp:020d}-{uuid.uuid4().hex[:8]}.json"
        self.store.put(self.store.path("audit", name), json.dumps(entry, sort_keys=True).encode())

    def audit_log(self) -> list[dict[str, Any]]:
        """All audit entries, oldest first."""
        infos = self.store.list(self.store.path("audit"))
        paths = sorted(i.path for i in infos if i.base_name.endswith(".json") and i.type == pafs.FileType.File)
        out = []
        for p in paths:
            try:
                out.append(self._json(self._read(p), p))
            except RegistryError as err:
                log.warning("audit entry skipped: %s", err)
        return out


# -- what a version predicts -------------------------------------------------------------

@dataclass(frozen=True)
class VersionTask:
    """A version's task (and objective), label dictionary (multiclass) and category dictionary (if any)."""

    spec: TaskSpec
    labels: LabelDictionary | None
    categories: CategoryDictionary | None
    value_edges: list[float] | None = None  # regression: quantiles of its predictions on its training rows


def version_task(meta: dict[str, Any]) -> VersionTask:
    """The task and dictionaries a version's meta records; a version from before tasks is binary, no categories."""
    task = meta.get("task", "binary")
    spec = TaskSpec(task, objective=meta.get("objective") if task == "regression" else None,
                    quantile_alpha=float(meta.get("quantile_alpha", 0.5)))
    labels = cats = None
    if meta.get("labels"):
        labels = LabelDictionary()
        labels.restore(meta["labels"])
    if meta.get("categories"):
        cats = CategoryDictionary()
        cats.restore(meta["categories"])
    edges = meta.get("reference_prediction") if task == "regression" else None
    return VersionTask(spec, labels, cats, list(edges) if edges else None)


def task_difference(meta: dict[str, Any], model: ModelConfig, features: FeaturesConfig) -> str:
    """Why a version does not fit a config's task and categorical fields ('' when it does), named like a
    feature-schema mismatch: task, objective, classes, categorical fields, categories the config does not allow."""
    got, want = version_task(meta), model.task_spec()
    parts = []
    if got.spec.task is not want.task:
        parts.append(f"task {got.spec.task.value} != serving {want.task.value}")
    elif got.spec.objective != want.objective:
        parts.append(f"objective {got.spec.objective} != serving {want.objective}")
    elif want.objective == "reg:quantileerror" and got.spec.quantile_alpha != want.quantile_alpha:
        parts.append(f"quantile_alpha {got.spec.quantile_alpha} != serving {want.quantile_alpha}")
    wanted_labels = model.label_dictionary()
    if wanted_labels is not None and got.spec.task is want.task:
        why = "no label dictionary" if got.labels is None else got.labels.diff(wanted_labels)
        parts += [f"classes: {why}"] if why else []
    mine = got.categories.categories if got.categories is not None else {}
    fields = {f.name: f for f in features.fields if f.categorical}
    # Each text column of the model row (a categorical field, or a categorical field's ``<field>_last``)
    # takes the field's allowed list.
    specs = {c: fields[c.removesuffix("_last") if c not in fields else c] for c in features.categorical_columns(model)}
    if sorted(mine) != sorted(specs):
        parts.append(f"categorical fields {sorted(mine)} != serving {sorted(specs)}")
    for name in sorted(set(mine) & set(specs)):
        outside = sorted(set(mine[name]) - set(specs[name].allowed or mine[name]))
        if outside:
            parts.append(f"{name}: {len(outside)} categories the serving config does not allow {outside[:5]}")
    if not parts:
        return ""
    return f"v{meta.get('version', '?')} task differs from the serving config's: " + "; ".join(parts)
