"""The run folder of `distilkit prune`: only provably distilkit's files are deleted (`--force` beside another
tool's run.json touches nothing), a damaged run.json does not block `--force`, runs of the previous version
resume, stale temp files go on resume, and damaged stage files mean an unfinished stage that runs again."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from distilkit.errors import DistilkitError
from distilkit.recipes import load_recipe
from distilkit.recipes.outdir import MARKER, RUN_FILE, RUN_FORMAT, prepare_out_dir, read_record
from cli_exit import cli_exit_code
from conftest import TINY_ROUTE_ARGS

TINY = os.path.join(os.path.dirname(__file__), "data", "recipe-tiny.yaml")
STAGES = ["teacher", "dense-to-sparse", "pmdp-8", "pmdp-4", "mlp-ratio-1", "score"]
ARGS = TINY_ROUTE_ARGS  # the arguments of the suite's shared tiny route (conftest.tiny_route)
IDENT = {"recipe": "tiny-s", "recipe_sha256": "0123456789abcdef", "budget": "tiny", "seed": 3}


def _tree(root) -> dict[str, bytes]:
    """Every file under `root` (relative path -> content): equal trees mean nothing was touched."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def finished(tiny_route):
    """The suite's finished tiny route (conftest.tiny_route: the same ARGS), copied by each test that damages it."""
    return Path(tiny_route)


def _copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _project(tmp_path, run_json: str):
    """Another tool's project folder: its own run.json, and folders/files named like distilkit's."""
    root = tmp_path / "project"
    for name in ("baseline", "teacher", "teacher/model", "score/eval"):
        (root / name).mkdir(parents=True)
    (root / RUN_FILE).write_text(run_json)
    (root / "report.md").write_text("# our report\n")
    (root / "prune.log").write_text("our log\n")
    (root / "baseline" / "summary.json").write_text('{"sequences": {"a": {}}}')
    (root / "baseline" / "a.txt").write_text("1,2,3,4\n")
    (root / "teacher" / "metrics.json").write_text("{}")
    (root / "teacher" / "model" / "arch.json").write_text("{}")
    (root / "teacher" / ".metrics.json.abcd1234.tmp").write_text("not ours either")
    (root / "score" / "eval" / "a_time.txt").write_text("0.1\n")
    return root


@pytest.mark.parametrize("run_json", [
    json.dumps({"name": "my-experiment", "stages": ["teacher", "baseline"], "version": 3}),
    json.dumps({"recipe": "tiny-s", "stages": ["teacher"]}),  # looks a little like ours, lacks what ours always held
    json.dumps({"format": "other-tool-run/1", "recipe": "tiny-s", "recipe_sha256": "x", "stages": [], "version": "1"}),
    json.dumps([1, 2]), "", "{half",  # unreadable, and nothing else says the folder is distilkit's
])
@pytest.mark.parametrize("flag", ["--force", "--resume", None])
def test_a_foreign_run_json_is_never_touched(tmp_path, capsys, run_json, flag):
    root = _project(tmp_path, run_json)
    before = _tree(root)
    assert cli_exit_code(ARGS + ["--out", str(root)] + ([flag] if flag else [])) == 2
    err = _one_error_line(capsys)
    assert "run.json" in err and ("not written by distilkit" in err or "not touching" in err), err
    assert _tree(root) == before


def test_a_linked_or_huge_run_json_is_not_taken_for_distilkits(tmp_path):
    ours = {"format": RUN_FORMAT, **IDENT, "stages": ["teacher"]}
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(ours))
    root = _project(tmp_path, "")
    (root / RUN_FILE).unlink()
    (root / RUN_FILE).symlink_to(elsewhere)
    with pytest.raises(DistilkitError, match="is a link, which distilkit never writes"):
        prepare_out_dir(str(root), load_recipe(TINY), IDENT, resume=False, force=True)
    (root / RUN_FILE).unlink()
    (root / RUN_FILE).write_text(json.dumps({**ours, "padding": "x" * (1 << 20)}))
    with pytest.raises(DistilkitError, match=r"unreadable \(over 1 MiB\) and no .distilkit-run"):
        prepare_out_dir(str(root), load_recipe(TINY), IDENT, resume=False, force=True)
    assert (root / "teacher" / "metrics.json").exists()


