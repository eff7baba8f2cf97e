"""The second model family end to end: `distilkit prune --recipe vit-classifier` (timm ViT, top-1 accuracy) runs
through the same engine, report, dry run and resume as the tracking recipes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from PIL import Image
from safetensors.torch import load_file

from cli_exit import cli_exit_code

QUICK = ["prune", "--recipe", "vit-classifier", "--budget", "quick", "--seed", "1"]
STAGES = ("teacher", "logit-kd", "pmdp-6", "mlp-ratio-2")


def _image_folder(root, classes: int, per_class: int = 2) -> str:
    for c in range(classes):
        folder = root / f"class-{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (40, 30), (40 * c, 10 * i, 200)).save(folder / f"{i}.png")
    return str(root)


def test_dry_run_on_an_image_folder_plans_every_stage(tmp_path, capsys):
    data = _image_folder(tmp_path / "images", classes=6)
    assert cli_exit_code(QUICK + ["--data", f"imagefolder:{data}", "--eval-data", f"imagefolder:{data}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "family vit-classifier" in out and "ViT/8 d32, 6 classes" in out
    assert "removes layers [0, 2, 4, 6, 8, 10]" in out and "kd ×1, ce ×0.5, feature ×0.2" in out


def test_image_folder_with_other_classes_than_the_models_is_one_line(tmp_path, capsys):
    data = _image_folder(tmp_path / "images", classes=3)
    assert cli_exit_code(QUICK + ["--data", f"imagefolder:{data}", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the data has 3 classes but stage 'teacher' builds vit-s-shapes with 6 outputs" in err
    assert cli_exit_code(QUICK + ["--data", "got10k:/nowhere", "--dry-run"]) == 2
    assert "unknown data kind 'got10k' for the vit-classifier family" in capsys.readouterr().err
    assert cli_exit_code(QUICK + ["--data", f"imagefolder:{tmp_path / 'missing'}", "--dry-run"]) == 2
    assert f"dataset directory not found: {tmp_path / 'missing'}" in capsys.readouterr().err


def _weights(out: str, stage: str) -> dict:
    return load_file(os.path.join(out, stage, "model", "model.safetensors"))


_KILL_MID_PMDP = """
import os, signal, sys
from distilkit.recipes import trainer
save = trainer.Trainer.save_checkpoint
def save_then_die(self):
    save(self)
    if self.name == "pmdp-6" and self.global_step == 2:  # mid-epoch 0, mid-fade
        os.kill(os.getpid(), signal.SIGKILL)
trainer.Trainer.save_checkpoint = save_then_die
from distilkit.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_vit_classifier_route_end_to_end_and_resume_after_kill_is_identical(tmp_path):
    whole = str(tmp_path / "whole")
    assert cli_exit_code(QUICK + ["--out", whole]) == 0
    report = json.load(open(os.path.join(whole, "report.json")))
    assert report["family"] == "vit-classifier" and [s["name"] for s in report["stages"]] == list(STAGES)
    assert [(s["depth"], s["mlp_ratio"]) for s in report["stages"]] == [(12, 4.0), (12, 4.0), (6, 4.0), (6, 2.0)]
    assert all(0.0 <= s["top1"] <= 1.0 for s in report["stages"]) and report["baselines"][0]["name"] == "majority-class"
    assert report["stages"][3]["params"] < report["stages"][2]["params"] < report["stages"][1]["params"]
    md = open(os.path.join(whole, "report.md")).read()
    assert "model family `vit-classifier`" in md and "| top-1 |" in md and "majority-class (baseline)" in md

    out = str(tmp_path / "killed")
    killed = subprocess.run([sys.executable, "-c", _KILL_MID_PMDP, *QUICK, "--out", out], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert os.path.isfile(os.path.join(out, "logit-kd", "metrics.json"))
    assert not os.path.exists(os.path.join(out, "pmdp-6", "metrics.json"))
    resumed = subprocess.run([sys.executable, "-m", "distilkit", *QUICK, "--out", out, "--resume"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "[pmdp-6] resuming at epoch 0 step 2/4" in open(os.path.join(out, "prune.log")).read()
    for stage in STAGES:  # bitwise: the quick budget pins threads and deterministic algorithms
        a, b = _weights(whole, stage), _weights(out, stage)
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), stage


@pytest.mark.slow
def test_two_gloo_processes_train_the_vit_route_in_lock_step(tmp_path):
    """torchrun works for the second family too: DDP through the family's forward (block hooks for the feature
    loss included) keeps both ranks' weights identical at the end of every stage."""
    out = str(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "distilkit", *QUICK, "--out", out, "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.load(open(os.path.join(out, "report.json")))["world_size"] == 2
    for stage in STAGES:
        digests = json.load(open(os.path.join(out, stage, "metrics.json")))["rank_digests"]
        assert len(digests) == 2 and digests[0] == digests[1], stage
