"""evaluate(): tracking loop, result files, summary JSON, success plot, baselines and the CLI command."""

from __future__ import annotations

import json

import numpy as np
import pytest
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
    both = combine_results([res, res], "x")
    assert both.overall["sequences"] == 4 and both.overall["auc"] == pytest.approx(res.overall["auc"])


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
    assert summary["overall"]["sequences"] == 20 and 0 < summary["overall"]["auc"] < 1
    assert (out / "constant" / "synthetic-test-0000.txt").is_file() and (out / "success.png").is_file()
    expected = SyntheticTracking(num_sequences=20, length=100, seed=0, split="test")[0]
    assert summary["sequences"]["synthetic-test-0000"]["frames"] == len(expected)
    again = runner.invoke(app, ["eval", "constant", "--data", "synthetic:2", "--compare", str(out), "--no-progress",
                                "--out", str(tmp_path / "run2")])
    assert again.exit_code == 0, again.output
    assert again.output.count("│ constant") == 2  # this run and the compared one


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
