"""`distilkit prune` end to end on a toy recipe: report, stage models, dry run, overwrite rules, early errors,
non-finite loss, kill -9 mid-PMDP + --resume, and 2-process gloo DDP."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import distilkit.io as dio
from cli_exit import cli_exit_code
from conftest import TINY_ROUTE_ARGS

TINY = os.path.join(os.path.dirname(__file__), "data", "recipe-tiny.yaml")
STAGES = ["teacher", "dense-to-sparse", "pmdp-8", "pmdp-4", "mlp-ratio-1", "score"]
ARGS = TINY_ROUTE_ARGS  # the arguments of the suite's shared tiny route (conftest.tiny_route)


def _weights(out: str, stage: str) -> dict:
    return load_file(os.path.join(out, stage, "model", "model.safetensors"))


def _same_weights(a: str, b: str) -> None:
    """Bitwise: both runs pin what decides the rounding (the tiny budget's `threads: 1` and `deterministic: true`;
    the subprocesses inherit this process's environment, hence its CPU capability), so equal means resumed exactly."""
    for stage in STAGES:
        wa, wb = _weights(a, stage), _weights(b, stage)
        assert wa.keys() == wb.keys(), stage
        for k in wa:
            assert wa[k].equal(wb[k]), f"{stage}: {k} differs"


@pytest.fixture
def tiny_run(tiny_route):
    """The suite's finished tiny route (conftest.tiny_route: the same ARGS), read by these tests."""
    return tiny_route


def test_report_has_every_stage_and_the_final_architecture(tiny_run):
    report = json.load(open(os.path.join(tiny_run, "report.json")))
    assert report["recipe"] == "tiny-s" and report["budget"] == "tiny" and report["data"] == "synthetic"
    assert report["baseline"]["name"] == "constant-box" and 0.0 <= report["baseline"]["auc"] <= 1.0
    assert [b["name"] for b in report["baselines"]] == ["constant-box", "csrt", "kcf"]
    for b in report["baselines"]:
        assert 0.0 <= b["auc"] <= 1.0 and b["fps"] > 0, b
    names = [s["name"] for s in report["stages"]]
    assert names == STAGES
    keys = {"name", "depth", "mlp_ratio", "params", "macs", "fps", "frame_ms", "frame_fps", "auc", "precision",
            "norm_precision", "seconds"}
    for s in report["stages"]:
        assert keys <= set(s)
        assert s["frame_ms"] > 0 and s["frame_fps"] == pytest.approx(1e3 / s["frame_ms"])
    score = report["stages"][-1]
    assert 0.0 <= score["auc_no_update"] <= 1.0 and score["update_interval"] == 25 and 0.0 <= score["score_accuracy"] <= 1.0
    assert all("auc_no_update" not in s for s in report["stages"][:-1])  # no score head, no online update
    md = open(os.path.join(tiny_run, "report.md")).read()
    for row in ("| constant-box (baseline) |", "| csrt (baseline) |", "| kcf (baseline) |", "frame ms", "without"):
        assert row in md, row
    assert report["eval_command"] == (f"distilkit eval {os.path.join(tiny_run, 'score', 'model')} "
                                      f"--data synthetic-test:{TINY}@tiny") and report["eval_command"] in md
    depths = [s["depth"] for s in report["stages"]]
    assert depths == [12, 12, 8, 4, 4, 4]
    final = report["stages"][-1]
    assert final["mlp_ratio"] == 1.0 and final["score_head"] is True and final["head"] == "t4"
    assert report["stages"][0]["head"] == "corner"
    macs = [s["macs"] for s in report["stages"][1:]]
    assert macs[1] < macs[0] and macs[2] < macs[1] and macs[3] < macs[2]
    for f in ("report.md", "auc_vs_fps.png", "prune.log", "run.json"):
        assert os.path.isfile(os.path.join(tiny_run, f)), f
    assert open(os.path.join(tiny_run, "auc_vs_fps.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    log = open(os.path.join(tiny_run, "prune.log")).read()
    assert "budget  tiny: toy sizes for tests" in log
    assert "removing layers [0, 3, 6, 9] of 12" in log
    for stage, has_attn in (("dense-to-sparse", True), ("pmdp-8", True), ("pmdp-4", False)):  # recipe / budget override
        final = json.load(open(os.path.join(tiny_run, stage, "metrics.json")))["final_losses"]
        assert {"kl", "l1", "ciou", "loss"} <= set(final) and ("attn" in final) == has_attn, stage
        assert all(math.isfinite(v) for v in final.values())
    pmdp4 = json.load(open(os.path.join(tiny_run, "pmdp-4", "metrics.json")))
    assert pmdp4["layer_map"] == {"old_depth": 8, "removed": [0, 2, 4, 6]}
    assert pmdp4["feature_pairs_after"] == [[0, 1], [1, 3], [2, 5], [3, 7]]
    for stage in STAGES:
        assert not os.path.exists(os.path.join(tiny_run, stage, "checkpoint.safetensors"))


def test_the_reports_eval_command_scores_the_same_sequences_alike(tiny_run, tmp_path):
    """`distilkit eval` with the command the report prints tracks the report's held-out sequences with the same
    tracker settings, so it gives the report's AUC."""
    import shlex

    report = json.load(open(os.path.join(tiny_run, "report.json")))
    out = tmp_path / "again"
    argv = shlex.split(report["eval_command"])[1:] + ["--out", str(out), "--no-progress", "--name", "final"]
    assert cli_exit_code(argv) == 0
    summary = json.load(open(out / "final" / "summary.json"))
    assert sorted(summary["sequences"]) == sorted(json.load(open(os.path.join(tiny_run, "baseline", "constant-box",
                                                                               "summary.json")))["sequences"])
    assert summary["overall"]["auc"] == pytest.approx(report["stages"][-1]["auc"], abs=1e-3)


def test_until_stops_after_that_stage_and_resume_runs_the_rest(tiny_run, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli_exit_code(ARGS + ["--out", out, "--until", "dense-to-sparse"]) == 0
    report = json.load(open(os.path.join(out, "report.json")))
    assert [s["name"] for s in report["stages"]] == ["teacher", "dense-to-sparse"]
    assert not os.path.exists(os.path.join(out, "pmdp-8"))
    before = os.path.getmtime(os.path.join(out, "dense-to-sparse", "metrics.json"))
    assert cli_exit_code(ARGS + ["--out", out, "--resume"]) == 0
    assert [s["name"] for s in json.load(open(os.path.join(out, "report.json")))["stages"]] == STAGES
    assert os.path.getmtime(os.path.join(out, "dense-to-sparse", "metrics.json")) == before
    _same_weights(tiny_run, out)  # stopping and going on changes nothing
    capsys.readouterr()
    assert cli_exit_code(ARGS + ["--out", str(tmp_path / "x"), "--until", "pmdp-9"]) == 2
    err = capsys.readouterr().err
    assert "--until 'pmdp-9': recipe tiny-s has no such stage; its stages are teacher, dense-to-sparse" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def _recipe_with_shipped_teacher(tmp_path, monkeypatch, teacher_model: str) -> str:
    """The tiny recipe whose budget names a shipped teacher `tiny-teacher` (a copy of `teacher_model`), in a
    shipped-teachers folder of the test's own."""
    import shutil

    import yaml

    import distilkit.recipes.teachers as teachers

    shipped = tmp_path / "teachers"
    shutil.copytree(teacher_model, shipped / "tiny-teacher")
    monkeypatch.setattr(teachers, "SHIPPED_TEACHERS_DIR", shipped)
    data = yaml.safe_load(open(TINY, encoding="utf-8"))
    data["budgets"]["tiny"]["teacher"] = "tiny-teacher"
    path = tmp_path / "shipped.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_a_budget_starts_from_its_shipped_teacher_unless_told_otherwise(tiny_run, tmp_path, monkeypatch):
    recipe = _recipe_with_shipped_teacher(tmp_path, monkeypatch, os.path.join(tiny_run, "teacher", "model"))
    args = ["prune", "--recipe", recipe, "--budget", "tiny", "--seed", "3", "--until", "dense-to-sparse"]
    out = str(tmp_path / "shipped")
    assert cli_exit_code(args + ["--out", out]) == 0
    row = json.load(open(os.path.join(out, "teacher", "metrics.json")))
    assert row["source"] == "shipped:tiny-teacher" and row["seconds"] == 0.0
    assert "teacher shipped:tiny-teacher" in open(os.path.join(out, "prune.log")).read()
    for stage in ("teacher", "dense-to-sparse"):
        wa, wb = _weights(tiny_run, stage), _weights(out, stage)
        assert all(wa[k].equal(wb[k]) for k in wa), stage  # the same teacher as the run that trained it
    trained = str(tmp_path / "trained")
    assert cli_exit_code(args + ["--out", trained, "--teacher", "none", "--until", "teacher"]) == 0
    row = json.load(open(os.path.join(trained, "teacher", "metrics.json")))
    assert "source" not in row and row["seconds"] > 0


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_missing_or_corrupt_shipped_teacher_is_one_clear_error(tiny_run, tmp_path, monkeypatch, capsys, damage):
    recipe = _recipe_with_shipped_teacher(tmp_path, monkeypatch, os.path.join(tiny_run, "teacher", "model"))
    weights = tmp_path / "teachers" / "tiny-teacher" / "model.safetensors"
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:100])
    out = tmp_path / "run"
    assert cli_exit_code(["prune", "--recipe", recipe, "--budget", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "tiny-teacher" in err and str(weights) in err, err
    assert not out.exists()


def test_stage_models_reload(tiny_run):
    model = dio.load(os.path.join(tiny_run, "score", "model"))
    assert len(model.backbone.blocks) == 4 and model.score_head is not None
    assert {b.mlp.fc1.out_features for b in model.backbone.blocks} == {32}  # ratio 1 at width 32


def test_finished_run_is_never_overwritten_without_force(tiny_run, capsys):
    assert cli_exit_code(ARGS + ["--out", tiny_run]) == 2
    assert "already holds a finished run of 'tiny-s'; pass --resume to continue it or --force" in capsys.readouterr().err
    before = os.path.getmtime(os.path.join(tiny_run, "score", "metrics.json"))
    assert cli_exit_code(ARGS + ["--out", tiny_run, "--resume"]) == 0  # nothing left: every stage is skipped
    assert os.path.getmtime(os.path.join(tiny_run, "score", "metrics.json")) == before
    assert cli_exit_code(ARGS + ["--out", tiny_run, "--seed", "4", "--resume"]) == 2
    assert "seed: 3 -> 4" in capsys.readouterr().err


def test_force_restarts(tmp_path):
    out = str(tmp_path / "run")
    os.makedirs(os.path.join(out, "teacher"))
    open(os.path.join(out, "run.json"), "w").write(json.dumps({"format": "distilkit-run/1", "recipe": "tiny-s",
                                                                "stages": ["teacher"]}))
    open(os.path.join(out, "teacher", "metrics.json"), "w").write("{}")
    assert cli_exit_code(ARGS + ["--out", out, "--force", "--budget", "tiny"]) == 0
    assert json.load(open(os.path.join(out, "teacher", "metrics.json")))["depth"] == 12


@pytest.mark.parametrize("listed", ["../victim", "VICTIM_ABS", ".."])
def test_force_never_deletes_what_a_crafted_run_json_names_outside_the_run(tmp_path, capsys, listed):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    out = tmp_path / "run"
    out.mkdir()
    name = str(victim) if listed == "VICTIM_ABS" else listed
    (out / "run.json").write_text(json.dumps({"format": "distilkit-run/1", "recipe": "tiny-s", "stages": ["teacher", name]}))
    assert cli_exit_code(ARGS + ["--out", str(out), "--force"]) == 2
    assert "is not a stage name; not wiping" in capsys.readouterr().err
    assert (victim / "precious.txt").read_text() == "keep me" and (out / "run.json").exists()


def test_dry_run_prints_plan_and_writes_nothing(tmp_path, capsys):
    out = str(tmp_path / "never")
    assert cli_exit_code(ARGS + ["--out", out, "--dry-run"]) == 0
    text = capsys.readouterr().out
    for stage in STAGES:
        assert stage in text
    assert "removes layers [0, 3, 6, 9]" in text and "t4/16+score" in text
    assert not os.path.exists(out)
    assert cli_exit_code(["prune", "--dry-run"]) == 0  # the shipped demo plan
    text = capsys.readouterr().out
    assert "mixformerv2-s: plan (demo budget)" in text and "mlp-ratio-1" in text


def test_bad_inputs_fail_before_training(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli_exit_code(ARGS + ["--out", out, "--data", f"got10k:{tmp_path / 'nope'}"]) == 2
    assert "dataset directory not found" in capsys.readouterr().err
    assert cli_exit_code(ARGS + ["--out", out, "--data", "foo:bar"]) == 2  # the kind is wrong, not the directory
    assert "unknown dataset 'foo'" in capsys.readouterr().err
    bad = tmp_path / "teacher.pth.tar"
    bad.write_bytes(b"not a checkpoint")
    assert cli_exit_code(ARGS + ["--out", out, "--teacher", str(bad)]) == 2
    assert "teacher.pth.tar" in capsys.readouterr().err
    assert cli_exit_code(ARGS + ["--out", out, "--teacher", str(tmp_path / "missing")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert cli_exit_code(ARGS + ["--out", out, "--budget", "huge"]) == 2
    assert "has no budget 'huge'" in capsys.readouterr().err
    assert cli_exit_code(["prune", "--recipe", TINY, "--budget", "tiny", "--seed", "-1", "--out", out]) == 2  # numpy refuses it
    assert "--seed" in capsys.readouterr().err
    lone = tmp_path / "got" / "train" / "GOT-10k_Train_000001"  # one fully visible video: no negatives
    lone.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (64, 48)).save(lone / f"{i + 1:08d}.jpg")
    (lone / "groundtruth.txt").write_text("10,10,20,20\n" * 3)
    assert cli_exit_code(ARGS + ["--out", out, "--data", f"got10k:{tmp_path / 'got'}"]) == 2
    assert "negative samples need a second sequence" in capsys.readouterr().err
    assert cli_exit_code(ARGS + ["--out", out, "--device", "tpu"]) == 2
    assert "--device 'tpu' is not a device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli_exit_code(ARGS + ["--out", out, "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli_exit_code(ARGS + ["--out", str(blocker)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    broken = tmp_path / "broken-run"
    broken.mkdir()
    (broken / "run.json").write_text("{half")
    assert cli_exit_code(ARGS + ["--out", str(broken), "--resume"]) == 2
    assert "run.json: unreadable" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_recipe_mistakes_fail_before_anything_trains(tmp_path, capsys):
    """Problems only the models reveal (a layer a 12-layer model lacks, kl on a corner-head student) are found by
    planning, which every run does first: one line naming file, line and key; no output directory."""
    import yaml

    data = yaml.safe_load(open(TINY, encoding="utf-8"))
    data["stages"][2]["remove"] = [0, 19]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "run"
    assert cli_exit_code(["prune", "--recipe", str(path), "--budget", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    line = next(i for i, text in enumerate(open(path, encoding="utf-8"), 1) if "remove:" in text)
    assert f"{path}:{line}: stages[2].remove: stage 'pmdp-8': cannot remove layer(s) [19] of a 12-layer model" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_teacher_from_a_saved_model(tiny_run, tmp_path):
    """Also: --resume where there is nothing to resume says so and starts afresh."""
    out = str(tmp_path / "run")
    teacher = os.path.join(tiny_run, "teacher", "model")
    assert cli_exit_code(ARGS + ["--out", out, "--teacher", teacher, "--resume"]) == 0
    log = open(os.path.join(out, "prune.log")).read()
    assert f"--resume: nothing to resume in {out} (no earlier run there); starting a fresh run" in log
    row = json.load(open(os.path.join(out, "teacher", "metrics.json")))
    assert row["source"] == teacher and row["seconds"] == 0.0
    assert _weights(out, "teacher").keys() == _weights(tiny_run, "teacher").keys()
    _same_weights(tiny_run, out)  # same teacher, same seed: the same route


def test_teacher_from_an_official_checkpoint(tiny_run, tmp_path):
    """--teacher also takes an official MixFormerV2 `.pth.tar` (state dict under `net`, official key names)."""
    import torch

    teacher = dio.load(os.path.join(tiny_run, "teacher", "model"))
    ckpt = str(tmp_path / "MixViT_B_corner_ep0500.pth.tar")
    torch.save({"net": teacher.state_dict(), "epoch": 500, "net_type": "MixFormer"}, ckpt)
    out = str(tmp_path / "run")
    assert cli_exit_code(ARGS + ["--out", out, "--teacher", ckpt]) == 0
    row = json.load(open(os.path.join(out, "teacher", "metrics.json")))
    assert row["source"] == ckpt and row["seconds"] == 0.0
    _same_weights(tiny_run, out)  # the same teacher weights, so the same route


def test_non_finite_loss_stops_with_part_and_step(tmp_path, monkeypatch, capsys):
    import dataclasses

    from distilkit.trackers.mixformerv2.family import losses

    l1 = losses.LOSS_PARTS["l1"]
    calls = {"n": 0}

    def poisoned(out, teacher_out, batch, loss):
        calls["n"] += 1
        value = l1.fn(out, teacher_out, batch, loss)
        # teacher and dense-to-sparse have 4 steps each; pmdp-8 step 6 (every stage so far weighs l1)
        return value * float("nan") if calls["n"] == 4 + 4 + 6 else value

    monkeypatch.setitem(losses.LOSS_PARTS, "l1", dataclasses.replace(l1, fn=poisoned))
    out = str(tmp_path / "run")
    assert cli_exit_code(ARGS + ["--out", out]) == 2
    err = capsys.readouterr().err
    assert "stage 'pmdp-8': non-finite loss part 'l1' = nan at step 6 (epoch 1)" in err
    assert "last good checkpoint" in err
    from distilkit.recipes.state import load_state

    state = load_state(os.path.join(out, "pmdp-8", "checkpoint.safetensors"))
    assert (state["epoch"], state["step_in_epoch"]) == (1, 0)  # written after epoch 0, before the bad step
    assert not os.path.exists(os.path.join(out, "pmdp-8", "metrics.json"))
    assert "non-finite loss" in open(os.path.join(out, "prune.log")).read()


_KILL_MID_PMDP = """
import os, signal, sys
from distilkit.recipes import trainer
save = trainer.Trainer.save_checkpoint
def save_then_die(self):
    save(self)
    if self.name == "pmdp-8" and self.global_step == 3:  # mid-epoch, mid-fade (gamma strictly between 0 and 1)
        os.kill(os.getpid(), signal.SIGKILL)
trainer.Trainer.save_checkpoint = save_then_die
from distilkit.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_kill_mid_pmdp_then_resume_gives_identical_weights(tiny_run, tmp_path):
    out = str(tmp_path / "run")
    killed = subprocess.run([sys.executable, "-c", _KILL_MID_PMDP, *ARGS, "--out", out], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert os.path.isfile(os.path.join(out, "dense-to-sparse", "metrics.json"))
    assert os.path.isfile(os.path.join(out, "pmdp-8", "checkpoint.safetensors"))
    assert not os.path.exists(os.path.join(out, "pmdp-8", "metrics.json"))
    from distilkit.recipes.state import load_state

    state = load_state(os.path.join(out, "pmdp-8", "checkpoint.safetensors"))
    assert (state["epoch"], state["step_in_epoch"]) == (0, 3) and 0 < state["pruner"]["progress"] < 1
    resumed = subprocess.run([sys.executable, "-m", "distilkit", *ARGS, "--out", out, "--resume"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    log = open(os.path.join(out, "prune.log")).read()
    assert "[teacher] finished earlier: skipped" in log and "[pmdp-8] resuming at epoch 0 step 3/4" in log
    _same_weights(tiny_run, out)


@pytest.mark.slow
def test_two_gloo_processes_agree(tmp_path):
    out = str(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "distilkit", *ARGS, "--out", out, "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.load(open(os.path.join(out, "report.json")))
    assert report["world_size"] == 2
    for stage in STAGES:
        row = json.load(open(os.path.join(out, stage, "metrics.json")))
        digests = row["rank_digests"]
        # exact: DDP all-reduces the gradients, so both ranks apply the same bits through the same kernels
        assert len(digests) == 2 and digests[0] == digests[1], stage
    assert [s["depth"] for s in report["stages"]] == [12, 12, 8, 4, 4, 4]


_RANKED = """
import errno, os, sys
import distilkit.io
rank = int(os.environ["RANK"])
if sys.argv[1] == "seed" and rank == 1:
    sys.argv += ["--seed", "4"]  # a launcher that gave one process other arguments
if sys.argv[1] == "disk-full" and rank == 0:
    def full(model, path, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(str(path), "model.safetensors"))
    distilkit.io.save = full
from distilkit.cli import main
main(sys.argv[2:])
"""


def _two_ranks(scenario: str, out: str, timeout: float = 300.0, cwds: tuple = (None, None),
               extra: tuple = ()) -> list[tuple[int, str, float]]:
    """Two gloo processes started as a cluster scheduler would (no torchrun agent to kill the survivors when
    one fails), each in its own working directory: (exit code, stderr, seconds) per rank."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", _RANKED, scenario, *ARGS, "--out", out, "--device", "cpu",
                                       *extra], env=env, cwd=cwds[rank], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    t0, ended = time.monotonic(), {}
    try:
        while len(ended) < 2 and time.monotonic() - t0 < timeout:
            ended.update({r: time.monotonic() - t0 for r, p in enumerate(procs) if r not in ended and p.poll() is not None})
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert len(ended) == 2, f"rank(s) {sorted({0, 1} - set(ended))} still running after {timeout:.0f} s"
    return [(p.returncode, p.stderr.read(), ended[r]) for r, p in enumerate(procs)]


def _error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_ranks_started_differently_stop_with_one_line_each(tmp_path):
    out = str(tmp_path / "run")
    results = _two_ranks("seed", out)
    for code, stderr, _ in results:
        assert code == 2 and _error_lines(stderr) == [
            "error: rank 1 was started differently from rank 0 (--seed differ); every process of the job must run "
            "the same distilkit code with the same recipe, budget, data, seed and flags"], stderr[-3000:]
    assert not os.path.exists(out)  # refused before anything was written


@pytest.mark.slow
def test_a_failed_write_on_rank_0_stops_every_rank_at_once(tmp_path):
    out = str(tmp_path / "run")
    results = _two_ranks("disk-full", out)
    line = f"error: {os.path.join(out, 'teacher', 'model', 'model.safetensors')}: No space left on device"
    for code, stderr, _ in results:
        assert code == 2 and _error_lines(stderr) == [line], stderr[-3000:]
    assert abs(results[0][2] - results[1][2]) < 30  # rank 1 did not wait at a barrier for rank 0
    assert not os.path.exists(os.path.join(out, "teacher", "metrics.json"))


@pytest.mark.slow
def test_rank_0_alone_decides_what_is_finished_and_shares_it(tiny_run, tmp_path):
    """--out on rank 0's own disk only (the same relative path, another working directory on rank 1): rank 0
    finds the finished stages and hands their models to rank 1, which reads and writes no run file."""
    import shutil

    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    node1.mkdir()
    shutil.copytree(tiny_run, node0 / "run")
    os.remove(node0 / "run" / "score" / "metrics.json")
    results = _two_ranks("plain", "run", cwds=(node0, node1), extra=("--resume",))
    for code, stderr, _ in results:
        assert code == 0, stderr[-3000:]
    assert os.listdir(node1) == []
    log = open(node0 / "run" / "prune.log").read()
    assert "[mlp-ratio-1] finished earlier: skipped" in log and "[score] score stage" in log
    row = json.load(open(node0 / "run" / "score" / "metrics.json"))
    assert len(row["rank_digests"]) == 2 and row["rank_digests"][0] == row["rank_digests"][1]
    for stage in STAGES[:-1]:
        assert _weights(str(node0 / "run"), stage).keys() == _weights(tiny_run, stage).keys()
