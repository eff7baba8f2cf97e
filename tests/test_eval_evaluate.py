"""evaluate(): tracking loop, result files, summary JSON, success plot, baselines and the CLI command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from distilkit.cli import app
from distilkit.data import Sequence, SyntheticTracking
from distilkit.errors import DistilkitError
from distilkit.eval import (
    ConstantBoxTracker, auc, combine_results, evaluate, load_results, make_baseline, opencv_available, plot_success,
)


class OracleTracker:
    """Returns the ground truth: checks the loop hands frames in order and scores perfectly."""

    def __init__(self, seq):
        self.seq, self.i = seq, 0

    def initialize(self, image, box):
        assert image.shape[2] == 3
        np.testing.assert_array_equal(box, self.seq.boxes[0])

    def track(self, image):
        self.i += 1
        np.testing.assert_array_equal(image, self.seq.frame(self.i))
        return self.seq.boxes[self.i].copy(), 0.9


def _seq(n=12, name="s0"):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(n)]
    boxes = np.column_stack([np.arange(n) * 2.0, np.full(n, 5.0), np.full(n, 10.0), np.full(n, 8.0)])
    return Sequence(name, frames, boxes, np.ones(n, bool), dataset="synthetic")


def test_oracle_scores_perfectly_and_files_are_written(tmp_path):
    seq = _seq()
    res = evaluate(OracleTracker(seq), [seq], out_dir=tmp_path, name="oracle", progress=False)
    assert res.overall["auc"] == pytest.approx(20 / 21) and res.overall["precision"] == 1.0
    lines = (tmp_path / "s0.txt").read_text().splitlines()
    assert len(lines) == 12
    np.testing.assert_allclose(np.loadtxt(tmp_path / "s0.txt", delimiter=","), seq.boxes)
    assert len((tmp_path / "s0_time.txt").read_text().splitlines()) == 12
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tracker"] == "oracle" and summary["sequences"]["s0"]["auc"] == pytest.approx(20 / 21)
    assert set(summary["overall"]) >= {"auc", "precision", "norm_precision", "ao", "sr50", "sr75", "fps"}
    loaded = load_results(tmp_path)
    np.testing.assert_allclose(loaded.success_curve, res.success_curve)


def test_constant_tracker_matches_direct_metrics_and_factory_is_called_per_sequence():
    seqs = [_seq(name="a"), _seq(name="b")]
    made = []

    def factory():
        made.append(1)
        return ConstantBoxTracker()

    res = evaluate(factory, seqs, progress=False)
    assert len(made) == 2
    pred = np.repeat(seqs[0].boxes[:1], 12, axis=0)
    assert res.sequences[0].metrics.summary()["auc"] == pytest.approx(auc(pred, seqs[0].boxes))
    assert res.overall["auc"] == pytest.approx(auc(pred, seqs[0].boxes))
    np.testing.assert_array_equal(res.sequences[1].boxes, pred)
    other = evaluate(factory, [_seq(name="c"), _seq(name="d")], progress=False)
    both = combine_results([res, other], "x")
    assert both.overall["sequences"] == 4 and both.overall["auc"] == pytest.approx(res.overall["auc"])
    with pytest.raises(DistilkitError, match="sequence 'a' is in more than one of the results"):
        combine_results([res, res], "x")  # saving would write a.txt twice


def test_invisible_frames_follow_the_dataset_convention():
    seq = _seq()
    seq.visible[3:6] = False
    lasot_style = evaluate(OracleTracker(seq), [seq], progress=False)
    assert lasot_style.overall["auc"] == pytest.approx(9 / 12 * 20 / 21)
    seq.dataset = "got10k"
    got_style = evaluate(OracleTracker(seq), [seq], progress=False)
    assert got_style.overall["auc"] == pytest.approx(20 / 21)
    forced = evaluate(OracleTracker(seq), [seq], progress=False, exclude_invalid=False)
    assert forced.overall["auc"] == pytest.approx(9 / 12 * 20 / 21)


def test_bad_tracker_output_and_init_box():
    class Bad(ConstantBoxTracker):
        def track(self, image):
            return np.zeros(3), 1.0

    with pytest.raises(DistilkitError, match="shape"):
        evaluate(Bad(), [_seq()], progress=False)
    seq = _seq()
    seq.boxes[0, 2] = 0
    with pytest.raises(DistilkitError, match="not a valid init box"):
        evaluate(ConstantBoxTracker(), [seq], progress=False)
    with pytest.raises(DistilkitError, match="neither a tracker"):
        evaluate(42, [seq], progress=False)

    class Refuses(ConstantBoxTracker):
        def track(self, image):
            raise DistilkitError("cannot see")

    with pytest.raises(DistilkitError, match=f"sequence {_seq().name}, frame 1: cannot see"):
        evaluate(Refuses(), [_seq()], progress=False)


def test_success_plot_png(tmp_path):
    seq = _seq()
    a = evaluate(OracleTracker(seq), [seq], name="oracle", progress=False)
    b = evaluate(ConstantBoxTracker(), [seq], name="constant", progress=False)
    path = plot_success([a, b], tmp_path / "plots" / "success.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_baselines():
    assert isinstance(make_baseline("constant"), ConstantBoxTracker)
    with pytest.raises(DistilkitError, match="unknown baseline"):
        make_baseline("mosse")
    if not opencv_available("csrt"):
        with pytest.raises(DistilkitError, match="opencv"):
            make_baseline("csrt")
        pytest.skip("OpenCV contrib not installed: CSRT/KCF baselines unavailable")
    seq = _seq()
    res = evaluate(lambda: make_baseline("kcf"), [seq], progress=False)
    assert 0.0 <= res.overall["auc"] <= 1.0


def test_cli_eval_constant_on_synthetic(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", "constant", "--data", "synthetic", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    for col in ("AUC", "P", "NP", "constant"):
        assert col in result.output
    summary = json.loads((out / "constant" / "summary.json").read_text())
    assert summary["overall"]["sequences"] == 40 and 0 < summary["overall"]["auc"] < 1  # the demo's held-out split
    assert (out / "constant" / "synthetic-test-0000.txt").is_file() and (out / "success.png").is_file()
    expected = SyntheticTracking(num_sequences=40, length=60, image_size=(192, 144), seed=0, split="test")[0]
    assert summary["sequences"]["synthetic-test-0000"]["frames"] == len(expected)
    again = runner.invoke(app, ["eval", "constant", "--data", "synthetic:2", "--compare", str(out), "--no-progress",
                                "--out", str(tmp_path / "run2")])
    assert again.exit_code == 0, again.output
    assert again.output.count("│ constant") == 2  # this run and the compared one
    row = next(line for line in result.output.splitlines() if line.startswith("│ constant")).split("│")
    o = summary["overall"]
    assert row[7].strip() == f"{100 * o['got10k_ao']:.1f}" and row[8].strip() == f"{100 * o['got10k_sr50']:.1f}"
    assert o["got10k_ao"] != o["ao"]  # the table shows the GOT-10k toolkit's AO, not the per-sequence mean


def test_cli_eval_errors(tmp_path, capsys):
    from distilkit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", "constant", "--data", f"lasot:{tmp_path / 'missing'}"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["eval", "constant", "--compare", str(tmp_path)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["eval", "no-such-model", "--data", "synthetic:1"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["eval", "constant", "--data", "synthetic:1", "--device", "tpu"])
    assert exc.value.code == 2 and "--device 'tpu' is not a device" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out, message in ((blocker, "exists and is not a directory"), (blocker / "sub", "cannot create the directory")):
        with pytest.raises(SystemExit) as exc:  # refused before any tracking, not when saving at the end
            main(["eval", "constant", "--data", "synthetic:1", "--out", str(out), "--no-progress"])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_sequences_without_ground_truth_are_tracked_but_not_scored(tmp_path):
    seq = _seq()
    seq.boxes[1:] = np.nan
    res = evaluate(ConstantBoxTracker(), [seq], out_dir=tmp_path, progress=False)
    assert res.sequences[0].metrics is None and res.success_curve is None
    assert res.overall["sequences"] == 0 and "server" in res.overall["note"]
    assert len((tmp_path / "s0.txt").read_text().splitlines()) == 12
    scored = evaluate(ConstantBoxTracker(), [seq, _seq(name="s1")], progress=False)
    assert scored.overall["sequences"] == 1 and scored.overall["tracked_sequences"] == 2


def test_cli_factory_builds_a_mixformerv2_tracker_that_evaluates():
    """The eval command's model path: resolve a tiny MixFormerV2, wrap it in its tracker, run a short video."""
    from distilkit.commands.eval import _tracker_factory

    make = _tracker_factory("mixformerv2-s-tiny", "synthetic", None, "cpu")
    res = evaluate(make, SyntheticTracking(1, 5, seed=0, image_size=(128, 96), split="test"), progress=False)
    boxes = res.sequences[0].boxes
    assert boxes.shape == (5, 4) and np.isfinite(boxes).all() and (boxes[:, 2:] > 0).all()
    assert 0.0 <= res.overall["auc"] <= 1.0
    with pytest.raises(DistilkitError, match="not a MixFormerV2"):
        _tracker_factory("timm:resnet18", "synthetic", None, "cpu")


