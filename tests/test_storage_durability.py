"""Local writes are durable before they count (issue 13, item 15): the file is synced before the
rename makes it visible, and its directory after, so a power cut leaves the old or the whole
new file, never a zero-length one under the final name."""

from __future__ import annotations

import os
import stat

from streamfit import storage as storage_module
from streamfit.storage import Storage


def test_a_local_write_syncs_the_file_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    st = Storage(str(tmp_path))
    target = st.path("manifests", "000000001.json")
    seen: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        seen.append((kind, os.path.exists(target)))
        real_fsync(fd)

    monkeypatch.setattr(storage_module.os, "fsync", fsync)
    st.put(target, b'{"checkpoint_id": 1}')
    assert ("file", False) in seen, f"the data was not synced before the rename: {seen}"
    assert ("dir", True) in seen, f"the directory was not synced after the rename: {seen}"
    assert seen.index(("file", False)) < seen.index(("dir", True))
    assert st.get(target) == b'{"checkpoint_id": 1}'
    assert not list((tmp_path / "tmp").iterdir())  # no temporary left behind


def test_a_failed_local_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    st = Storage(str(tmp_path))
    target = st.path("a.json")
    st.put(target, b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage_module.os, "fsync", broken_fsync)
    try:
        st.put(target, b"new")
    except Exception as err:  # noqa: BLE001 - the error type is the store's own
        assert "a.json" in str(err) or "part" in str(err)
    else:
        raise AssertionError("a failed sync must fail the write")
    assert st.get(target) == b"old"
    assert not list((tmp_path / "tmp").iterdir())
