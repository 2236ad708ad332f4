"""Atomic object writes, reads and listings on a local disk or an object store, through ``pyarrow.fs``.

Everything streamfit persists (registry versions, aliases, audit entries, serving state,
checkpoint manifests, the ingest write-ahead log) goes through one ``Storage``: a write is
one atomic object write (a single PUT on an object store; a temporary file renamed into
place on a local disk), so readers see the old object or all of the new one. On a local
disk the file is fsynced before the rename and its directory after it: a write that
returned survives a power cut whole. With ``write_attempts`` above 1 a failed write (a
transient disk or object-store error) is retried with exponential backoff before it is raised;
retrying is safe because each attempt is the same whole-object write.

Example:
    >>> import tempfile
    >>> st = Storage(tempfile.mkdtemp())
    >>> st.put(st.path("a", "b.json"), b"{}"); st.get(st.path("a", "b.json")), st.exists(st.path("c"))
    (b'{}', False)
    >>> redact_uri("s3://bucket/p?secret_key=abc&region=x")
    's3://bucket/p?secret_key=***&region=x'
"""

from __future__ import annotations

import os
import time
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow.fs as pafs

from streamfit.errors import StreamfitError
from streamfit.retry import retrying

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


def _write_synced(path: str, data: bytes) -> None:
    """Write a local file and flush it to the disk (a rename after a crash must not find it empty)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(path: str) -> None:
    """Flush a local directory's entries (a rename into it) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Storage:
    """Atomic object writes, reads and listings under one root on any ``pyarrow.fs`` filesystem.

    Storage errors are raised as ``error`` (a :class:`StreamfitError` subclass) naming the
    URI (credentials redacted) and the path; ``write_attempts``: tries of each ``put`` (backing off between).
    """

    def __init__(self, uri: str, filesystem: pafs.FileSystem | None = None,
                 error: type[StreamfitError] = StreamfitError, what: str = "store", write_attempts: int = 1) -> None:
        self.uri, self.error, self.what, self.write_attempts = uri, error, what, max(1, write_attempts)
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
        if self.write_attempts == 1:
            self._put_once(path, data)
        else:
            retrying(self._put_once, path, data, on=(self.error,), attempts=self.write_attempts, first_wait_s=0.05,
                     max_wait_s=1.0)

    def _put_once(self, path: str, data: bytes) -> None:
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
        local = self.fs.type_name == "local"
        try:
            if local:
                self._call("write", tmp, _write_synced, tmp, data)
            else:
                self._call("write", tmp, write, tmp)
            self._call("move into place", path, os.replace if local else self.fs.move, tmp, path)
            if local:  # the rename itself is durable only once its directory is
                self._call("sync directory of", path, _sync_dir, path.rsplit("/", 1)[0])
        finally:
            if self.exists(tmp):
                self.fs.delete_file(tmp)

    def get(self, path: str) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(path) as f:
                return f.read()

        return self._call("read", path, read)

    def open(self, path: str) -> pafs.NativeFile:
        """A random-access reader of ``path`` (an Arrow file's footer is read without the whole file)."""
        return self._call("open", path, self.fs.open_input_file, path)

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
