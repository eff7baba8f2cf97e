"""Engine pieces of the recipe runner: checkpoint state files, losses, LR schedule, output-dir rules."""

from __future__ import annotations

import json
import math
import os
import random
import re

import numpy as np
import pytest
import torch

import distilkit.io as dio
from distilkit.errors import DistilkitError
from distilkit.recipes import load_recipe
from distilkit.distill import resample_distribution
from distilkit.trackers.mixformerv2.family.losses import native_side_probs
from distilkit.trackers.mixformerv2.family.losses import stage_loss as StageLoss
from distilkit.recipes.outdir import RUN_FILE, prepare_out_dir
from distilkit.recipes.state import load_state, rng_state, save_state, seed_everything, set_rng_state
from distilkit.recipes.trainer import TrainSettings, lr_factor

TINY = os.path.join(os.path.dirname(__file__), "data", "recipe-tiny.yaml")


def test_state_roundtrip_with_optimizer_and_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    seed_everything(5)
    path = str(tmp_path / "c.safetensors")
    save_state(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(),
                      "pair": (1, "a"), "pruner": {"progress": 0.5, "drop": [[1, 2]]}})
    expected = (torch.rand(3), np.random.rand(2), random.random())
    state = load_state(path)
    set_rng_state(state["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(2), expected[1]) and random.random() == expected[2]
    assert state["pair"] == (1, "a") and state["pruner"] == {"progress": 0.5, "drop": [[1, 2]]}
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    fresh.load_state_dict(state["optimizer"])
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(fresh.state_dict()["state"][0][k], v)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    bad = tmp_path / "c.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(DistilkitError, match="cannot read checkpoint"):
        load_state(str(bad))


def test_teacher_side_probs_from_corners_and_t4():
    corner = torch.zeros(2, 2, 16)
    corner[:, 0, 1 * 4 + 2] = 30.0  # top-left at x=2, y=1 on a 4×4 map
    corner[:, 1, 3 * 4 + 3] = 30.0  # bottom-right at x=3, y=3
    sides = resample_distribution(native_side_probs({"corner_logits": corner}), 4, anchor="start")
    assert sides.argmax(-1).tolist() == [[2, 1, 3, 3]] * 2  # l t r b
    logits = torch.randn(2, 4, 16)
    torch.testing.assert_close(resample_distribution(native_side_probs({"side_logits": logits}), 16), logits.softmax(-1))


def test_stage_loss_parts_weights_and_negatives():
    loss = StageLoss({"l1": 5.0, "ciou": 2.0, "kl": 5.0, "feature": 0.2}, [(0, 0)])
    gt = torch.tensor([[0.2, 0.2, 0.6, 0.6], [0.0, 0.0, 0.0, 0.0]])
    batch = {"search_box": gt, "label": torch.tensor([1.0, 0.0])}
    feats = [torch.randn(2, 5, 8)]
    out = {"boxes": torch.tensor([[0.2, 0.2, 0.6, 0.6], [0.9, 0.9, 1.0, 1.0]]), "side_logits": torch.zeros(2, 4, 8),
           "features": feats}
    teacher = {"side_logits": torch.zeros(2, 4, 8), "features": feats}
    total, parts = loss(out, teacher, batch)
    assert set(parts) == {"l1", "ciou", "kl", "feature"}
    assert parts["l1"].item() == pytest.approx(0.0, abs=1e-6)  # the negative sample is ignored
    assert parts["kl"].item() == pytest.approx(0.0, abs=1e-6) and parts["feature"].item() == 0.0
    bce = StageLoss({"bce": 1.0})
    total, parts = bce({"score": torch.tensor([10.0, -10.0])}, None, batch)
    assert parts["bce"].item() < 1e-3
    with pytest.raises(DistilkitError, match="score head"):
        bce({"boxes": gt}, None, batch)


def test_one_loss_registry_serves_the_schema_the_plan_and_training():
    from distilkit.recipes.schema import load_recipe, losses_of
    from distilkit.trackers.mixformerv2.family import MixFormerV2Family
    from distilkit.trackers.mixformerv2.family.losses import LOSS_PARTS, T4_STUDENT_LOSSES

    family = MixFormerV2Family()
    LOSSES_BY_KIND = {kind: losses_of(family, kind) for kind in ("teacher", "distill", "depth", "width", "score")}

    assert LOSSES_BY_KIND["teacher"] == {"l1", "giou", "ciou"} and LOSSES_BY_KIND["score"] == {"bce"}
    assert LOSSES_BY_KIND["depth"] == LOSSES_BY_KIND["width"] == {"l1", "giou", "ciou", "kl", "attn", "feature"}
    assert T4_STUDENT_LOSSES == ("kl", "attn")
    for name in LOSS_PARTS:  # every part the registry names is legal in some stage of a shipped recipe's kinds
        assert any(name in kinds for kinds in LOSSES_BY_KIND.values())
    for stage in load_recipe("mixformerv2-s").stages:
        assert set(stage.losses) <= LOSSES_BY_KIND[stage.kind]
    loss = StageLoss({"ciou": 2.0, "l1": 5.0, "kl": 0.0})
    assert list(loss.parts()) == ["l1", "ciou"] and loss.weights == {"l1": 5.0, "ciou": 2.0}  # registry order, no zeros
    with pytest.raises(DistilkitError, match=r"unknown loss part\(s\) \['mse'\]"):
        StageLoss({"mse": 1.0})


def test_stage_loss_through_a_distiller_gives_the_same_total_and_parts():
    from distilkit.distill import Distiller

    loss = StageLoss({"l1": 5.0, "ciou": 2.0, "kl": 5.0})
    gt = torch.tensor([[0.2, 0.2, 0.6, 0.6], [0.1, 0.3, 0.4, 0.9]])
    batch = {"search_box": gt, "label": torch.tensor([1.0, 1.0])}
    out = {"boxes": torch.tensor([[0.25, 0.2, 0.6, 0.7], [0.1, 0.2, 0.5, 0.9]]), "side_logits": torch.randn(2, 4, 8)}
    teacher_out = {"side_logits": torch.randn(2, 4, 8)}
    student, teacher = torch.nn.Identity(), torch.nn.Linear(1, 1)
    distiller = Distiller(student, teacher, loss.parts(), loss.weights, forward_fn=lambda m, b: out,
                          teacher_forward_fn=lambda m, b: teacher_out)
    total, parts = distiller(batch)
    ref_total, ref_parts = loss(out, teacher_out, batch)
    assert torch.equal(total, ref_total) and list(parts) == list(ref_parts) == ["l1", "ciou", "kl"]
    assert all(torch.equal(parts[k], ref_parts[k]) for k in parts)
    supervised = Distiller(student, None, StageLoss({"l1": 1.0}).parts(), forward_fn=lambda m, b: out)
    assert supervised.teacher is None and torch.equal(supervised(batch)[0], ref_parts["l1"])


def test_stage_loss_attention_part_uses_teacher_corners_and_positives_only():
    from distilkit.trackers.mixformerv2 import corner_attention_targets

    g = 4
    corner = torch.zeros(2, 2, g * g)
    corner[:, 0, 1 * g + 2] = 30.0
    corner[:, 1, 3 * g + 3] = 30.0
    teacher = {"corner_logits": corner}
    target = corner_attention_targets(resample_distribution(native_side_probs(teacher), g,
                                                            anchor="start"), g)          # (2, 4, 16)
    exact = target.clamp_min(1e-12).log()[:, None].expand(2, 3, 4, g * g)        # 3 heads attending as told
    uniform = torch.full((2, 3, 4, g * g), -math.log(g * g))
    batch = {"search_box": torch.zeros(2, 4), "label": torch.tensor([1.0, 0.0])}
    loss = StageLoss({"attn": 2.0}, attention_layers=1)
    assert loss.needs_teacher and loss.student_outputs == {"pred_attention"} and not loss.teacher_outputs
    total, parts = loss({"pred_attention": [uniform, exact]}, teacher, batch)     # only the last block counts
    assert parts["attn"].item() == pytest.approx(0.0, abs=1e-4) and total.item() == pytest.approx(0.0, abs=1e-3)
    wrong_negative = exact.clone()
    wrong_negative[1] = uniform[1]
    assert loss({"pred_attention": [wrong_negative]}, teacher, batch)[1]["attn"].item() == pytest.approx(0.0, abs=1e-4)
    both = StageLoss({"attn": 1.0}, attention_layers=2)({"pred_attention": [uniform, exact]}, teacher, batch)[1]["attn"]
    assert both.item() == pytest.approx(math.log(g * g) / 2, rel=1e-3)
    with pytest.raises(DistilkitError, match="prediction tokens"):
        loss({"boxes": torch.zeros(2, 4)}, teacher, batch)


def test_lr_factor_warmup_and_drop():
    s = TrainSettings(epochs=10, batch_size=1, lr=1.0, backbone_lr_scale=0.1, weight_decay=0, grad_clip=0,
                      warmup_steps=4, lr_drop_at=0.8, lr_drop_factor=0.1, workers=0, checkpoint_every=0, seed=0)
    assert [lr_factor(i, 100, s) for i in (0, 3, 50)] == [0.25, 1.0, 1.0]
    assert lr_factor(79, 100, s) == 1.0 and lr_factor(80, 100, s) == pytest.approx(0.1)


def test_out_dir_rules(tmp_path):
    recipe = load_recipe(TINY)
    ident = {"recipe": "tiny-s", "budget": "tiny", "seed": 0}
    out = str(tmp_path / "run")
    assert prepare_out_dir(out, recipe, ident, resume=False, force=False).resumed is False
    (tmp_path / "run" / RUN_FILE).write_text(json.dumps({"format": "distilkit-run/1", **ident, "stages": ["teacher"]}))
    os.makedirs(tmp_path / "run" / "teacher")
    with pytest.raises(DistilkitError, match="already holds an unfinished run.*--resume.*--force"):
        prepare_out_dir(out, recipe, ident, resume=False, force=False)
    assert prepare_out_dir(out, recipe, ident, resume=True, force=False).resumed is True
    with pytest.raises(DistilkitError, match=r"cannot --resume .*seed: 0 -> 1"):
        prepare_out_dir(out, recipe, {**ident, "seed": 1}, resume=True, force=False)
    (tmp_path / "run" / "mine.txt").write_text("keep me")
    assert prepare_out_dir(out, recipe, ident, resume=False, force=True).resumed is False
    assert sorted(os.listdir(out)) == [".distilkit-run", "mine.txt"]  # only the run's own files go; the mark stays
    os.remove(os.path.join(out, ".distilkit-run"))
    with pytest.raises(DistilkitError, match="not empty and holds no distilkit run"):
        prepare_out_dir(out, recipe, ident, resume=False, force=True)


def _tiny_variant(tmp_path, edit) -> str:
    import yaml

    data = yaml.safe_load(open(TINY, encoding="utf-8"))
    edit(data)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _line_of(path: str, needle: str) -> int:
    return next(i for i, line in enumerate(open(path, encoding="utf-8"), 1) if needle in line)


def _no_kl_before(d, stage):
    d["stages"][stage]["losses"].pop("kl")


@pytest.mark.parametrize("edit, needle, key, message", [
    (lambda d: d["stages"][2].update(remove=[0, 19]), "remove:", "stages[2].remove", "cannot remove layer(s) [19] of a 12-layer "
                                                                                     "model"),
    (lambda d: (d["stages"][3].pop("keep"), d["stages"][3].update(keep=20)), "keep: 20", "stages[3].keep",
     "cannot keep 20 layers of a 8-layer model"),
    (lambda d: d["stages"][2].update(feature_pairs=[[2, 2], [12, 12]]), "feature_pairs", "stages[2].feature_pairs",
     "feature pair [12, 12] is outside the 12-layer student"),
    (lambda d: d["stages"][4].update(mlp_ratio=8.0), "mlp_ratio: 8.0", "stages[4].mlp_ratio",
     "MLP ratio 8 is wider than the previous result's 4; width pruning only shrinks"),
    # a depth stage straight after the corner-head teacher: its student has a corner head
    (lambda d: d["stages"].pop(1) and d["budgets"]["tiny"]["stages"].pop("dense-to-sparse"), "kl: 5.0", "stages[1].losses.kl",
     "the 'kl' loss needs a student with a T4 head"),
    (lambda d: (d["stages"].pop(1), d["budgets"]["tiny"]["stages"].pop("dense-to-sparse"), _no_kl_before(d, 1)), "attn: 1.0",
     "budgets.tiny.stages.pmdp-8.losses.attn", "the 'attn' loss needs a student with a T4 head"),
    (lambda d: d["budgets"]["tiny"]["eval"].update(tracker={"update_interval": 0}), "tracker:", "budgets.tiny.eval.tracker",
     "update_interval must be >= 1, got 0"),
])
def test_plan_reports_route_problems_at_their_recipe_key(tmp_path, edit, needle, key, message):
    from distilkit.recipes import plan

    path = _tiny_variant(tmp_path, edit)
    with pytest.raises(DistilkitError) as err:
        plan(load_recipe(path), "tiny", macs=False)
    assert str(err.value).startswith(f"{path}:{_line_of(path, needle)}: {key}: "), str(err.value)
    assert message in str(err.value)


def test_default_budget_and_synthetic_spec_ignore_letter_case():
    from distilkit.trackers.mixformerv2.family.data import datasets_for

    s = load_recipe("mixformerv2-s")
    specs = ("synthetic", "Synthetic", " SYNTHETIC:5,synthetic", "synthetic,got10k:/x")
    assert [s.model_family.default_budget(s, d) for d in specs] == ["demo", "demo", "demo", "paper"]
    demo = s.budget("demo")
    (train,) = datasets_for("Synthetic:3", demo, "train")
    assert len(train) == 3 and len(train[0]) == demo.synthetic.length  # the budget's sizes, not the library default


def _trackingnet(root, chunk: str, annotated_frames: int):
    from PIL import Image

    for name in ("a", "b"):
        frames = root / chunk / "frames" / name
        frames.mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (64, 48)).save(frames / f"{i}.jpg")
        (root / chunk / "anno").mkdir(exist_ok=True)
        (root / chunk / "anno" / f"{name}.txt").write_text("10,10,20,20\n" * annotated_frames)


def test_data_without_ground_truth_beyond_frame_0_is_refused(tmp_path):
    from distilkit.trackers.mixformerv2.family.data import datasets_for

    budget = load_recipe(TINY).budget("tiny")
    test_only = tmp_path / "tn"
    _trackingnet(test_only, "TEST", annotated_frames=1)
    with pytest.raises(DistilkitError, match=re.escape(f"--eval-data trackingnet:{test_only}: no sequence has ground truth "
                                                       "beyond frame 0")):
        datasets_for(f"trackingnet:{test_only}", budget, "test")
    with pytest.raises(DistilkitError, match=re.escape(f"--data trackingnet:{test_only}: no sequence has ground truth")):
        datasets_for(f"trackingnet:{test_only}", budget, "train")  # no TRAIN_k chunks: the reader falls back to TEST
    labelled = tmp_path / "tn2"
    _trackingnet(labelled, "TRAIN_0", annotated_frames=4)
    (train,) = datasets_for(f"trackingnet:{labelled}", budget, "train")
    assert len(train) == 2


def test_concatenated_eval_sets_list_their_names_without_building_sequences(monkeypatch):
    from distilkit.data import SyntheticTracking
    from distilkit.recipes.datasets import Concat as _Concat

    parts = [SyntheticTracking(2, 4, seed=0, split="test"), SyntheticTracking(1, 4, seed=5, split="train")]
    monkeypatch.setattr(SyntheticTracking, "scene", lambda self, i: pytest.fail("names built a scene"))
    assert _Concat(parts).names == ["synthetic-test-0000", "synthetic-test-0001", "synthetic-train-0000"]
    assert _Concat([parts[0], [object()]]).names is None  # a part without names: evaluate reads each sequence's


def test_teacher_checkpoint_with_another_head_is_refused(tmp_path):
    from distilkit.trackers.mixformerv2.family.models import build_stage_model, load_teacher

    recipe = load_recipe(TINY)
    budget = recipe.budget("tiny")
    t4 = build_stage_model(recipe.stages[1], budget)  # the dense-to-sparse stage's T4 model
    dio.save(t4, str(tmp_path / "t4"))
    with pytest.raises(DistilkitError, match=re.escape(f"--teacher {tmp_path / 't4'}: a 't4'-head model, but stage 'teacher' "
                                                       "builds "
                                                       "mixvit-b-corner-tiny with a 'corner' head")):
        load_teacher(str(tmp_path / "t4"), recipe.stages[0], budget)
    dio.save(build_stage_model(recipe.stages[0], budget), str(tmp_path / "corner"))
    assert load_teacher(str(tmp_path / "corner"), recipe.stages[0], budget).config.head == "corner"


def test_rank_0_work_failing_on_a_file_is_one_line_and_code_version_names_the_source():
    import errno

    import distilkit
    from distilkit.recipes.distributed import Dist, code_version

    def disk_full():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/metrics.json")

    with pytest.raises(DistilkitError, match=r"^/runs/x/metrics.json: No space left on device$"):
        Dist().on_main(disk_full)
    assert Dist().on_main(lambda: 7) == 7
    with pytest.raises(DistilkitError, match="^bad data$"):
        Dist().agree({}, "bad data")
    version, _, digest = code_version().partition("+")
    assert version == distilkit.__version__ and len(digest) == 12
