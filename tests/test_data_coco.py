"""COCO as single-image training sequences: the reader on a generated tiny COCO layout (crowd and degenerate
boxes left out), `coco:DIR` through load_datasets and `distilkit prune`, pairs from one image, training-only
refusals, and one error naming the file for every malformed annotation file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import distilkit.data
import distilkit.data.readers as readers
from distilkit.data import COCO, PairSampler, Sequence, denormalize_image, load_datasets
from distilkit.errors import DistilkitError
from distilkit.recipes import load_recipe
from cli_exit import cli_exit_code

TINY = os.path.join(os.path.dirname(__file__), "data", "recipe-tiny.yaml")
COLOURS = {1: 60, 2: 120, 3: 200}  # one flat grey per image: a crop tells which image it came from


def _instances() -> dict:
    def ann(id_, image_id, bbox, crowd=0):
        return {"id": id_, "image_id": image_id, "bbox": bbox, "iscrowd": crowd, "category_id": 1,
                "area": float(bbox[2] * bbox[3]), "segmentation": [[0, 0, 1, 0, 1, 1]]}

    return {"info": {"year": 2017}, "categories": [{"id": 1, "name": "thing"}],
            "images": [{"id": 1, "file_name": "000000000001.jpg", "width": 64, "height": 48},
                       {"id": 2, "file_name": "000000000002.png", "width": 64, "height": 48},
                       {"id": 3, "file_name": "000000000003.png", "width": 64, "height": 48}],
            "annotations": [ann(10, 1, [5, 6, 20, 15]), ann(11, 1, [30, 10, 12, 20]),
                            ann(12, 2, [0, 0, 64, 48], crowd=1),  # crowd: left out
                            ann(13, 2, [10, 10, 0, 5]), ann(14, 2, [10, 10, 8, -1]),  # degenerate: left out
                            ann(15, 3, [8.5, 4.25, 30, 22])]}


def _coco(root: Path, instances: dict | None = None) -> Path:
    (root / "train2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    for image_id, grey in COLOURS.items():
        name = _instances()["images"][image_id - 1]["file_name"]
        Image.fromarray(np.full((48, 64, 3), grey, dtype=np.uint8)).save(root / "train2017" / name)
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(instances or _instances()))
    return root


@pytest.fixture
def coco_root(tmp_path) -> Path:
    return _coco(tmp_path / "coco")


def test_one_single_image_sequence_per_annotation_crowd_and_degenerate_left_out(coco_root):
    ds = COCO(coco_root)
    assert len(ds) == 3 and ds.names == ["10", "11", "15"] and repr(ds).endswith("3 sequences)")
    seq = ds[2]
    assert seq.name == "15" and seq.dataset == "coco" and len(seq) == 1 and seq.attributes == {"image_id": 3}
    np.testing.assert_array_equal(seq.boxes, [[8.5, 4.25, 30, 22]])
    assert seq.visible.tolist() == [True]
    assert seq.frames == [str(coco_root / "train2017" / "000000000003.png")]
    frame = seq.frame(0)
    assert frame.shape == (48, 64, 3) and (frame == COLOURS[3]).all()
    assert ds[0].frame(0).shape == (48, 64, 3)  # JPEG images read too
    assert ds[-1].name == "15" and ds[0].frames == ds[1].frames  # two objects of one image: two sequences
    with pytest.raises(IndexError):
        ds[3]


def test_coco_spec_trains_and_is_refused_for_evaluation(coco_root, tmp_path, capsys):
    (ds,) = load_datasets(f"coco:{coco_root}")
    assert isinstance(ds, COCO) and ds.split == "train2017" and len(ds) == 3
    with pytest.raises(DistilkitError, match=r"coco:DIR is training data only"):
        load_datasets(f"synthetic:2,COCO:{coco_root}", split="test")
    assert cli_exit_code(["eval", "constant", "--data", f"coco:{coco_root}", "--no-progress"]) == 2
    assert "coco:DIR is training data only" in capsys.readouterr().err
    args = ["prune", "--recipe", TINY, "--budget", "tiny", "--out", str(tmp_path / "run"), "--dry-run",
            "--data", f"coco:{coco_root}"]
    assert cli_exit_code(args + ["--eval-data", f"coco:{tmp_path / 'missing'}"]) == 2  # refused before its path is looked at
    assert "coco:DIR is training data only" in capsys.readouterr().err


def test_prune_dry_run_takes_coco_beside_synthetic(coco_root, tmp_path, capsys):
    """Single-image sequences have ground truth (their one box), and they serve negatives for the score stage."""
    out = tmp_path / "never"
    assert cli_exit_code(["prune", "--recipe", TINY, "--budget", "tiny", "--out", str(out), "--dry-run",
                      "--data", f"coco:{coco_root},synthetic"]) == 0
    assert "score" in capsys.readouterr().out and not out.exists()
    os.remove(coco_root / "annotations" / "instances_train2017.json")
    assert cli_exit_code(["prune", "--recipe", TINY, "--budget", "tiny", "--out", str(out), "--dry-run",
                      "--data", f"coco:{coco_root},synthetic"]) == 2
    err = capsys.readouterr().err
    assert "COCO annotation file not found" in err and "instances_train2017.json" in err and len(err.splitlines()) == 1


def _grey(crop) -> int:
    """The image a crop came from: its brightest value (zero padding and resampled edges are darker)."""
    return int(denormalize_image(crop).max())


@pytest.mark.parametrize("max_gap", [0, 200])
def test_positive_pairs_come_from_one_image(coco_root, max_gap):
    sampler = PairSampler(COCO(coco_root), template_size=16, search_size=32, max_gap=max_gap, samples_per_epoch=24,
                          center_jitter=1.0, seed=5)
    seen = set()
    for i in range(len(sampler)):
        item = sampler[i]
        greys = {_grey(item[k]) for k in ("template", "online_template", "search")}
        assert len(greys) == 1, greys  # template, online template and search: the same image
        grey = greys.pop()
        assert min(abs(grey - c) for c in COLOURS.values()) <= 2
        seen.add(grey)
        box = item["search_box"]
        assert item["label"] == 1.0 and box[2] > box[0] and box[3] > box[1]
    assert len(seen) == 2  # images 1 and 3; image 2 holds only crowd and degenerate boxes


def test_negatives_come_from_other_sequences(coco_root, tmp_path):
    sampler = PairSampler(COCO(coco_root), template_size=16, search_size=32, samples_per_epoch=8, negative_prob=1.0)
    for i in range(len(sampler)):
        item = sampler[i]
        assert item["label"] == 0.0 and not item["search_box"].any()
    lone = _instances()
    lone["annotations"] = lone["annotations"][:1]
    with pytest.raises(DistilkitError, match="negative samples need a second sequence"):
        PairSampler(COCO(_coco(tmp_path / "lone", lone)), 16, 32, negative_prob=0.5)


def test_coco_mixes_with_video_datasets_equally(coco_root):
    frames = [np.full((48, 64, 3), 250, dtype=np.uint8)] * 3
    videos = [Sequence(f"v{i}", frames, np.tile([20.0, 15.0, 16.0, 12.0], (3, 1)), np.ones(3, bool)) for i in range(9)]
    sampler = PairSampler([COCO(coco_root), videos], 8, 16, samples_per_epoch=200, dataset_weights="equal", seed=1)
    from_coco = sum(_grey(sampler[i]["template"]) < 240 for i in range(len(sampler)))
    assert 70 <= from_coco <= 130  # 1 : 1, although COCO has 3 sequences and the videos 9


def _edit(fn):
    def make(tmp_path: Path) -> Path:
        data = _instances()
        fn(data)
        return _coco(tmp_path / "bad", data)
    return make


def _raw(text: str):
    def make(tmp_path: Path) -> Path:
        root = _coco(tmp_path / "bad")
        (root / "annotations" / "instances_train2017.json").write_text(text)
        return root
    return make


@pytest.mark.parametrize("make, message", [
    (_raw('{"images": [,]}'), r"instances_train2017\.json:1:13: not valid JSON"),
    (_raw("[1, 2]"), r"instances_train2017\.json: top level: expected an object, got an array"),
    (_edit(lambda d: d.pop("annotations")), r"instances_train2017\.json: top level: missing key 'annotations'"),
    (_edit(lambda d: d.update(images={"id": 1})), r"instances_train2017\.json: images: expected an array, got an object"),
    (_edit(lambda d: d["images"][1].update(id="2")), r"images\[1\]\.id: expected an integer, got a string"),
    (_edit(lambda d: d["images"][0].update(id=True)), r"images\[0\]\.id: expected an integer, got a boolean"),
    (_edit(lambda d: d["images"][2].update(id=1)), r"images\[2\]\.id: image id 1 appears twice"),
    (_edit(lambda d: d["images"][0].pop("file_name")), r"images\[0\]: missing key 'file_name'"),
    (_edit(lambda d: d["images"][0].update(file_name="../x.jpg")), r"images\[0\]\.file_name '\.\./x\.jpg' must be a plain name"),
    (_edit(lambda d: d["annotations"][1].update(image_id=99)), r"annotations\[1\]\.image_id: 99 is not the id of any image"),
    (_edit(lambda d: d["annotations"][0].pop("bbox")), r"annotations\[0\]: missing key 'bbox'"),
    (_edit(lambda d: d["annotations"][0].update(bbox=[1, 2, 3])), r"annotations\[0\]\.bbox: expected 4 finite numbers x,y,w,h, "
                                                                  r"got \[1, 2, 3\]"),
    (_edit(lambda d: d["annotations"][5].update(bbox=[1, "2", 3, 4])), r"annotations\[5\]\.bbox: expected 4 finite numbers"),
    (_edit(lambda d: d["annotations"][3].update(bbox=[1, 2, float("nan"), 4])), r"annotations\[3\]\.bbox: expected 4 finite "
                                                                                r"numbers"),
    (_edit(lambda d: d["annotations"][0].pop("iscrowd")), r"annotations\[0\]: missing key 'iscrowd'"),
    (_edit(lambda d: d["annotations"][2].update(iscrowd=2)), r"annotations\[2\]\.iscrowd: expected 0 or 1, got 2"),
    (_edit(lambda d: d["annotations"][4].update(id=10)), r"annotations\[4\]\.id: annotation id 10 appears twice"),
    (_edit(lambda d: d["annotations"][4].update(id=-3)), r"annotations\[4\]\.id: expected an id from 0 to 2\^63-1, got -3"),
    (_edit(lambda d: d["annotations"].__setitem__(1, [1, 2])), r"annotations\[1\]: expected an object, got an array"),
    (_edit(lambda d: [a.update(iscrowd=1) for a in d["annotations"]]), r"no annotation with iscrowd 0 and a box of positive"),
])
def test_malformed_annotation_file_is_one_error_naming_file_and_key(tmp_path, make, message):
    ds = COCO(make(tmp_path))  # parsed at the first access
    with pytest.raises(DistilkitError, match=message) as err:
        len(ds)
    assert "instances_train2017.json" in str(err.value) and "\n" not in str(err.value)


def test_missing_layout_and_unreadable_file(tmp_path, coco_root, monkeypatch):
    with pytest.raises(DistilkitError, match="COCO directory not found"):
        COCO(tmp_path / "nowhere")
    with pytest.raises(DistilkitError, match=r"COCO annotation file not found: .*annotations/instances_val2017\.json"):
        COCO(coco_root, split="val2017")
    with pytest.raises(DistilkitError, match="COCO split '../train2017' must be a plain name"):
        COCO(coco_root, split="../train2017")
    os.rename(coco_root / "train2017", coco_root / "images")
    with pytest.raises(DistilkitError, match=r"COCO image directory not found: .*train2017"):
        COCO(coco_root)
    os.rename(coco_root / "images", coco_root / "train2017")

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    ds = COCO(coco_root)
    monkeypatch.setattr(readers, "open", denied, raising=False)
    with pytest.raises(DistilkitError, match=r"coco: .*instances_train2017\.json: Permission denied"):
        len(ds)


def test_budgets_dataset_weights(tmp_path, coco_root, monkeypatch):
    """Paper budgets draw datasets 1:1 as the official code does; the demo and test budgets keep sequence counts;
    the budget's value reaches the training sampler."""
    for name in ("mixformerv2-s", "mixformerv2-b"):
        recipe = load_recipe(name)
        assert recipe.budget("paper").dataset_weights == "equal"
        assert recipe.budget("demo").dataset_weights == "sequences"
    assert load_recipe(TINY).budget("tiny").dataset_weights == "sequences"
    data = yaml.safe_load(open(TINY, encoding="utf-8"))
    data["budgets"]["tiny"]["dataset_weights"] = "uniform"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(DistilkitError, match=r"bad\.yaml:\d+: budgets\.tiny\.dataset_weights: expected one of "
                                             r"\['equal', 'sequences'\], got 'uniform'"):
        load_recipe(str(bad))
    data["stages"] = data["stages"][:1]
    data["budgets"]["tiny"].update(dataset_weights="equal", samples_per_epoch=8)
    data["budgets"]["tiny"]["stages"] = {"teacher": {"epochs": 1}}
    one = tmp_path / "teacher-only.yaml"
    one.write_text(yaml.safe_dump(data, sort_keys=False))
    seen = []

    class Spy(PairSampler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append((self.dataset_weights, [type(d).__name__ for d in self.datasets]))

    monkeypatch.setattr(distilkit.data, "PairSampler", Spy)
    out = tmp_path / "run"
    assert cli_exit_code(["prune", "--recipe", str(one), "--budget", "tiny", "--out", str(out),
                      "--data", f"coco:{coco_root},synthetic:3"]) == 0
    assert seen == [("equal", ["COCO", "SyntheticTracking"])]
    assert "each dataset equally often" in (out / "prune.log").read_text()
