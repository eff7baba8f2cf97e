"""The paper budgets carry the official settings the route depends on (docs/paper-route.md)."""

from __future__ import annotations

import os

import pytest
import yaml

from distilkit.cli import main
from distilkit.recipes import load_recipe
from distilkit.recipes import trainer as trainer_module

TINY = os.path.join(os.path.dirname(__file__), "data", "recipe-tiny.yaml")


@pytest.mark.parametrize("recipe", ["mixformerv2-s", "mixformerv2-b"])
def test_paper_score_stage_is_the_official_one(recipe):
    """Official score configs: lr 1e-4, 40 epochs, lr drop at epoch 20; depth stages freeze what they remove."""
    loaded = load_recipe(recipe)
    score = loaded.budget("paper").stage("score")
    assert (score.epochs, score.lr, score.lr_drop_at) == (40, 1e-4, 0.5)
    assert all(s.freeze_removed is not False for s in loaded.stages if s.kind == "depth")


def test_a_stage_s_lr_drop_reaches_its_trainer(tmp_path, monkeypatch):
    data = yaml.safe_load(open(TINY, encoding="utf-8"))
    data["stages"] = data["stages"][:1]
    budget = data["budgets"]["tiny"]
    budget["stages"] = {"teacher": {"epochs": 1, "lr_drop_at": 0.25}}
    path = tmp_path / "teacher-only.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    seen = []
    init = trainer_module.Trainer.__init__
    monkeypatch.setattr(trainer_module.Trainer, "__init__",
                        lambda self, name, *a, **k: seen.append(a[4]) or init(self, name, *a, **k))
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--recipe", str(path), "--budget", "tiny", "--out", str(tmp_path / "run")])
    assert exc.value.code == 0
    assert [s.lr_drop_at for s in seen] == [0.25]
    budget["stages"]["teacher"]["lr_drop_at"] = 0.0
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--recipe", str(path), "--budget", "tiny", "--dry-run"])
    assert exc.value.code == 2


def test_b_trains_at_5_and_tracks_at_4_5():
    """Official B: DATA.SEARCH.FACTOR 5.0, TEST.SEARCH_FACTOR 4.5; the demo budgets track as they train."""
    from distilkit.trackers.mixformerv2.family.models import stage_config
    from distilkit.trackers.mixformerv2 import MixFormerV2Tracker, build_model

    assert MixFormerV2Tracker(build_model("mixformerv2-b"), prepack=False).search_factor == 4.5
    assert MixFormerV2Tracker(build_model("mixformerv2-s"), prepack=False).search_factor == 4.5
    b = load_recipe("mixformerv2-b")
    paper = b.budget("paper")
    assert (paper.search_factor, paper.tracking_search_factor) == (5.0, 4.5)
    assert stage_config(b.stages[1], paper).search_factor == 4.5  # saved models track at it by default
    for recipe in ("mixformerv2-s", "mixformerv2-b"):
        demo = load_recipe(recipe).budget("demo")
        assert demo.tracking_search_factor == demo.search_factor


def test_official_update_intervals_per_model_family():
    from distilkit.commands.eval import _tracker_factory
    from distilkit.trackers.mixformerv2.tracker import official_update_interval

    assert [official_update_interval("mixformerv2-b", d) for d in ("lasot", "got10k", "trackingnet")] == [200, 10, 25]
    assert [official_update_interval("mixformerv2-s-tiny", d) for d in ("lasot", "got10k", "trackingnet")] == [200, 15, 25]
    assert official_update_interval("custom", "got10k") == 15 and official_update_interval("mixformerv2-b", "synthetic") is None
    assert _tracker_factory("mixformerv2-b-tiny", "got10k", None, "cpu")().update_interval == 10
    assert _tracker_factory("mixformerv2-s-tiny", "got10k", None, "cpu")().update_interval == 15
    assert _tracker_factory("mixformerv2-b-tiny", "synthetic", None, "cpu")().update_interval == 25
    assert _tracker_factory("mixformerv2-b-tiny", "got10k", 7, "cpu")().update_interval == 7
