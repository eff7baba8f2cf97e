"""ONNX export and OnnxTracker: graphs equal to the torch model, the same boxes frame by frame as MixFormerV2Tracker,
templates encoded once per template change, no torch at run time, int8, and one clear error per bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the deploy extra (pip install 'distilkit[deploy]') is not installed")

import distilkit.io as dio
from distilkit.data import SyntheticTracking
from distilkit.deploy import OnnxTracker, OnnxTrackerModel, export_onnx, load_manifest
from distilkit.deploy import export as export_module
from distilkit.errors import DistilkitError
from distilkit.eval.metrics import iou
from distilkit.recipes.teachers import shipped_teacher_path
from distilkit.trackers.mixformerv2 import MixFormerV2Tracker, build_model

REPO = Path(__file__).resolve().parents[1]


def _scored_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mixformerv2-s-tiny").eval()


@pytest.fixture(scope="module")
def teacher_export(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """The shipped demo teacher (trained, corner head) and its fp32 export."""
    model = dio.load(shipped_teacher_path("mixformerv2-s-demo")).eval()
    out = tmp_path_factory.mktemp("exports") / "teacher"
    export_onnx(model, out)
    return model, out


@pytest.fixture(scope="module")
def scored_export(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A T4 model with a score head (online updates) and its fp32 export."""
    model = _scored_model()
    out = tmp_path_factory.mktemp("exports") / "scored"
    export_onnx(model, out)
    return model, out


def _track_both(model: torch.nn.Module, folder: Path, sequences: list, **options) -> tuple[float, OnnxTrackerModel, int]:
    """Min per-frame IoU between MixFormerV2Tracker and OnnxTracker boxes, the shared graphs, torch's online updates."""
    graphs = OnnxTrackerModel(folder, threads=1)
    worst, updates = 1.0, 0
    for seq in sequences:
        ref, onnx = MixFormerV2Tracker(model, **options), OnnxTracker(graphs, **options)
        ref.initialize(seq.frame(0), seq.boxes[0])
        onnx.initialize(seq.frame(0), seq.boxes[0])
        for i in range(1, len(seq)):
            frame = seq.frame(i)
            (box_a, score_a), (box_b, score_b) = ref.track(frame), onnx.track(frame)
            worst = min(worst, float(iou(box_a[None], box_b[None])[0]))
            assert np.isnan(score_a) == np.isnan(score_b) and (np.isnan(score_a) or abs(score_a - score_b) < 1e-4)
            updates += ref.online_update and i % ref.update_interval == 0
    return worst, graphs, updates


def test_onnx_tracker_follows_the_torch_tracker_on_held_out_videos(teacher_export):
    model, folder = teacher_export
    sequences = [SyntheticTracking(split="test")[i] for i in range(3)]
    worst, graphs, _ = _track_both(model, folder, sequences)
    assert worst >= 0.999, worst
    assert graphs.template_runs == len(sequences)  # no score head: templates encoded once per sequence
    assert graphs.search_runs == sum(len(s) - 1 for s in sequences)


def test_online_updates_rerun_only_the_template_graph(scored_export):
    model, folder = scored_export
    sequences = [SyntheticTracking(split="test", image_size=(96, 72))[i] for i in range(2)]
    worst, graphs, updates = _track_both(model, folder, sequences, update_interval=7, score_threshold=0.0)
    assert worst >= 0.999, worst
    assert updates > 0 and graphs.template_runs == len(sequences) + updates


def test_crop_factors_default_to_the_exports_and_can_be_set_as_in_the_torch_tracker(scored_export):
    model, folder = scored_export
    seq = SyntheticTracking(split="test", image_size=(96, 72))[0]
    ref, onnx = MixFormerV2Tracker(model, search_factor=3.0), OnnxTracker(folder, search_factor=3.0)
    assert OnnxTracker(folder).search_factor == model.config.search_factor and onnx.search_factor == 3.0
    for tracker in (ref, onnx):
        tracker.initialize(seq.frame(0), seq.boxes[0])
    a, b = ref.track(seq.frame(1))[0], onnx.track(seq.frame(1))[0]
    assert float(iou(a[None], b[None])[0]) >= 0.999
    with pytest.raises(DistilkitError, match="template_factor"):
        OnnxTracker(folder, template_factor=0)


def test_online_settings_are_attributes_checked_like_the_arguments(scored_export):
    model, folder = scored_export
    for tracker in (OnnxTracker(folder, update_interval=7), MixFormerV2Tracker(model, update_interval=7)):
        assert tracker.update_interval == 7 and tracker.score_threshold == 0.5
        tracker.update_interval, tracker.score_threshold = np.int64(3), np.float32(0.25)
        assert (tracker.rule.interval, tracker.rule.threshold) == (3, 0.25)
        with pytest.raises(DistilkitError, match="update_interval"):
            tracker.update_interval = 0
        assert tracker.update_interval == 3


