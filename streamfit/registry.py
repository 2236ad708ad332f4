"""Model registry on a filesystem (local directory or object store) through ``pyarrow.fs``.

Layout under the root::

    versions/v000001/model.ubj   booster in XGBoost's UBJSON format (never pickle)
    versions/v000001/meta.json   metadata, including the model's sha256
    aliases.json                 {"live": 3, "previous": 2, ...}
    audit/<time>-<id>.json       one immutable file per audit entry (append-only on object stores too)

A version is written under ``tmp/`` and moved into ``versions/`` only when complete, so
readers never see half-written versions.

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
import time
import uuid
from typing import Any

import pyarrow.fs as pafs
import xgboost as xgb

from streamfit.errors import ModelIntegrityError, RegistryError

MODEL_FILE = "model.ubj"
META_FILE = "meta.json"


def _resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Filesystem and root path for a local path or a URI such as s3://bucket/prefix."""
    if "://" not in uri:
        path = os.path.abspath(uri)
        os.makedirs(path, exist_ok=True)
        return pafs.LocalFileSystem(), path
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


class Registry:
    """Versions, aliases and audit log of the models, on local disk or an object store."""

    def __init__(self, uri: str, filesystem: pafs.FileSystem | None = None) -> None:
        if filesystem is not None:
            self.fs, self.root = filesystem, uri.split("://", 1)[-1].rstrip("/")
        else:
            self.fs, self.root = _resolve(uri)
        self.uri = uri
        for sub in ("versions", "tmp", "audit"):
            self.fs.create_dir(f"{self.root}/{sub}", recursive=True)

    # -- low-level helpers -------------------------------------------------------------
    def _write(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as out:
            out.write(data)

    def _read(self, path: str) -> bytes:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except (FileNotFoundError, OSError) as err:
            raise RegistryError(f"cannot read {path}: {err}") from None

    def _write_atomic(self, path: str, data: bytes) -> None:
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
        self._write(tmp, data)
        self.fs.move(tmp, path)

    @staticmethod
    def _vdir_name(version: int) -> str:
        return f"v{version:06d}"

    # -- versions ----------------------------------------------------------------------
    def version_numbers(self) -> list[int]:
        """All complete versions, ascending."""
        infos = self.fs.get_file_info(pafs.FileSelector(f"{self.root}/versions", allow_not_found=True))
        out = []
        for info in infos:
            name = info.base_name
            if name.startswith("v") and name[1:].isdigit():
                out.append(int(name[1:]))
        return sorted(out)

    def register(self, booster: xgb.Booster, meta: dict[str, Any], actor: str = "trainer") -> int:
        """Store a booster with its metadata as the next version; returns the version number."""
        raw = bytes(booster.save_raw("ubj"))
        digest = hashlib.sha256(raw).hexdigest()
        existing = self.version_numbers()
        version = (existing[-1] + 1) if existing else 1
        full_meta = dict(meta)
        full_meta.update(version=version, sha256=digest, format="ubj", registered_at=time.time())
        staging = f"{self.root}/tmp/{uuid.uuid4().hex}"
        self.fs.create_dir(staging, recursive=True)
        self._write(f"{staging}/{MODEL_FILE}", raw)
        self._write(f"{staging}/{META_FILE}", json.dumps(full_meta, sort_keys=True).encode())
        final = f"{self.root}/versions/{self._vdir_name(version)}"
        if self.fs.get_file_info(final).type != pafs.FileType.NotFound:
            raise RegistryError(f"version {version} already exists (concurrent writer?)")
        self.fs.move(staging, final)
        self.audit("register", actor=actor, version=version, reason=meta.get("trigger", ""))
        return version

    def meta(self, version: int) -> dict[str, Any]:
        """Metadata of one version."""
        return json.loads(self._read(f"{self.root}/versions/{self._vdir_name(version)}/{META_FILE}"))

    def load(self, version: int) -> tuple[xgb.Booster, dict[str, Any]]:
        """Booster and metadata of a version, after checking the model's sha256."""
        meta = self.meta(version)
        raw = self._read(f"{self.root}/versions/{self._vdir_name(version)}/{MODEL_FILE}")
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
        path = f"{self.root}/aliases.json"
        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
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
        self._write_atomic(f"{self.root}/aliases.json", json.dumps(current, sort_keys=True).encode())
        self.audit("alias", actor=actor, alias=name, version=version, reason=reason)

    # -- audit -------------------------------------------------------------------------
    def audit(self, event: str, actor: str = "system", reason: str = "", **fields: Any) -> None:
        """Append one entry to the audit log."""
        now = time.time()
        entry = {"time": now, "event": event, "actor": actor, "reason": reason, **fields}
        name = f"{int(now * 1e6):020d}-{uuid.uuid4().hex[:8]}.json"
        self._write_atomic(f"{self.root}/audit/{name}", json.dumps(entry, sort_keys=True).encode())

    def audit_log(self) -> list[dict[str, Any]]:
        """All audit entries, oldest first."""
        infos = self.fs.get_file_info(pafs.FileSelector(f"{self.root}/audit", allow_not_found=True))
        paths = sorted(i.path for i in infos if i.base_name.endswith(".json"))
        return [json.loads(self._read(p)) for p in paths]
