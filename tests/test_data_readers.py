"""Benchmark readers on tiny fake trees written in each official layout; malformed files name file:line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distilkit.data import GOT10k, LaSOT, Sequence, SyntheticTracking, TrackingNet, load_datasets
from distilkit.errors import DistilkitError


def _frames(folder: Path, n: int, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((24, 32, 3), 10 * i, dtype=np.uint8)).save(folder / names(i))


def _boxes(n: int) -> list[str]:
    return [f"{i},{2 * i},{10 + i},{12}" for i in range(n)]


def _got10k(root: Path, split="val", n=4) -> Path:
    seq = root / split / "GOT-10k_Val_000001"
    _frames(seq, n, lambda i: f"{i + 1:08d}.jpg")
    (seq / "groundtruth.txt").write_text("\n".join(_boxes(n)) + "\n")
    (seq / "absence.label").write_text("0\n1\n0\n0\n")
    (seq / "cover.label").write_text("8\n0\n0\n5\n")
    (root / split / "list.txt").write_text("GOT-10k_Val_000001\n")
    return root


def _lasot(root: Path, n=3) -> Path:
    for name in ("airplane-1", "airplane-2", "bird-3"):
        seq = root / name.rsplit("-", 1)[0] / name
        _frames(seq / "img", n, lambda i: f"{i + 1:08d}.jpg")
        (seq / "groundtruth.txt").write_text("\n".join(_boxes(n)) + "\n")
        (seq / "full_occlusion.txt").write_text("0,1,0")
        (seq / "out_of_view.txt").write_text("0,0,1")
    return root


def _trackingnet(root: Path, n=3) -> Path:
    for chunk, seqs in (("TRAIN_0", ["a1", "a2"]), ("TRAIN_1", ["b1"])):
        for name in seqs:
            _frames(root / chunk / "frames" / name, n, lambda i: f"{i}.jpg")
            (root / chunk / "anno").mkdir(parents=True, exist_ok=True)
            (root / chunk / "anno" / f"{name}.txt").write_text("\n".join(_boxes(n)) + "\n")
    return root


def test_got10k_reads_boxes_frames_and_visibility(tmp_path):
    ds = GOT10k(_got10k(tmp_path), split="val")
    assert len(ds) == 1
    seq = ds[0]
    assert isinstance(seq, Sequence) and seq.name == "GOT-10k_Val_000001" and seq.dataset == "got10k"
    np.testing.assert_array_equal(seq.boxes[1], [1, 2, 11, 12])
    np.testing.assert_array_equal(seq.visible, [True, False, False, True])  # absent, cover 0
    assert Path(seq.frames[0]).name == "00000001.jpg"
    assert seq.frame(2).shape == (24, 32, 3) and seq.frame(2)[0, 0, 0] == 20


def test_got10k_split_folder_and_test_first_box_only(tmp_path):
    seq = tmp_path / "test" / "GOT-10k_Test_000001"
    _frames(seq, 3, lambda i: f"{i + 1:08d}.jpg")
    (seq / "groundtruth.txt").write_text("1,2,3,4\n")
    s = GOT10k(tmp_path / "test", split="test")[0]
    np.testing.assert_array_equal(s.boxes[0], [1, 2, 3, 4])
    assert np.isnan(s.boxes[1:]).all()


def test_got10k_malformed_line_names_file_and_line(tmp_path):
    root = _got10k(tmp_path)
    gt = root / "val" / "GOT-10k_Val_000001" / "groundtruth.txt"
    gt.write_text("1,2,3,4\n1,2,3\n1,2,3,4\n1,2,3,4\n")
    with pytest.raises(DistilkitError, match=r"groundtruth.txt:2: expected 4 numbers"):
        GOT10k(root, "val")[0]
    gt.write_text("1,2,3,4\n1,2,x,4\n")
    with pytest.raises(DistilkitError, match=r"groundtruth.txt:2"):
        GOT10k(root, "val")[0]
    gt.write_text("1,2,3,4\n")
    with pytest.raises(DistilkitError, match=r"groundtruth.txt: 1 annotation lines for 4 frames"):
        GOT10k(root, "val")[0]
    gt.write_text("\n".join(_boxes(4)))
    (gt.parent / "cover.label").write_text("8\n9\n1\n1\n")
    with pytest.raises(DistilkitError, match=r"cover.label:2: flag 9"):
        GOT10k(root, "val")[0]
    gt.unlink()
    (root / "val" / "list.txt").unlink()
    with pytest.raises(DistilkitError, match="no GOT-10k sequences"):
        GOT10k(root, "val")


def test_lasot_visibility_lists_and_errors(tmp_path):
    root = _lasot(tmp_path)
    ds = LaSOT(root)
    assert ds.names == ["airplane-1", "airplane-2", "bird-3"]
    seq = ds[2]
    assert seq.name == "bird-3" and seq.dataset == "lasot" and len(seq) == 3
    np.testing.assert_array_equal(seq.visible, [True, False, False])
    (root / "testing_set.txt").write_text("bird-3\nairplane-2\n")
    assert LaSOT(root, "test").names == ["bird-3", "airplane-2"]
    assert len(LaSOT(root, "all")) == 3
    assert LaSOT(root, "train").names == ["airplane-1"]  # the test list is held out
    assert LaSOT(root, sequences=["airplane-1"]).names == ["airplane-1"]
    with pytest.raises(DistilkitError, match="not found.*cat-9"):
        LaSOT(root, sequences=["cat-9"])
    (root / "bird" / "bird-3" / "out_of_view.txt").write_text("0,0,z")
    with pytest.raises(DistilkitError, match=r"out_of_view.txt:1: expected an integer flag"):
        LaSOT(root, "all")[2]
    (root / "bird" / "bird-3" / "full_occlusion.txt").unlink()
    with pytest.raises(DistilkitError, match=r"annotation file not found: .*full_occlusion.txt"):
        LaSOT(root, "all")[2]


def test_trackingnet_chunks_frames_in_numeric_order(tmp_path):
    root = _trackingnet(tmp_path, n=12)
    ds = TrackingNet(root)
    assert ds.names == ["a1", "a2", "b1"]
    seq = ds[0]
    assert [Path(f).name for f in seq.frames[:3]] == ["0.jpg", "1.jpg", "2.jpg"]
    assert Path(seq.frames[10]).name == "10.jpg" and seq.visible.all() and seq.dataset == "trackingnet"
    assert TrackingNet(root, chunks=[1]).names == ["b1"]
    with pytest.raises(DistilkitError, match="chunk directory not found"):
        TrackingNet(root, chunks=[5])
    (root / "TRAIN_1" / "anno" / "b1.txt").write_text("1 2 3 4\n" * 11 + "1 2 3 4 5\n")
    with pytest.raises(DistilkitError, match=r"b1.txt:12"):
        TrackingNet(root, chunks=["TRAIN_1"])[0]


def test_missing_roots_fail_before_anything_runs(tmp_path):
    with pytest.raises(DistilkitError, match="LaSOT directory not found"):
        LaSOT(tmp_path / "nope")
    with pytest.raises(DistilkitError, match="GOT-10k directory not found"):
        load_datasets(f"synthetic,got10k:{tmp_path / 'nope'}")
    with pytest.raises(DistilkitError, match="needs a directory"):
        load_datasets("lasot")
    with pytest.raises(DistilkitError, match="unknown dataset 'imagenet'"):
        load_datasets("imagenet:/x")


def test_load_datasets_mixes_specs(tmp_path):
    _lasot(tmp_path / "lasot")
    _got10k(tmp_path / "got", split="train")
    ds = load_datasets(f"synthetic:3, lasot:{tmp_path / 'lasot'},got10k:{tmp_path / 'got'}", split="train")
    assert [type(d).__name__ for d in ds] == ["SyntheticTracking", "LaSOT", "GOT10k"]
    assert isinstance(ds[0], SyntheticTracking) and len(ds[0]) == 3 and ds[0].split == "train"
    assert load_datasets("synthetic", split="test")[0].split == "test"


def test_frames_must_be_numbered_without_gaps(tmp_path):
    root = _got10k(tmp_path)
    seq = root / "val" / "GOT-10k_Val_000001"
    (seq / "00000003.jpg").rename(seq / "00000005.jpg")  # same count: boxes would shift onto other images
    with pytest.raises(DistilkitError, match=r"GOT-10k_Val_000001: frame 3 is missing"):
        GOT10k(root, "val")[0]
    (seq / "00000005.jpg").rename(seq / "00000003.jpg")
    (seq / "0000003.jpg").write_bytes((seq / "00000003.jpg").read_bytes())
    with pytest.raises(DistilkitError, match=r"frame 3 appears twice"):
        GOT10k(root, "val")[0]
    (seq / "0000003.jpg").rename(seq / "cover.jpg")
    with pytest.raises(DistilkitError, match=r"frame file 'cover.jpg' is not numbered"):
        GOT10k(root, "val")[0]
    tn = _trackingnet(tmp_path / "tn", n=4)
    frames = tn / "TRAIN_0" / "frames" / "a1"
    (frames / "0.jpg").rename(frames / "4.jpg")
    with pytest.raises(DistilkitError, match=r"frames/a1: frame 0 is missing"):
        TrackingNet(tn)[0]
    lasot = _lasot(tmp_path / "lasot")
    img = lasot / "bird" / "bird-3" / "img"
    (img / "00000002.jpg").rename(img / "00000009.jpg")
    with pytest.raises(DistilkitError, match=r"bird-3/img: frame 2 is missing"):
        LaSOT(lasot)[2]


def test_hidden_appledouble_files_are_not_frames(tmp_path):
    root = _got10k(tmp_path)
    seq = root / "val" / "GOT-10k_Val_000001"
    (seq / "._00000001.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    s = GOT10k(root, "val")[0]
    assert len(s) == 4 and [Path(f).name for f in s.frames] == [f"{i:08d}.jpg" for i in range(1, 5)]


def test_empty_sequence_lists_name_the_list_file(tmp_path):
    root = _got10k(tmp_path)
    (root / "val" / "list.txt").write_text("\n\n")
    with pytest.raises(DistilkitError, match=r"val/list.txt: the sequence list is empty"):
        GOT10k(root, "val")
    lasot = _lasot(tmp_path / "lasot")
    (lasot / "testing_set.txt").write_text("")
    with pytest.raises(DistilkitError, match=r"testing_set.txt: the sequence list is empty"):
        LaSOT(lasot, "test")
    (lasot / "testing_set.txt").write_text("airplane-1\nairplane-2\nbird-3\n")
    with pytest.raises(DistilkitError, match=r"lasot: no sequences selected"):  # all held out for testing
        LaSOT(lasot, "train")


def test_fractional_flags_are_refused_and_a_bom_is_accepted(tmp_path):
    root = _got10k(tmp_path)
    seq = root / "val" / "GOT-10k_Val_000001"
    (seq / "absence.label").write_text("0\n0.5\n0\n0\n")
    with pytest.raises(DistilkitError, match=r"absence.label:2: expected an integer flag, got '0.5'"):
        GOT10k(root, "val")[0]
    (seq / "absence.label").write_text("0\n1.0\n0\n0\n")
    (seq / "cover.label").write_text("8\n3\n2.5\n1\n")  # cover is 0..8 (GOT-10k), still integral
    with pytest.raises(DistilkitError, match=r"cover.label:3: expected an integer flag, got '2.5'"):
        GOT10k(root, "val")[0]
    (seq / "cover.label").write_text("8\n3\n0\n1\n")
    (seq / "groundtruth.txt").write_text("\ufeff" + "\n".join(_boxes(4)) + "\n", encoding="utf-8")
    s = GOT10k(root, "val")[0]
    np.testing.assert_array_equal(s.boxes[0], [0, 0, 10, 12])
    np.testing.assert_array_equal(s.visible, [True, False, False, True])  # absent, then cover 0
