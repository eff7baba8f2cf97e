"""Depth stages freeze the blocks they fade out (stage key `freeze_removed`, default true), as the official code does."""

from __future__ import annotations

import os

import pytest
import torch
import yaml

import distilkit.io as dio
from distilkit.cli import main
from distilkit.depth import ProgressiveDepthPruner
from distilkit.errors import DistilkitError
from distilkit.recipes import load_recipe

TINY = os.path.join(os.path.dirname(__file__), "data", "recipe-tiny.yaml")
KEEP = ("teacher", "dense-to-sparse", "pmdp-8")


def _variant(tmp_path, **pmdp) -> str:
    data = yaml.safe_load(open(TINY, encoding="utf-8"))
    data["stages"] = [s for s in data["stages"] if s["name"] in KEEP]
    data["stages"][2].update(pmdp)
    for budget in data["budgets"].values():
        budget["stages"] = {k: v for k, v in budget["stages"].items() if k in KEEP}
    path = tmp_path / "three-stages.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _fading_blocks_at_the_end(monkeypatch) -> dict:
    """Spy on finalize(): the removed blocks' parameters (and their flags) just before they are dropped."""
    seen: dict = {}
    finalize = ProgressiveDepthPruner.finalize

    def spy(self):
        blocks = self.model.backbone.blocks
        seen.clear()
        seen.update({(i, n): (p.detach().clone(), p.requires_grad)
                     for i in self.removed for n, p in blocks[i].named_parameters()})
        return finalize(self)

    monkeypatch.setattr(ProgressiveDepthPruner, "finalize", spy)
    return seen


def test_depth_stage_leaves_the_fading_blocks_as_the_previous_stage_made_them(tmp_path, monkeypatch):
    """(That they would train otherwise is tests/test_depth_pruner.py's; `freeze_removed: false` is passed through.)"""
    seen = _fading_blocks_at_the_end(monkeypatch)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--recipe", _variant(tmp_path), "--budget", "tiny", "--out", str(out)])
    assert exc.value.code == 0
    before = dio.load(out / "dense-to-sparse" / "model").backbone.blocks
    assert seen and not any(flag for _, flag in seen.values())
    assert all(torch.equal(value, before[i].get_parameter(name)) for (i, name), (value, _) in seen.items())
    assert "frozen while they fade" in (out / "prune.log").read_text()


def test_freeze_removed_false_reaches_the_pruner(tmp_path):
    from distilkit.recipes.stages import setup_stage
    from distilkit.trackers.mixformerv2 import build_model

    recipe = load_recipe(_variant(tmp_path, freeze_removed=False))
    previous = build_model("mixformerv2-12l-tiny")
    setup = setup_stage(recipe.model_family, recipe.stages[2], recipe.budget("tiny"), previous)
    blocks = setup.student.backbone.blocks
    assert setup.pruner.freeze_removed is False and all(p.requires_grad for i in (0, 3, 6, 9) for p in blocks[i].parameters())
    assert "training while they fade" in setup.notes[0]


def test_freeze_removed_belongs_to_depth_stages(tmp_path):
    data = yaml.safe_load(open(TINY, encoding="utf-8"))
    data["stages"][1]["freeze_removed"] = True
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(DistilkitError, match=r"stages\[1\]\.freeze_removed: only depth stages"):
        load_recipe(str(path))
    data["stages"][1].pop("freeze_removed")
    data["stages"][2]["freeze_removed"] = "yes"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(DistilkitError, match=r"stages\[2\]\.freeze_removed"):
        load_recipe(str(path))
