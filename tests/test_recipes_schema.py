"""Recipe validation: shipped recipes load; unknown keys, wrong types, missing fields and bad routes fail
with a DistilkitError naming the file, the line and the key."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from distilkit.errors import DistilkitError
from distilkit.recipes import load_recipe, resolve_recipe_path, shipped_recipes
from distilkit.recipes.schema import effective_losses

HERE = os.path.dirname(__file__)
TINY = os.path.join(HERE, "data", "recipe-tiny.yaml")
REPO = os.path.dirname(HERE)


def test_shipped_recipes_load_and_cover_the_route():
    assert {"mixformerv2-s", "mixformerv2-b"} <= set(shipped_recipes())
    s = load_recipe("mixformerv2-s")
    assert [st.kind for st in s.stages] == ["teacher", "distill", "depth", "depth", "width", "score"]
    assert s.stages[0].model == "mixvit-b-corner" and s.stages[1].model == "mixformerv2-s"
    assert s.stages[1].overrides == {"depth": 12, "mlp_ratio": 4.0}
    assert s.stages[2].remove == [0, 3, 6, 9]
    assert s.stages[1].losses == {"kl": 5.0, "l1": 5.0, "ciou": 2.0}
    assert s.stages[2].losses["feature"] == 0.2
    paper = s.budget("paper")
    assert paper.optimizer.lr == 4e-4 and paper.optimizer.backbone_lr_scale == 0.1
    assert paper.optimizer.weight_decay == 1e-4 and paper.optimizer.grad_clip == 0.1
    assert paper.batch_size == 32 and paper.samples_per_epoch == 60000
    assert paper.stages["pmdp-8"].epochs == 500 and paper.stages["pmdp-8"].m == 40
    demo = s.budget("demo").stages["dense-to-sparse"]
    assert effective_losses(s.stages[1], demo) == {"kl": 5.0, "l1": 5.0, "ciou": 2.0, "attn": 2.0}
    assert effective_losses(s.stages[1], paper.stages["dense-to-sparse"]) == s.stages[1].losses  # paper: as published
    b = load_recipe("mixformerv2-b")
    assert [st.kind for st in b.stages] == ["teacher", "distill", "depth", "score"]
    assert b.stages[0].model == "mixvit-b"


def test_top_level_recipes_dir_is_the_shipped_one():
    link = os.path.join(REPO, "recipes")
    assert os.path.islink(link) and not os.path.isabs(os.readlink(link))
    assert os.path.isfile(os.path.join(link, "mixformerv2-s.yaml"))
    assert os.path.samefile(os.path.join(link, "mixformerv2-s.yaml"), resolve_recipe_path("mixformerv2-s"))


def test_path_and_unknown_name():
    assert load_recipe(TINY).name == "tiny-s"
    with pytest.raises(DistilkitError, match="unknown recipe 'nope'.*mixformerv2-s"):
        load_recipe("nope")
    with pytest.raises(DistilkitError, match="recipe file not found: missing/x.yaml"):
        load_recipe("missing/x.yaml")


def _variant(tmp_path, edit) -> str:
    with open(TINY, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _line_of(path: str, needle: str) -> int:
    for i, line in enumerate(open(path, encoding="utf-8"), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


def test_unknown_key_names_file_line_and_key(tmp_path):
    path = _variant(tmp_path, lambda d: d["stages"][2].update(remvoe=[1]))
    with pytest.raises(DistilkitError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{_line_of(path, 'remvoe')}: stages[2].remvoe: unknown key")
    assert "'remove'" in msg


def test_wrong_type_names_key(tmp_path):
    path = _variant(tmp_path, lambda d: d["budgets"]["tiny"]["stages"]["teacher"].update(epochs="five"))
    with pytest.raises(DistilkitError, match=re.escape("budgets.tiny.stages.teacher.epochs: expected an integer, got str 'five'")) as err:
        load_recipe(path)
    assert f"{path}:{_line_of(path, 'five')}:" in str(err.value)
    path = _variant(tmp_path, lambda d: d["stages"][1]["losses"].update(kl=[5]))
    with pytest.raises(DistilkitError, match=re.escape("stages[1].losses.kl: expected a number, got a list")):
        load_recipe(path)
    path = _variant(tmp_path, lambda d: d["budgets"]["tiny"].update(deterministic="yes"))
    with pytest.raises(DistilkitError, match="deterministic: expected true or false"):
        load_recipe(path)


def test_long_values_are_cut_in_errors(tmp_path):
    """Not a recipe at all (say, a text file): the error stays one short line."""
    path = tmp_path / "notes.yaml"
    path.write_text("word " * 200 + "\n")
    with pytest.raises(DistilkitError, match=r"expected a mapping for Recipe, got str 'word word .*\.\.\.$") as err:
        load_recipe(str(path))
    assert len(str(err.value)) < 200


def test_missing_field(tmp_path):
    path = _variant(tmp_path, lambda d: d["stages"][0].pop("losses"))
    with pytest.raises(DistilkitError, match=re.escape("stages[0]: missing required key 'losses'")):
        load_recipe(path)
    path = _variant(tmp_path, lambda d: d["budgets"]["tiny"]["stages"].pop("pmdp-4"))
    with pytest.raises(DistilkitError, match="budgets.tiny.stages: missing entry for stage 'pmdp-4'"):
        load_recipe(path)
    path = _variant(tmp_path, lambda d: d["budgets"]["tiny"]["stages"]["pmdp-8"].pop("m"))
    with pytest.raises(DistilkitError, match="budgets.tiny.stages.pmdp-8: missing 'm'"):
        load_recipe(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["stages"][1]["losses"].update(bce=1.0), "unknown loss 'bce' for a distill stage"),
    (lambda d: d["stages"][1]["losses"].update(kl=-2.0), "loss weight for 'kl' must be >= 0, got -2.0"),
    (lambda d: d["stages"][1].update(kind="prune"), "kind: expected one of"),
    (lambda d: d["stages"].insert(0, dict(d["stages"][1])), "the first stage, and only the first, is the 'teacher' stage"),
    (lambda d: d["stages"][3].update(name="pmdp-8"), "duplicate stage name 'pmdp-8'"),
    (lambda d: d["stages"][2].update(keep=8), "exactly one of 'remove'"),
    (lambda d: d["stages"][2].pop("feature_pairs"), "'feature' loss and 'feature_pairs'"),
    (lambda d: d["stages"][4].pop("mlp_ratio"), "needs a positive target 'mlp_ratio'"),
    (lambda d: d["budgets"]["tiny"]["stages"]["pmdp-8"].update(m=5), "exceeds the stage's 2 epochs"),
    (lambda d: d["budgets"]["tiny"]["stages"].update(extra={"epochs": 1}), "no stage named 'extra'"),
    (lambda d: d["budgets"]["tiny"]["stages"]["teacher"].update(losses={"attn": 1.0}), "unknown loss 'attn' for the teacher stage"),
    (lambda d: d["budgets"]["tiny"]["stages"]["score"].update(losses={"bce": 0}), "stage 'score' is left without any loss"),
    (lambda d: d["budgets"]["tiny"]["stages"]["dense-to-sparse"].update(losses={"feature": 1.0}), "'feature' loss needs 'feature_pairs'"),
    (lambda d: d["budgets"]["tiny"]["stages"]["dense-to-sparse"].update(losses={"kl": -1.0}), "must be >= 0"),
    (lambda d: d["stages"][1].update(attention_layers=0), "needs at least the last block"),
])
def test_route_rules(tmp_path, edit, message):
    with pytest.raises(DistilkitError, match=re.escape(message)):
        load_recipe(_variant(tmp_path, edit))


def test_malformed_yaml_has_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nstages: [\n  {a: 1\n")
    with pytest.raises(DistilkitError, match=re.escape(f"{path}:") + r"\d+: malformed YAML"):
        load_recipe(str(path))


@pytest.mark.slow
def test_paper_routes_end_at_the_official_model_sizes():
    """Applying the shipped routes to full-size models lands exactly on REFERENCE's parameter counts."""
    from distilkit.recipes import plan

    s = plan(load_recipe("mixformerv2-s"), "paper", macs=False)
    assert [(r["depth"], r["mlp_ratio"]) for r in s] == [(12, 4), (12, 4), (8, 4), (4, 4), (4, 1), (4, 1)]
    assert s[-1]["params"] == 16_228_897 and s[-1]["score_head"] and s[-1]["bins"] == 96
    b = plan(load_recipe("mixformerv2-b"), "paper", macs=False)
    assert b[0]["params"] == 98_403_894  # MixViT-B with Py-Corner head at 288/128
    assert b[-1]["params"] == 58_855_201 and b[-1]["depth"] == 8
