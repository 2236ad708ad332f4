"""Model registry on a filesystem (local directory or object store) through ``pyarrow.fs``.

Layout under the root::

    versions/v000001/model.ubj   booster in XGBoost's UBJSON format (never pickle)
    versions/v000001/meta.json   metadata, including the model's sha256 — written LAST: the commit marker
    aliases.json                 {"live": 3, "previous": 2, ...}
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

Example:
    >>> import tempfile, numpy as np, xgboost as xgb
    >>> reg = Registry(tempfile.mkdtemp())
    >>> bst = xgb.train({"max_depth": 2}, xgb.DMatrix(np.eye(4), label=[0, 1, 0, 1]), 2)
    >>> reg.register(bst, {"features": ["a", "b", "c", "d"]})
    1
    >>> reg.load(1)[1]["features"]
    ['a', 'b', 'c', 'd']
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow.fs as pafs
import xgboost as xgb

from streamfit.errors import ModelIntegrityError, RegistryError, StreamfitError

MODEL_FILE = "model.ubj"
META_FILE = "meta.json"
STALE_AFTER_S = 3600.0  # temporaries older than this belong to a crashed writer

# Filesystems whose single-object writes are atomic and which have no atomic directory rename.
OBJECT_STORES = frozenset({"s3", "gcs", "abfs"})
_SECRET_PARAMS = frozenset({"access_key", "secret_key", "session_token", "account_key", "sas_token"})


def redact_uri(uri: str) -> str:
    """``uri`` with any credentials (user info, secret query options) replaced by ``***``."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" not in netloc and not any(k.lower() in _SECRET_PARAMS for k, _ in parse_qsl(parts.query)):
        return uri
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = urlencode([(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in parse_qsl(parts.query)],
                      safe=":/,*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _root_of(uri: str) -> str:
    """The filesystem path of ``uri`` without scheme, credentials or query options."""
    if "://" not in uri:
        return uri.rstrip("/")
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{host}{parts.path}".rstrip("/")


class Storage:
    """Atomic object writes, reads and listings under one root on any ``pyarrow.fs`` filesystem.

    Storage errors are raised as ``error`` (a :class:`StreamfitError` subclass) naming the
    URI (credentials redacted) and the path.
    """

    def __init__(self, uri: str, filesystem: pafs.FileSystem | None = None,
                 error: type[StreamfitError] = StreamfitError, what: str = "store") -> None:
        self.uri, self.error, self.what = uri, error, what
        self.shown = redact_uri(uri)
        try:
            if filesystem is not None:
                self.fs, self.root = filesystem, _root_of(uri)
            elif "://" not in uri:
                self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
            else:
                self.fs, path = pafs.FileSystem.from_uri(uri)
                self.root = path.rstrip("/")
        except (ValueError, TypeError, OSError) as err:
            raise error(f"{what} URI {self.shown} cannot be opened: {err}") from None
        if not self.root:
            raise error(f"{what} URI {self.shown} names no bucket or directory")
        self.object_store = self.fs.type_name in OBJECT_STORES
        if self.object_store:
            bucket = self.root.split("/", 1)[0]
            info = self._call("check bucket", bucket, self.fs.get_file_info, bucket)
            if info.type != pafs.FileType.Directory:
                raise error(f"{what} URI {self.shown}: bucket {bucket!r} does not exist (create it first)")

    # -- plumbing ----------------------------------------------------------------------
    def _call(self, op: str, path: str, fn, *args):
        try:
            return fn(*args)
        except self.error:
            raise
        except (OSError, ValueError) as err:
            raise self.error(f"{self.what} {self.shown}: cannot {op} {path}: {err}") from None

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def ensure_dir(self, path: str) -> None:
        """Create a directory on filesystems that have them (object stores need no directories)."""
        if not self.object_store:
            self._call("create directory", path, lambda: self.fs.create_dir(path, recursive=True))

    # -- objects -----------------------------------------------------------------------
    def put(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically: readers see the old object or all of the new one."""

        def write(target: str) -> None:
            with self.fs.open_output_stream(target) as out:
                out.write(data)

        if self.object_store:  # one PUT (or multipart upload) becomes visible only when complete
            self._call("write", path, write, path)
            return
        tmp_dir = self.path("tmp")
        tmp = f"{tmp_dir}/{uuid.uuid4().hex}.part"
        self.ensure_dir(tmp_dir)
        self.ensure_dir(path.rsplit("/", 1)[0])
        self._call("write", tmp, write, tmp)
        try:
            self._call("move into place", path, self.fs.move, tmp, path)
        finally:
            if self.exists(tmp):
                self.fs.delete_file(tmp)

    def get(self, path: str) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(path) as f:
                return f.read()

        return self._call("read", path, read)

    def exists(self, path: str) -> bool:
        return self._call("stat", path, self.fs.get_file_info, path).type != pafs.FileType.NotFound

    def list(self, prefix: str, recursive: bool = False) -> list[pafs.FileInfo]:
        """Entries under ``prefix`` (none when it does not exist)."""
        sel = pafs.FileSelector(prefix, allow_not_found=True, recursive=recursive)
        return self._call("list", prefix, self.fs.get_file_info, sel)

    def delete_file(self, path: str) -> None:
        if self.exists(path):
            self._call("delete", path, self.fs.delete_file, path)

    def delete_dir(self, path: str) -> None:
        """Delete a directory (every object under a prefix) if it exists."""
        if self.exists(path):
            self._call("delete", path, self.fs.delete_dir, path)

    def clean_stale(self, prefix: str, older_than_s: float = STALE_AFTER_S) -> list[str]:
        """Delete the entries directly under ``prefix`` whose files are all older than ``older_than_s``."""
        cutoff = time.time() - older_than_s
        newest: dict[str, float] = {}
        for info in self.list(prefix, recursive=True):
            top = info.path[len(prefix) + 1:].split("/", 1)[0]
            if not top:
                continue
            mtime = info.mtime.timestamp() if info.mtime is not None else None
            if info.type == pafs.FileType.File or mtime is not None:
                newest[top] = max(newest.get(top, float("-inf")), mtime if mtime is not None else float("inf"))
            else:
                newest.setdefault(top, float("-inf"))  # an empty directory marker
        removed = []
        for top, mtime in sorted(newest.items()):
            if mtime < cutoff:
                full = f"{prefix}/{top}"
                info = self._call("stat", full, self.fs.get_file_info, full)
                if info.type == pafs.FileType.Directory:
                    self.delete_dir(full)
                elif info.type == pafs.FileType.File:
                    self.delete_file(full)
                removed.append(full)
        return removed


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
        return json.loads(raw)

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

    def list_versions(self) -> list[dict[str, Any]]:
        """Metadata of every version, ascending, with the aliases that point at it."""
        aliases = self.aliases()
        out = []
        for v in self.version_numbers():
            m = self.meta(v)
            m["aliases"] = sorted(a for a, av in aliases.items() if av == v)
            out.append(m)
        return out

    # -- aliases -----------------------------------------------------------------------
    def aliases(self) -> dict[str, int]:
        """Current aliases (live, candidate, previous …) to version numbers."""
        path = self.store.path("aliases.json")
        if not self.store.exists(path):
            return {}
        return json.loads(self._read(path))

    def set_alias(self, name: str, version: int | None, actor: str = "system", reason: str = "") -> None:
        """Point an alias at a version (None removes it), atomically, and audit it."""
        current = self.aliases()
        if version is None:
            current.pop(name, None)
        else:
            if version not in self.version_numbers():
                raise RegistryError(f"unknown version {version}")
            current[name] = version
        self.store.put(self.store.path("aliases.json"), json.dumps(current, sort_keys=True).encode())
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
        return [json.loads(self._read(p)) for p in paths]
