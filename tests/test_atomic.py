"""distilkit.atomic: all or nothing, no temp files left, ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from distilkit.atomic import atomic_path, write_atomic


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
