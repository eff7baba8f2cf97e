"""The recipe engine knows only the model-family interface: a family defined here (not in distilkit) runs a
recipe end to end, families resolve by name, entry point or `module:Attribute`, and recipes/ imports no family."""

from __future__ import annotations

import ast
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import distilkit
import distilkit.io as dio
from distilkit.errors import DistilkitError
from distilkit.factories import register_factory
from distilkit.recipes import load_recipe
from distilkit.recipes.families import family_names, register_family, resolve_family
from distilkit.recipes.family import ModelFamily
from distilkit.recipes.losses import DISTILLED_KINDS, FEATURE_PART, SUPERVISED_KINDS, LossPart
from distilkit.recipes.runner import PruneOptions, run_recipe

PACKAGE = Path(distilkit.__file__).parent


# -- a family of toy residual MLP classifiers, as a user would write one -------------------------------
class ToyBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.Linear(dim, dim)  # stands in for attention: a residual branch PMDP can fade
        self.mlp = nn.Sequential()
        self.mlp.fc1, self.mlp.act, self.mlp.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ToyNet(nn.Module):
    def __init__(self, inputs: int = 8, dim: int = 16, depth: int = 4, mlp_ratio: float = 4.0, classes: int = 3):
        super().__init__()
        self.config = {"inputs": inputs, "dim": dim, "depth": depth, "mlp_ratio": mlp_ratio, "classes": classes}
        self.embed = nn.Linear(inputs, dim)
        self.blocks = nn.ModuleList(ToyBlock(dim, int(dim * mlp_ratio)) for _ in range(depth))
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def arch_spec(self) -> dict[str, Any]:
        return {"factory": "toy-net", "config": self.config}


register_factory("toy-net", ToyNet)


class ToyData(torch.utils.data.Dataset):
    """Points whose class is the argmax of three fixed projections: learnable in a few steps."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x @ torch.randn(8, 3, generator=torch.Generator().manual_seed(99))).argmax(-1)
        self.names = [f"toy-{seed}-{i}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "label": self.y[i]}


def _ce(out, teacher_out, batch, loss):
    return F.cross_entropy(out["logits"], batch["label"])


def _kd(out, teacher_out, batch, loss):
    return F.kl_div(out["logits"].log_softmax(-1), teacher_out["logits"].softmax(-1), reduction="batchmean")


class ToyFamily(ModelFamily):
    name = "toy"
    loss_parts = {"ce": LossPart(_ce, SUPERVISED_KINDS), "kd": LossPart(_kd, DISTILLED_KINDS, needs_teacher=True),
                  "feature": FEATURE_PART}
    metrics = (("acc", "accuracy"),)
    item_noun = "points"

    def is_builtin_data(self, part: str) -> bool:
        return part.strip() == "synthetic"

    def build(self, stage, budget):
        return ToyNet(**{**budget.model_overrides, **stage.overrides})

    def example_inputs(self, budget, batch=1, device="cpu"):
        return (torch.zeros(batch, 8, device=device),)

    def describe(self, model):
        return {"depth": len(model.blocks), "mlp_ratio": model.blocks[0].mlp.fc1.out_features / model.embed.out_features}

    def is_backbone(self, name):
        return name.startswith(("embed.", "blocks."))

    def forward(self, model, batch, outputs):
        return {"logits": model(batch["x"])}

    def datasets(self, spec, budget, split):
        if spec != "synthetic":
            raise DistilkitError(f"toy data is 'synthetic' only, got {spec!r}")
        return [ToyData(128 if split == "train" else 64, seed=0 if split == "train" else 1)]

    def default_eval_set(self, budget):
        return self.datasets("synthetic", budget, "test")[0]

    def training_set(self, stage, budget, datasets, seed):
        return datasets[0]

    def evaluate(self, model, budget, eval_set, out_dir, name, log, device):
        with torch.no_grad():
            model.eval()
            right = (model(eval_set.x).argmax(-1) == eval_set.y).float().mean()
        return {"acc": float(right)}


RECIPE = """\
name: toy-route
family: {family}
description: a toy classifier taught, then cut from 4 to 2 blocks by PMDP
stages:
  - name: teacher
    kind: teacher
    model: toy
    losses: {{ce: 1.0}}
  - name: pmdp-2
    kind: depth
    keep: 2
    losses: {{kd: 1.0, ce: 0.5}}
budgets:
  demo:
    description: seconds
    batch_size: 16
    samples_per_epoch: 128
    workers: 0
    optimizer: {{lr: 1.0e-2, backbone_lr_scale: 1.0}}
    stages:
      teacher: {{epochs: 3}}
      pmdp-2: {{epochs: 2, m: 1.0}}