def test_run_json_of_another_distilkit_format_is_refused(tmp_path):
    root = _project(tmp_path, json.dumps({"format": "distilkit-run/2", **IDENT, "stages": ["teacher"]}))
    with pytest.raises(DistilkitError, match="another distilkit version .*'distilkit-run/2'"):
        prepare_out_dir(str(root), load_recipe(TINY), IDENT, resume=False, force=True)
    assert (root / "teacher" / "metrics.json").exists()


def test_run_of_the_previous_version_resumes_and_gets_marked(tmp_path):
    """run.json written before the format mark (no format, no marker file) is still distilkit's."""
    out = tmp_path / "run"
    (out / "teacher").mkdir(parents=True)
    legacy = {**IDENT, "data": "synthetic", "stages": ["teacher"], "world_size": 1, "version": "0.1.0"}
    (out / RUN_FILE).write_text(json.dumps(legacy))
    (out / "teacher" / ".checkpoint.safetensors.k3x_9qz0.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "model").mkdir()
    (tmp_path / "linked" / "model" / ".arch.json.k3x_9qz0.tmp").write_text("not in the run")
    (out / "score").symlink_to(tmp_path / "linked", target_is_directory=True)
    prepared = prepare_out_dir(str(out), load_recipe(TINY), IDENT, resume=True, force=False)
    assert prepared.resumed and prepared.notes == [
        "removed 1 temp file(s) of interrupted writes: teacher/.checkpoint.safetensors.k3x_9qz0.tmp"]
    assert (tmp_path / "linked" / "model" / ".arch.json.k3x_9qz0.tmp").exists()
    assert json.loads((out / RUN_FILE).read_text()) == {"format": RUN_FORMAT, **legacy}
    assert (out / MARKER).read_text().startswith(RUN_FORMAT)
    assert os.listdir(out / "teacher") == []


def test_damaged_run_json_is_recognised_by_the_marker_only(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / RUN_FILE).write_text("")
    with pytest.raises(DistilkitError, match="unreadable .* no .distilkit-run marks"):
        read_record(out)
    (out / MARKER).write_text("something else\n")  # a file of that name, but not distilkit's content
    with pytest.raises(DistilkitError, match="not touching it"):
        read_record(out)
    (out / MARKER).write_text(RUN_FORMAT + "\n")
    assert read_record(out) == (None, "unreadable (Expecting value: line 1 column 1 (char 0))")
    with pytest.raises(DistilkitError, match="run.json: unreadable .*; use --force to start over"):
        prepare_out_dir(str(out), load_recipe(TINY), IDENT, resume=True, force=False)
    (out / RUN_FILE).unlink()
    assert read_record(out) == (None, "missing")


def test_force_deletes_only_distilkits_files_and_names_the_rest(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / RUN_FILE).write_text(json.dumps({"format": RUN_FORMAT, **IDENT, "stages": ["teacher", "old-stage"]}))
    files = {
        "teacher/metrics.json": "{}", "teacher/checkpoint.safetensors": "x", "teacher/model/arch.json": "{}",
        "teacher/model/model.safetensors": "x", "teacher/eval/s1.txt": "1", "teacher/eval/s1_time.txt": "1",
        "teacher/eval/s2.txt": "listed by the summary", "teacher/eval/summary.json": json.dumps(
            {"sequences": {"s2": {}, "../../../victim": {}}}),
        "old-stage/metrics.json": "{}", "baseline/summary.json": "{", "baseline/b_time.txt": "1",
        "baseline/b.txt": "1", "baseline/csrt/summary.json": "{}", "baseline/csrt/c.txt": "1",
        "baseline/csrt/c_time.txt": "1", "score/eval-no-update/s1.txt": "1", "score/eval-no-update/s1_time.txt": "1",
        "report.md": "x", "report.json": "x", "auc_vs_fps.png": "x", "prune.log": "x",
        "teacher/.metrics.json.a1b2c3d4.tmp": "x",
        # not distilkit's: kept
        "teacher/notes.txt": "mine", "teacher/eval/plot.txt": "mine", "teacher/model/README": "mine",
        "baseline/.hidden.tmp": "mine", "elsewhere/metrics.json": "mine", "elsewhere/.x.json.a1b2c3d4.tmp": "mine",
    }
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    (tmp_path / "victim.txt").write_text("keep me")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "metrics.json").write_text("keep me")
    (out / "pmdp-8").symlink_to(tmp_path / "outside", target_is_directory=True)  # a link is never followed
    prepared = prepare_out_dir(str(out), load_recipe(TINY), IDENT, resume=False, force=True)
    kept = ["baseline/.hidden.tmp", "teacher/eval/plot.txt", "teacher/model/README", "teacher/notes.txt"]
    assert prepared.notes == [f"--force kept 4 item(s) in {out} that distilkit did not write: " + ", ".join(kept)]
    assert sorted(_tree(out)) == sorted(kept + ["elsewhere/metrics.json", "elsewhere/.x.json.a1b2c3d4.tmp"])
    assert not (out / "old-stage").exists() and (out / "pmdp-8").is_symlink()
    assert (tmp_path / "victim.txt").read_text() == "keep me"
    assert (tmp_path / "outside" / "metrics.json").read_text() == "keep me"


