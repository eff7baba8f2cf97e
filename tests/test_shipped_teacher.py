"""The shipped demo teacher: loads through distilkit.io, is what the demo budget starts from, and tracks the
held-out synthetic videos better than a constant box."""

from __future__ import annotations

import pytest

import distilkit.io as dio
from distilkit.data import SyntheticTracking
from distilkit.errors import DistilkitError
from distilkit.eval import ConstantBoxTracker, evaluate
from distilkit.recipes.schema import load_recipe
from distilkit.recipes.teachers import TEACHER_FILES, resolve_teacher, shipped_teacher_names, shipped_teacher_path
from distilkit.trackers.mixformerv2 import MixFormerV2, MixFormerV2Tracker

NAME = "mixformerv2-s-demo"


def test_the_demo_budget_starts_from_the_shipped_teacher():
    assert NAME in shipped_teacher_names()
    budget = load_recipe("mixformerv2-s").budget("demo")
    assert budget.teacher == NAME
    source = resolve_teacher(None, budget.teacher)
    assert source.label == f"shipped:{NAME}" and source.path == str(shipped_teacher_path(NAME))
    assert resolve_teacher("none", budget.teacher).path is None and resolve_teacher("NONE", None).label is None
    assert resolve_teacher("some/dir", budget.teacher).path == "some/dir"
    for file in TEACHER_FILES:
        assert (shipped_teacher_path(NAME) / file).stat().st_size > 0


def test_the_shipped_teacher_tracks_held_out_videos_above_a_constant_box():
    model = dio.load(shipped_teacher_path(NAME))
    assert isinstance(model, MixFormerV2) and model.config.name == "mixvit-b-corner-tiny"
    assert (model.config.template_size, model.config.search_size) == (32, 64)
    sequences = [SyntheticTracking(split="test")[i] for i in range(4)]
    learned = evaluate(MixFormerV2Tracker(model, template_factor=2.0), sequences, progress=False).overall["auc"]
    constant = evaluate(ConstantBoxTracker(), sequences, progress=False).overall["auc"]
    assert learned > constant + 0.05, (learned, constant)


def test_an_unknown_shipped_teacher_is_named():
    with pytest.raises(DistilkitError, match="no shipped teacher 'nope'.*shipped: .*mixformerv2-s-demo"):
        shipped_teacher_path("nope")
