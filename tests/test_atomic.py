"""distilkit.atomic: all or nothing, durable (fsynced), no temp files left, ordinary permissions; the temp files
a killed process leaves are found and removed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from distilkit.atomic import atomic_path, remove_stale_temps, write_atomic


def test_written_files_get_umask_permissions_not_mkstemps_private_ones(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "sub" / "a.txt", "hello")
    finally:
        os.umask(old)
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path) -> None:
    path = write_atomic(tmp_path / "a.json", b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.json"]


def test_saved_models_and_eval_results_are_readable_by_others(tmp_path) -> None:
    import numpy as np
    import timm

    from distilkit import io
    from distilkit.data import Sequence
    from distilkit.eval import ConstantBoxTracker, evaluate

    old = os.umask(0o022)
    try:
        io.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=16, depth=1), tmp_path / "m")
        frames = [np.zeros((32, 32, 3), np.uint8)] * 3
        seq = Sequence("s", frames, np.array([[4.0, 4.0, 8.0, 8.0]] * 3), np.ones(3, bool))
        evaluate(ConstantBoxTracker(), [seq], out_dir=tmp_path / "ev", progress=False)
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 4 and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}


def test_the_data_then_the_rename_reach_the_disk(tmp_path, monkeypatch) -> None:
    """A power loss must not leave an empty file under the final name: the temp file's data is synced before the
    rename, the directory after it (and a folder created for the file is synced into its parent)."""
    events: list[tuple] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        st = os.fstat(fd)
        events.append(("fsync", "dir" if stat.S_ISDIR(st.st_mode) else st.st_size))
        fsync(fd)

    def recording_replace(src, dst) -> None:
        events.append(("replace", os.path.basename(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    write_atomic(tmp_path / "new" / "a.json", "hello")
    assert events == [("fsync", "dir"), ("fsync", 5), ("replace", "a.json"), ("fsync", "dir")]


_KILLED_MID_WRITE = """
import os, sys
from distilkit.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    open(tmp, "w").write("half")
    os._exit(9)
"""


def test_temp_files_of_a_killed_writer_are_found_and_only_they(tmp_path) -> None:
    target = write_atomic(tmp_path / "checkpoint.safetensors", b"old")
    subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, str(target)], check=False)
    left = [n for n in os.listdir(tmp_path) if n != target.name]
    assert len(left) == 1 and left[0].startswith(".checkpoint.safetensors.") and left[0].endswith(".tmp")
    others = [".notes.tmp", ".a.b.tmp", "x.abcdefgh.tmp", ".a.abcdefg.tmp", ".a.ABCDEFGH.tmp", "sub/.a.abcdefgh.tmp"]
    for name in others:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("not a temp of ours")
    (tmp_path / ".link.abcdefgh.tmp").symlink_to(target)
    assert remove_stale_temps(tmp_path) == [tmp_path / left[0]]
    assert target.read_bytes() == b"old" and all((tmp_path / name).exists() for name in others)
    assert (tmp_path / ".link.abcdefgh.tmp").is_symlink()
    assert remove_stale_temps(tmp_path / "missing") == []