def test_force_over_an_unreadable_distilkit_run_json_starts_over(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    (out / RUN_FILE).write_text('{"format": "distilkit-run/1", "reci')  # truncated
    (out / "teacher" / "notes.txt").write_text("mine")
    assert cli_exit_code(ARGS + ["--out", str(out), "--resume"]) == 2
    assert "use --force to start over" in _one_error_line(capsys)
    assert cli_exit_code(ARGS + ["--out", str(out), "--force"]) == 0
    assert json.loads((out / RUN_FILE).read_text())["format"] == RUN_FORMAT
    assert (out / "teacher" / "notes.txt").read_text() == "mine"
    log = (out / "prune.log").read_text()
    assert "--force kept 1 item(s)" in log and "finished earlier" not in log  # every stage ran again
    for stage in STAGES:
        assert load_file(out / stage / "model" / "model.safetensors").keys() == \
            load_file(finished / stage / "model" / "model.safetensors").keys()


def test_resume_removes_stale_temp_files_of_the_run_only(finished, tmp_path):
    out = _copy(finished, tmp_path)
    stale = [".run.json.ab12cd34.tmp", "teacher/.checkpoint.safetensors.x_y1z2w3.tmp",
             "pmdp-8/model/.model.safetensors.0a9b8c7d.tmp", "score/eval/.summary.json.qwertyui.tmp",
             "baseline/.synthetic-test-0000.txt.asdfghjk.tmp"]
    others = ["teacher/.notes.tmp", "teacher/.a.b.toolong123.tmp", "mine/.model.safetensors.0a9b8c7d.tmp",
              "teacher/eval/deeper/.x.0a9b8c7d.tmp"]
    for rel in stale + others:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"\0" * 64)
    assert cli_exit_code(ARGS + ["--out", str(out), "--resume"]) == 0
    assert not any((out / rel).exists() for rel in stale)
    assert all((out / rel).exists() for rel in others)
    assert f"removed {len(stale)} temp file(s) of interrupted writes" in (out / "prune.log").read_text()


def _same_models(a, b) -> None:
    for stage in STAGES:
        wa, wb = (load_file(d / stage / "model" / "model.safetensors") for d in (a, b))
        assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa), stage


def test_damaged_stage_files_mean_an_unfinished_stage(finished, tmp_path):
    """After a power loss: an empty metrics.json, a model folder that does not load, a truncated checkpoint, a
    damaged baseline cache. Each stage concerned runs again (saying why) and the run ends as it would have."""
    out = _copy(finished, tmp_path)
    (out / "score" / "metrics.json").write_text("")
    (out / "mlp-ratio-1" / "model" / "model.safetensors").write_bytes(b"")
    (out / "pmdp-4" / "metrics.json").write_text(json.dumps({"name": "pmdp-4"}))  # parses, but is not a row
    (out / "dense-to-sparse" / "metrics.json").unlink()
    checkpoint = (out / "teacher" / "model" / "model.safetensors").read_bytes()
    (out / "dense-to-sparse" / "checkpoint.safetensors").write_bytes(checkpoint[: len(checkpoint) // 2])
    (out / "baseline" / "csrt" / "summary.json").write_text("{")
    assert cli_exit_code(ARGS + ["--out", str(out), "--resume"]) == 0
    log = (out / "prune.log").read_text()
    assert "[score] metrics.json is empty: running the stage again" in log
    assert "[mlp-ratio-1] its model is unreadable (" in log
    assert "[pmdp-4] metrics.json is not the metrics of stage 'pmdp-4': running the stage again" in log
    assert "[dense-to-sparse] cannot read checkpoint" in log and "training the stage from its start" in log
    assert "baseline/csrt/summary.json is unreadable" in log
    assert "[teacher] finished earlier: skipped" in log and "[pmdp-8] finished earlier: skipped" in log
    assert json.loads((out / "report.json").read_text())["stages"][-1]["name"] == "score"
    _same_models(finished, out)