def test_export_folder_describes_and_checks_its_graphs(scored_export):
    model, folder = scored_export
    manifest = load_manifest(folder)
    cfg = model.config
    assert manifest.kind == "mixformerv2" and manifest.precision == "fp32" and manifest.opset == 17
    assert list(manifest.graphs["templates"].inputs) == ["template", "online_template"]
    assert list(manifest.graphs["search"].inputs) == ["search", "keys", "values"]
    assert list(manifest.graphs["search"].outputs) == ["boxes", "score"]
    kv = manifest.graphs["templates"].outputs["keys"]
    assert kv == [cfg.depth, "template_batch", cfg.num_heads, cfg.template_tokens * 2, cfg.embed_dim // cfg.num_heads]
    assert manifest.tracker["search_size"] == cfg.search_size and manifest.tracker["score_head"] is True
    assert max(manifest.max_abs_diff.values()) < 1e-4
    assert manifest.preprocess["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "search.onnx", "templates.onnx"]


def test_search_graph_batches_search_images_against_one_template(scored_export):
    import onnxruntime as ort

    model, folder = scored_export
    cfg = model.config
    torch.manual_seed(1)
    t, size = cfg.template_size, cfg.search_size
    template, online, search = torch.randn(1, 3, t, t), torch.randn(1, 1, 3, t, t), torch.randn(3, 3, size, size)
    with torch.no_grad():
        ref = model.forward_search(search, templates=model.set_templates(template, online))
    templates = ort.InferenceSession(str(folder / "templates.onnx"))
    keys, values = templates.run(None, {"template": template.numpy(), "online_template": online.numpy()})
    feeds = {"search": search.numpy(), "keys": keys, "values": values}
    boxes, score = ort.InferenceSession(str(folder / "search.onnx")).run(None, feeds)
    np.testing.assert_allclose(boxes, ref["boxes"].numpy(), atol=1e-5)
    np.testing.assert_allclose(score, ref["score"].numpy(), atol=1e-4)


def test_onnx_tracker_runs_without_importing_torch(scored_export):
    _, folder = scored_export
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from distilkit.deploy import OnnxTracker
        tracker = OnnxTracker({str(folder)!r}, update_interval=2, score_threshold=0.0)
        image = np.random.default_rng(0).integers(0, 255, (72, 96, 3), dtype=np.uint8)
        tracker.initialize(image, [30, 20, 16, 12])
        for _ in range(4):
            box, score = tracker.track(image)
        assert box.shape == (4,) and 0 <= score <= 1
        assert tracker.model.template_runs == 3, tracker.model.template_runs
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not loaded, loaded
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_int8_export_quantizes_the_weight_matmuls_and_still_tracks(tmp_path):
    import onnx

    model = _scored_model()
    manifest = export_onnx(model, tmp_path / "int8", int8=True)
    assert manifest.precision == "int8"
    ops = {node.op_type for node in onnx.load(str(tmp_path / "int8" / "search.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    assert "MatMul" in ops  # attention's activation × activation products stay fp32
    seq = SyntheticTracking(split="test", image_size=(96, 72))[0]
    tracker = OnnxTracker(tmp_path / "int8")
    tracker.initialize(seq.frame(0), seq.boxes[0])
    box, score = tracker.track(seq.frame(1))
    assert np.isfinite(box).all() and 0 <= score <= 1
    assert 0 < max(manifest.max_abs_diff.values()) < 1.0


def test_other_models_export_as_one_graph(tmp_path):
    import onnxruntime as ort
    import timm

    from distilkit.depth import remove_layers

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=4, num_classes=10).eval()
    remove_layers(vit, [1, 2])
    pruned = vit
    assert len(pruned.blocks) == 2
    x = torch.randn(1, 3, 32, 32)
    manifest = export_onnx(pruned, tmp_path / "vit", example_inputs=x)
    assert manifest.kind == "single" and list(manifest.graphs) == ["model"]
    assert manifest.graphs["model"].inputs == {"input": ["batch", 3, 32, 32]}
    assert manifest.graphs["model"].outputs == {"output": ["batch", 10]}
    batch = torch.randn(3, 3, 32, 32)
    (got,) = ort.InferenceSession(str(tmp_path / "vit" / "model.onnx")).run(None, {"input": batch.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, pruned(batch).numpy(), atol=1e-4)
    with pytest.raises(DistilkitError, match="single export.*OnnxTracker needs a MixFormerV2 export"):
        OnnxTracker(tmp_path / "vit")


def test_bad_export_folders_get_one_clear_error(scored_export, tmp_path):
    import shutil

    _, folder = scored_export
    missing = tmp_path / "missing"
    shutil.copytree(folder, missing)
    (missing / "search.onnx").unlink()
    with pytest.raises(DistilkitError, match="search graph search.onnx is missing"):
        OnnxTracker(missing)
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    with open(changed / "templates.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DistilkitError, match="changed after export"):
        OnnxTracker(changed)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "export.json").write_text("{not json")
    with pytest.raises(DistilkitError, match="export.json: not valid JSON"):
        OnnxTracker(broken)
    damaged = json.loads((folder / "export.json").read_text())
    del damaged["tracker"]["search_factor"]
    (broken / "export.json").write_text(json.dumps(damaged))
    with pytest.raises(DistilkitError, match="export.json: tracker: 'search_factor' is missing or not a number"):
        OnnxTracker(broken)
    with pytest.raises(DistilkitError, match="has no export.json"):
        OnnxTracker(tmp_path)
    with pytest.raises(DistilkitError, match="does not exist"):
        OnnxTracker(tmp_path / "nowhere")
    with pytest.raises(DistilkitError, match="takes an export folder"):
        OnnxTracker(_scored_model())


def test_bad_images_and_calls_get_one_clear_error(scored_export):
    _, folder = scored_export
    tracker = OnnxTracker(folder)
    image = np.zeros((72, 96, 3), np.uint8)
    with pytest.raises(DistilkitError, match="before initialize"):
        tracker.track(image)
    with pytest.raises(DistilkitError, match="initial box"):
        tracker.initialize(image, [1, 2, 3])
    tracker.initialize(image, [30, 20, 16, 12])
    with pytest.raises(DistilkitError):
        tracker.track(np.zeros((72, 96), np.uint8))  # not H×W×3
    size = tracker.model.search_size
    with pytest.raises(DistilkitError, match=rf"search: expected a normalised float32 array of shape \(1, 3, {size}, {size}\)"):
        tracker.model.search(np.zeros((1, 3, size + 1, size), np.float32), tracker.keys, tracker.values)
    assert OnnxTracker(folder, online_update=False).online_update is False


def test_online_update_needs_a_score_head(teacher_export):
    _, folder = teacher_export
    with pytest.raises(DistilkitError, match="online_update=True needs a model with a score head"):
        OnnxTracker(folder, online_update=True)


def test_export_refuses_to_overwrite_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    model = _scored_model()
    out = tmp_path / "out"
    export_onnx(model, out)
    before = (out / "export.json").read_text()
    with pytest.raises(DistilkitError, match="already holds an export: pass --force"):
        export_onnx(model, out)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DistilkitError, match="not empty and holds no export"):
        export_onnx(model, other, force=True)

    def fail(diffs, refs):
        raise DistilkitError("export check failed: simulated")

    monkeypatch.setattr(export_module, "_check_fp32", fail)
    with pytest.raises(DistilkitError, match="simulated"):
        export_onnx(model, out, force=True)
    assert (out / "export.json").read_text() == before  # the earlier export is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "out"]  # no staging folder left behind
    monkeypatch.undo()
    export_onnx(model, out, force=True)
    assert json.loads((out / "export.json").read_text())["precision"] == "fp32"


def test_export_leaves_the_model_as_it_was(tmp_path):
    model = _scored_model().train()
    cfg = model.config
    t = torch.randn(1, 3, cfg.template_size, cfg.template_size)
    with torch.no_grad():
        cache = model.set_templates(t, t)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "out")
    assert model.training and model.has_templates and model._templates is cache
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_export_rejects_models_it_cannot_write(tmp_path):
    with pytest.raises(DistilkitError, match="float32 models only"):
        export_onnx(_scored_model().double(), tmp_path / "a")
    with pytest.raises(DistilkitError, match="needs one example input tensor"):
        export_onnx(torch.nn.Linear(4, 2), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distilkit", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300, env={**os.environ, **(env or {})})


def test_cli_export_then_eval_the_export_folder(tmp_path, capsys):
    from cli_exit import cli_exit_code

    out = tmp_path / "exp"
    assert cli_exit_code(["export", "mixformerv2-s-tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "templates.onnx" in printed and "max |torch - onnxruntime|" in printed
    assert cli_exit_code(["eval", str(out), "--data", "synthetic:2", "--no-progress", "--out", str(tmp_path / "res")]) == 0
    summary = json.loads((tmp_path / "res" / "exp" / "summary.json").read_text())
    assert summary["overall"]["sequences"] == 2
    capsys.readouterr()
    assert cli_exit_code(["eval", str(out), "--compile"]) == 2
    assert "--compile does not apply" in capsys.readouterr().err
    assert cli_exit_code(["export", "mixformerv2-s-tiny", "--out", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err


def test_cli_says_how_to_get_onnxruntime_when_it_is_missing(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "onnxruntime.py").write_text("raise ImportError('blocked for this test')\n")
    done = _cli("export", "mixformerv2-s-tiny", "--out", str(tmp_path / "x"),
                env={"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "pip install 'distilkit[deploy]'" in done.stderr and done.stderr.count("\n") == 1