def test_cli_eval_says_when_weights_are_random(tmp_path, capsys):
    from distilkit import io
    from distilkit.cli import main
    from distilkit.trackers.mixformerv2 import build_model

    def run(spec):
        with pytest.raises(SystemExit) as exc:
            main(["eval", spec, "--data", "synthetic:1", "--sequences", "1", "--no-progress"])
        assert exc.value.code == 0
        return capsys.readouterr()

    assert "weights are random" in run("mixformerv2-s-tiny").err
    saved = io.save(build_model("mixformerv2-s-tiny"), tmp_path / "model")
    assert "weights are random" not in run(str(saved)).err


def _write_sequence(folder: Path, n: int = 6) -> list[str]:
    """Identical frames and boxes in any layout: a white box moving on noise, x,y,w,h lines."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        img = (rng.random((72, 96, 3)) * 60).astype(np.uint8)
        img[12 + 2 * i:28 + 2 * i, 10 + 3 * i:30 + 3 * i] = 255
        Image.fromarray(img).save(folder / f"{i + 1:08d}.jpg")
        lines.append(f"{10 + 3 * i},{12 + 2 * i},20,16")
    return lines


def _got10k(root: Path, names=("seq1",), n: int = 6) -> Path:
    for name in names:
        lines = _write_sequence(root / "val" / name, n)
        (root / "val" / name / "groundtruth.txt").write_text("\n".join(lines) + "\n")
    return root


def _lasot(root: Path, n: int = 6) -> Path:
    seq = root / "cat" / "cat-1"
    lines = _write_sequence(seq / "img", n)
    (seq / "groundtruth.txt").write_text("\n".join(lines) + "\n")
    for flags in ("full_occlusion.txt", "out_of_view.txt"):
        (seq / flags).write_text(",".join(["0"] * n) + "\n")
    return root


def _summary(tmp_path, **changes) -> Path:
    """A valid summary.json (from a real run) with top-level or overall/success_curve entries replaced."""
    seq = _seq()
    folder = tmp_path / "run"
    evaluate(ConstantBoxTracker(), [seq], out_dir=folder, name="constant", progress=False)
    data = json.loads((folder / "summary.json").read_text())
    for key, value in changes.items():
        where, _, field = key.partition("__")
        (data[where] if field else data)[field or where] = value
    (folder / "summary.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("changes, message", [
    (dict(overall__auc="high"), r"overall.auc must be a number, got \"high\""),
    (dict(overall__frames=True), "overall.frames must be a number"),
    (dict(overall=[]), "overall must be an object"),
    (dict(tracker=1), "tracker must be a string"),
    (dict(success_curve__rates=[1, 2]), "success_curve.rates must be 21 numbers"),
    (dict(success_curve__rates=["a"] * 21), "success_curve.rates must be 21 numbers"),
    (dict(success_curve__rates=[0.5] * 20 + [float("nan")]), "success_curve.rates must be 21 numbers"),
    (dict(success_curve__rates={"a": 1}), "success_curve.rates must be a list or null"),
    (dict(success_curve=[]), "success_curve must be an object"),
])
def test_load_results_checks_types_and_names_file_and_key(tmp_path, changes, message):
    folder = _summary(tmp_path, **changes)
    with pytest.raises(DistilkitError, match=message) as err:
        load_results(folder)
    assert str(err.value).startswith(str(folder / "summary.json")) and "\n" not in str(err.value)


def test_cli_compare_with_a_malformed_summary_is_one_line_before_tracking(tmp_path, capsys):
    from distilkit.cli import main

    out = tmp_path / "out"
    for changes in (dict(overall__auc="high"), dict(success_curve__rates=[1, 2])):
        bad = _summary(tmp_path, **changes)
        with pytest.raises(SystemExit) as exc:
            main(["eval", "constant", "--data", "synthetic:1", "--compare", str(bad), "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "summary.json" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and not out.exists()  # refused before any tracking


def test_duplicate_sequence_names_are_refused_before_tracking(tmp_path, capsys):
    from distilkit.cli import main

    tracked = []

    class Counting(ConstantBoxTracker):
        def initialize(self, image, box):
            tracked.append(1)
            super().initialize(image, box)

    with pytest.raises(DistilkitError, match="sequence 'a' appears twice"):
        evaluate(Counting(), [_seq(name="a"), _seq(name="b"), _seq(name="a")], progress=False)
    assert not tracked
    x1, x2 = _got10k(tmp_path / "x1"), _got10k(tmp_path / "x2")
    for data, message in ((f"got10k:{x1},got10k:{x2}",
                           f"sequence 'seq1' is in both dataset 1 (got10k:{x1 / 'val'}) and dataset 2 (got10k:{x2 / 'val'})"),
                          ("synthetic:2,synthetic:2", "sequence 'synthetic-test-0000' is in both dataset 1 (synthetic)")):
        out = tmp_path / "out"
        with pytest.raises(SystemExit) as exc:
            main(["eval", "constant", "--data", data, "--out", str(out), "--no-progress"])
        assert exc.value.code == 2 and message in capsys.readouterr().err
        assert not (out / "constant").exists()


def test_cli_name_must_be_a_plain_folder_name(tmp_path, capsys, monkeypatch):
    from distilkit.cli import main

    out = tmp_path / "deep" / "out"
    for args in (["--name", ".."], ["--name", "a/b"], ["--name", "."], ["--name", ""], ["--name", "x\\y"]):
        with pytest.raises(SystemExit) as exc:
            main(["eval", "constant", "--data", "synthetic:1", "--out", str(out), "--no-progress", *args])
        assert exc.value.code == 2 and "must be a plain name" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:  # a MODEL path of '.' would label results '.', i.e. <out> itself
        main(["eval", ".", "--data", "synthetic:1", "--out", str(out), "--no-progress"])
    assert exc.value.code == 2 and "set --name" in capsys.readouterr().err
    assert not (tmp_path / "deep").exists()  # nothing written, not even <out>


def test_cli_baseline_takes_baseline_names_only(tmp_path, capsys):
    from distilkit.cli import main

    for bad in ("foo", "mixformerv2-s-tiny"):
        with pytest.raises(SystemExit) as exc:
            main(["eval", "constant", "--data", "synthetic:1", "--baseline", bad, "--no-progress"])
        err = capsys.readouterr().err
        assert exc.value.code == 2
        assert f"--baseline {bad!r} is not a baseline; expected one of constant, csrt, kcf" in err
    with pytest.raises(SystemExit) as exc:  # two runs would share the results folder <out>/constant
        main(["eval", "mixformerv2-s-tiny", "--name", "constant", "--baseline", "constant", "--data", "synthetic:1"])
    assert exc.value.code == 2 and "also a --baseline" in capsys.readouterr().err


def test_cli_builds_the_model_once_for_all_datasets(tmp_path, monkeypatch):
    """An architecture name has random weights: a model per dataset would make the row several trackers."""
    import distilkit.commands.models as models
    from distilkit.cli import main

    built = []
    resolve = models.resolve_model
    monkeypatch.setattr(models, "resolve_model", lambda *a, **k: built.append(a) or resolve(*a, **k))
    got, lasot = _got10k(tmp_path / "got"), _lasot(tmp_path / "lasot")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["eval", "mixformerv2-s-tiny", "--data", f"got10k:{got},lasot:{lasot}", "--update-interval", "100",
              "--name", "m", "--out", str(out), "--no-progress"])
    assert exc.value.code == 0 and len(built) == 1
    same_frames = [np.loadtxt(out / "m" / f, delimiter=",") for f in ("seq1.txt", "cat-1.txt")]
    np.testing.assert_array_equal(*same_frames)  # one model: identical videos, identical boxes


def test_single_frame_sequences_are_not_called_a_test_split():
    seq = Sequence("one", [np.zeros((40, 50, 3), np.uint8)], [[5, 5, 10, 8]], [True], dataset="got10k")
    res = evaluate(ConstantBoxTracker(), [seq], progress=False)
    assert res.overall["sequences"] == 0 and "single frame" in res.overall["note"]
    assert "test split" not in res.overall["note"]


def test_cli_labels_a_prune_stage_model_by_its_stage(tmp_path):
    """`distilkit prune` saves every stage as <run>/<stage>/model: the label 'model' would say nothing."""
    from distilkit import io
    from distilkit.cli import main
    from distilkit.trackers.mixformerv2 import build_model

    saved = io.save(build_model("mixformerv2-s-tiny"), tmp_path / "run" / "pmdp-4" / "model")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(saved), "--data", "synthetic:1", "--out", str(out), "--no-progress"])
    assert exc.value.code == 0 and (out / "pmdp-4" / "summary.json").is_file()
    assert json.loads((out / "pmdp-4" / "summary.json").read_text())["tracker"] == "pmdp-4"


def test_saving_again_into_a_folder_removes_only_the_earlier_runs_result_files(tmp_path):
    frames = [np.zeros((40, 50, 3), np.uint8)] * 3
    seqs = [Sequence(f"s{i}", frames, [[5, 5, 10, 8]] * 3, [True] * 3) for i in range(3)]
    evaluate(ConstantBoxTracker(), seqs, out_dir=tmp_path, progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    evaluate(ConstantBoxTracker(), seqs[:1], out_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "s0.txt", "s0_time.txt", "summary.json"]