"""


def _recipe(tmp_path: Path, family: str) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(RECIPE.format(family=family))
    return path


def test_a_family_defined_outside_distilkit_runs_a_two_stage_recipe(tmp_path):
    register_family("toy", ToyFamily)
    out = tmp_path / "run"
    report = run_recipe(PruneOptions(recipe=str(_recipe(tmp_path, "toy")), out=str(out), device="cpu"))
    teacher, student = report["stages"]
    assert report["family"] == "toy" and report["baselines"] == [] and report["baseline"] is None
    assert (teacher["depth"], student["depth"]) == (4, 2) and student["layer_map"]["removed"] == [0, 2]
    assert teacher["acc"] > 0.6 and student["params"] < teacher["params"]  # it learned; PMDP removed blocks
    saved = dio.load(str(out / "pmdp-2" / "model"))
    assert isinstance(saved, ToyNet) and len(saved.blocks) == 2
    text = (out / "report.md").read_text()
    assert "model family `toy`" in text and "| accuracy |" in text and "accuracy / teacher" in text
    assert json.loads((out / "report.json").read_text())["stages"][1]["acc"] == student["acc"]


def test_a_family_is_found_by_module_path(tmp_path, monkeypatch):
    """`family: package.module:Attribute` imports a user's module: no registration, no edit of distilkit."""
    (tmp_path / "my_toy_family.py").write_text(textwrap.dedent("""\
        from test_recipe_families import ToyFamily
        FAMILY = ToyFamily()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(os.path.dirname(__file__))
    recipe = load_recipe(str(_recipe(tmp_path, "my_toy_family:FAMILY")))
    assert recipe.model_family.name == "toy" and [s.kind for s in recipe.stages] == ["teacher", "depth"]
    from distilkit.recipes import plan

    rows = plan(recipe, "demo")
    assert [r["depth"] for r in rows] == [4, 2] and rows[1]["remove"] == [0, 2] and rows[1]["macs"] < rows[0]["macs"]


@pytest.mark.parametrize("family, message", [
    ("no-such-family", "unknown model family 'no-such-family'; known: "),
    ("no_such_module_xyz:Family", "cannot import 'no_such_module_xyz'"),
    ("json:Nothing", "module 'json' has no attribute 'Nothing'"),
    ("json:dumps", "not a distilkit.recipes.family.ModelFamily"),
])
def test_a_bad_family_is_one_line_naming_the_key(tmp_path, family, message):
    path = _recipe(tmp_path, family)
    with pytest.raises(DistilkitError) as err:
        load_recipe(str(path))
    assert str(err.value).startswith(f"{path}:2: family: ") and message in str(err.value), str(err.value)


def test_stage_kinds_and_losses_are_the_familys(tmp_path):
    register_family("toy", ToyFamily)
    path = tmp_path / "bad.yaml"
    path.write_text(RECIPE.format(family="toy").replace("kind: depth", "kind: score"))
    with pytest.raises(DistilkitError, match=r"stages\[1\]\.kind: expected one of \['teacher', 'distill', 'depth', 'width'\]"):
        load_recipe(str(path))  # `score` is MixFormerV2's own kind, not the toy family's
    path.write_text(RECIPE.format(family="toy").replace("{ce: 1.0}", "{l1: 1.0}"))
    with pytest.raises(DistilkitError, match=r"unknown loss 'l1' for a teacher stage; expected some of \['ce'\]"):
        load_recipe(str(path))


def test_shipped_families_are_installed_entry_points():
    assert {"mixformerv2", "vit-classifier"} <= set(family_names())
    assert resolve_family("mixformerv2").name == "mixformerv2"
    assert resolve_family("vit-classifier").extra_stage_kinds == frozenset()
    assert load_recipe("mixformerv2-s").model_family.extra_stage_kinds == {"score"}


def _imports(path: Path) -> set[str]:
    """Every module a source file imports (absolute names; relative imports resolved against distilkit.recipes)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            found.add(f"distilkit.recipes.{base}" if node.level else base)
    return found


def test_the_recipe_engine_imports_no_family_and_no_task_code():
    """recipes/ knows only the family interface and the generic toolkit: no tracker, classifier, tracking data or
    tracking evaluation module (MixFormerV2 and the ViT classifier plug in from outside)."""
    task_code = ("distilkit.trackers", "distilkit.classification", "distilkit.data", "distilkit.eval", "distilkit.deploy",
                 "distilkit.commands", "distilkit.cli")
    for path in sorted((PACKAGE / "recipes").glob("*.py")):
        bad = sorted(m for m in _imports(path) if m.startswith(task_code))
        assert not bad, f"{path.name} imports {bad}"


def test_budget_reads_and_replaces_the_familys_options_like_its_own_keys():
    """A budget's family settings read as budget attributes; `Budget.replace` routes each change where it lives."""
    budget = load_recipe("mixformerv2-s").budget("demo")
    assert budget.template_size == budget.options.template_size == 32 and budget.eval.tracker == {}
    changed = budget.replace(batch_size=8, scale_jitter=0.25)
    assert (changed.batch_size, changed.scale_jitter, changed.template_size) == (8, 0.25, 32)
    assert (budget.batch_size, budget.scale_jitter) == (32, 0.5)  # the original is untouched
    with pytest.raises(TypeError):
        budget.replace(no_such_key=1)


def test_a_key_no_family_has_is_a_plain_attribute_error():
    budget = load_recipe("mixformerv2-s").budget("demo")
    with pytest.raises(AttributeError, match="'Budget' object has no attribute 'image_size' \\(nor have its family options\\)"):
        budget.image_size  # the classifier family's key, not MixFormerV2's
    with pytest.raises(AttributeError, match="'EvalSpec' object has no attribute 'nope'"):
        budget.eval.nope
