"""Budget keys `augment` and `drop_path`: the paper budgets' official values, off by default, checked at their
recipe key, and handed to every trained stage (its sampler and its student's backbone)."""

from __future__ import annotations

import os

import pytest
import yaml

from distilkit.cli import main
from distilkit.data.augment import Augment
from distilkit.errors import DistilkitError
from distilkit.recipes import load_recipe
from distilkit.recipes import trainer as trainer_module

TINY = os.path.join(os.path.dirname(__file__), "data", "recipe-tiny.yaml")
KEEP = ("teacher", "dense-to-sparse", "pmdp-8", "pmdp-4")


@pytest.mark.parametrize("recipe", ["mixformerv2-s", "mixformerv2-b"])
def test_paper_budgets_augment_as_the_official_code_and_demo_does_not(recipe):
    loaded = load_recipe(recipe)
    paper, demo = loaded.budget("paper"), loaded.budget("demo")
    assert (paper.augment.grayscale, paper.augment.brightness, paper.augment.flip, paper.drop_path) == (0.05, 0.2, 0.5, 0.1)
    assert (demo.augment.grayscale, demo.augment.brightness, demo.augment.flip, demo.drop_path) == (0, 0, 0, 0)
    tiny = load_recipe(TINY).budget("tiny")
    assert not Augment(tiny.augment.grayscale, tiny.augment.brightness, tiny.augment.flip).active and tiny.drop_path == 0


def _variant(tmp_path, budget: dict, stages=KEEP) -> str:
    data = yaml.safe_load(open(TINY, encoding="utf-8"))
    data["stages"] = [s for s in data["stages"] if s["name"] in stages]
    tiny = data["budgets"]["tiny"]
    tiny["stages"] = {k: v for k, v in tiny["stages"].items() if k in stages}
    tiny.update(budget)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.mark.parametrize("budget, key, message", [
    ({"augment": {"flip": 1.5}}, "budgets.tiny.augment.flip", r"must be <= 1, got 1.5"),
    ({"augment": {"grayscale": -0.05}}, "budgets.tiny.augment.grayscale", r"must be >= 0, got -0.05"),
    ({"augment": {"brightness": 20}}, "budgets.tiny.augment.brightness", r"must be <= 10, got 20"),
    ({"augment": {"hue": 0.1}}, "budgets.tiny.augment.hue", "unknown"),
    ({"augment": 0.5}, "budgets.tiny.augment", "expected a mapping"),
    ({"drop_path": 1.0}, "budgets.tiny.drop_path", r"must be < 1, got 1.0"),
    ({"drop_path": "high"}, "budgets.tiny.drop_path", "expected a number"),
    ({"model_overrides": {"drop_path_rate": 0.1}}, "budgets.tiny.model_overrides.drop_path_rate", "the budget's 'drop_path'"),
])
def test_bad_values_are_one_line_errors_at_their_key(tmp_path, capsys, budget, key, message):
    path = _variant(tmp_path, budget)
    with pytest.raises(DistilkitError, match=message) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}:") and f": {key}: " in str(err.value), str(err.value)
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--recipe", path, "--budget", "tiny", "--dry-run"])
    assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_stage_overrides_cannot_set_drop_path_either(tmp_path):
    data = yaml.safe_load(open(_variant(tmp_path, {}), encoding="utf-8"))
    data["stages"][1]["overrides"] = {"drop_path_rate": 0.1}
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(DistilkitError, match=r": stages\[1\]\.overrides\.drop_path_rate: set stochastic depth with"):
        load_recipe(str(path))


def test_every_trained_stage_gets_the_augmentation_and_drop_path_over_its_blocks(tmp_path, monkeypatch):
    """The depth stage fades 4 of 12 blocks (rates over 12); the next one starts from 8 (rates over 8), as the
    official code builds each stage's model with drop_path_rate 0.1 over its depth."""
    seen = []
    init = trainer_module.Trainer.__init__

    def spy(self, name, student, teacher, loss, dataset, *args, **kwargs):
        seen.append((name, dataset.augment, [b.drop_path1.drop_prob for b in student.backbone.blocks]))
        init(self, name, student, teacher, loss, dataset, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "__init__", spy)
    path = _variant(tmp_path, {"augment": {"grayscale": 0.05, "brightness": 0.2, "flip": 0.5}, "drop_path": 0.1})
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--recipe", path, "--budget", "tiny", "--out", str(out)])
    assert exc.value.code == 0
    assert [name for name, _, _ in seen] == list(KEEP)
    assert all(augment == Augment(grayscale=0.05, brightness=0.2, flip=0.5) for _, augment, _ in seen)
    depths = {name: len(r) for name, _, r in seen}
    assert depths == {"teacher": 12, "dense-to-sparse": 12, "pmdp-8": 12, "pmdp-4": 8}
    for _, _, r in seen:
        assert r == pytest.approx([0.1 * i / (len(r) - 1) for i in range(len(r))])
    assert "augment grayscale p 0.05, brightness ±0.2, flip p 0.5; drop path 0.1" in (out / "prune.log").read_text()
