"""Recipe validation: shipped recipes load; unknown keys, wrong types, missing fields and bad routes fail
with a DistilkitError naming the file, the line and the key."""

from __future__ import annotations

import copy
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
    message = "budgets.tiny.stages.teacher.epochs: expected an integer, got str 'five'"
    with pytest.raises(DistilkitError, match=re.escape(message)) as err:
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
    (lambda d: d["stages"].insert(0, copy.deepcopy(d["stages"][1])), "the first stage, and only the first, is the 'teacher' "
                                                                     "stage"),
    (lambda d: d["stages"][3].update(name="pmdp-8"), "duplicate stage name 'pmdp-8'"),
    (lambda d: d["stages"][2].update(keep=8), "exactly one of 'remove'"),
    (lambda d: d["stages"][2].pop("feature_pairs"), "'feature' loss and 'feature_pairs'"),
    (lambda d: d["stages"][4].pop("mlp_ratio"), "needs a positive target 'mlp_ratio'"),
    (lambda d: d["budgets"]["tiny"]["stages"]["pmdp-8"].update(m=5), "exceeds the stage's 2 epochs"),
    (lambda d: d["budgets"]["tiny"]["stages"].update(extra={"epochs": 1}), "no stage named 'extra'"),
    (lambda d: d["budgets"]["tiny"]["stages"]["teacher"].update(losses={"attn": 1.0}), "unknown loss 'attn' for the teacher "
                                                                                       "stage"),
    (lambda d: d["budgets"]["tiny"]["stages"]["score"].update(losses={"bce": 0}), "stage 'score' is left without any loss"),
    (lambda d: d["budgets"]["tiny"]["stages"]["dense-to-sparse"].update(losses={"feature": 1.0}), "'feature' loss needs "
                                                                                                  "'feature_pairs'"),
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
    """Applying the shipped routes to full-size models lands exactly on the official models' parameter counts."""
    from distilkit.recipes import plan

    s = plan(load_recipe("mixformerv2-s"), "paper", macs=False)
    assert [(r["depth"], r["mlp_ratio"]) for r in s] == [(12, 4), (12, 4), (8, 4), (4, 4), (4, 1), (4, 1)]
    assert s[-1]["params"] == 16_228_897 and s[-1]["score_head"] and s[-1]["bins"] == 96
    b = plan(load_recipe("mixformerv2-b"), "paper", macs=False)
    assert b[0]["params"] == 98_403_894  # MixViT-B with Py-Corner head at 288/128
    assert b[-1]["params"] == 58_855_201 and b[-1]["depth"] == 8


def _located(tmp_path, edit, key: str, message: str) -> None:
    """The edited recipe fails with `file:line: key: message`, the line being the key's (or its mapping's)."""
    path = _variant(tmp_path, edit)
    with pytest.raises(DistilkitError) as err:
        load_recipe(path)
    head, _, rest = str(err.value).partition(": ")
    assert head.startswith(f"{path}:") and head[len(path) + 1:].isdigit(), str(err.value)
    assert rest.startswith(f"{key}: ") and message in rest, str(err.value)


def _budget(**changes):
    return lambda d: d["budgets"]["tiny"].update(changes)


def _optimizer(**changes):
    return lambda d: d["budgets"]["tiny"]["optimizer"].update(changes)


@pytest.mark.parametrize("edit, key, message", [
    (lambda d: d["stages"][1]["losses"].update(kl=float("nan")), "stages[1].losses", "loss weight for 'kl' must be in [0, "
                                                                                     "1000000], got nan"),
    (lambda d: d["budgets"]["tiny"]["stages"]["pmdp-8"]["losses"].update(attn=float("inf")), "budgets.tiny.stages.pmdp-8.losses",
     "must be <= 1000000, got inf"),
    (_optimizer(lr=float("nan")), "budgets.tiny.optimizer.lr", "must be in (0, 10], got nan"),
    (_optimizer(grad_clip=-1.0), "budgets.tiny.optimizer.grad_clip", "must be >= 0, got -1.0"),
    (_optimizer(weight_decay=-1e-4), "budgets.tiny.optimizer.weight_decay", "must be >= 0"),
    (_optimizer(lr_drop_factor=-0.1), "budgets.tiny.optimizer.lr_drop_factor", "must be >= 0"),
    (_optimizer(warmup_steps=-5), "budgets.tiny.optimizer.warmup_steps", "must be >= 0, got -5"),
    (_optimizer(lr_drop_at=float("nan")), "budgets.tiny.optimizer.lr_drop_at", "must be in (0, 1], got nan"),
    (_budget(checkpoint_every=-1), "budgets.tiny.checkpoint_every", "must be >= 0"),
    (_budget(max_gap=-1), "budgets.tiny.max_gap", "must be >= 0"),
    (_budget(workers=-1), "budgets.tiny.workers", "must be >= 0"),
    (_budget(center_jitter=-2.0), "budgets.tiny.center_jitter", "must be >= 0"),
    (_budget(search_factor=0), "budgets.tiny.search_factor", "must be > 0, got 0.0"),
    (_budget(threads=0), "budgets.tiny.threads", "must be >= 1, got 0"),
    (_budget(negative_prob=float("nan")), "budgets.tiny.negative_prob", "must be in [0, 1), got nan"),
    (_budget(eval={"latency_threads": 0}), "budgets.tiny.eval.latency_threads", "must be >= 1, got 0"),
    (lambda d: d["budgets"]["tiny"]["stages"]["pmdp-8"].update(samples_per_epoch=0),
     "budgets.tiny.stages.pmdp-8.samples_per_epoch",
     "must be >= 1, got 0"),
    (lambda d: d["budgets"]["tiny"]["stages"]["pmdp-8"].update(lr=float("nan")), "budgets.tiny.stages.pmdp-8.lr", "must be in "
                                                                                                                  "(0, 10]"),
    (lambda d: d["budgets"]["tiny"]["stages"]["pmdp-8"].update(m=float("nan")), "budgets.tiny.stages.pmdp-8.m", "must be in [0, "
                                                                                                                "100000], got "
                                                                                                                "nan"),
    (lambda d: d["stages"][2].update(schedule={"kind": "step", "steps": 0}), "stages[2].schedule.steps", "must be >= 1, got 0"),
    (lambda d: d["stages"][2].update(schedule={"offset": float("nan")}), "stages[2].schedule.offset", "must be in [-100000, "
                                                                                                      "100000], got nan"),
    (lambda d: d["stages"][3].update(keep=0), "stages[3].keep", "keeps at least one layer, got 0"),
    (lambda d: d["stages"][4].update(mlp_ratio=float("nan")), "stages[4].mlp_ratio", "positive target 'mlp_ratio'"),
])
def test_numbers_are_finite_and_in_range(tmp_path, edit, key, message):
    _located(tmp_path, edit, key, message)


@pytest.mark.parametrize("edit, key, message", [
    (lambda d: d["stages"][1].update(model="mixformerv9"), "stages[1].model", "unknown model 'mixformerv9'; expected one of"),
    (_budget(model_suffix="-small"), "budgets.tiny.model_suffix", "no model 'mixvit-b-corner-small' for stage 'teacher'"),
    (lambda d: d["stages"][1].update(overrides={"dpth": 4}), "stages[1].overrides.dpth", "unknown MixFormerV2Config field"),
    (lambda d: d["stages"][1].update(overrides={"depth": "twelve"}), "stages[1].overrides.depth", "expected an integer, got str "
                                                                                                  "'twelve'"),
    (lambda d: d["stages"][1].update(overrides={"mlp_ratio": float("nan")}), "stages[1].overrides.mlp_ratio", "must be a finite "
                                                                                                              "number"),
    (lambda d: d["budgets"]["tiny"]["model_overrides"].update(bins="many"), "budgets.tiny.model_overrides.bins", "expected an "
                                                                                                                 "integer"),
    (lambda d: d["budgets"]["tiny"]["model_overrides"].update(hidden=8), "budgets.tiny.model_overrides.hidden",
     "unknown MixFormerV2Config field"),
    (lambda d: d["budgets"]["tiny"]["model_overrides"].update(num_heads=3), "stages[0].model", "budget 'tiny': embed_dim 32 is "
                                                                                               "not divisible"),
    (_budget(eval={"tracker": {"bogus": 3}}), "budgets.tiny.eval.tracker.bogus",
     "unknown MixFormerV2Tracker option; expected one of ['compile', 'prepack', 'score_threshold', 'update_interval']"),
    (_budget(eval={"tracker": {"device": "cpu"}}), "budgets.tiny.eval.tracker.device", "unknown MixFormerV2Tracker option"),
    (_budget(eval={"tracker": {"update_interval": "often"}}), "budgets.tiny.eval.tracker.update_interval", "expected an integer"),
])
def test_models_overrides_and_tracker_options_are_checked_at_load(tmp_path, edit, key, message):
    _located(tmp_path, edit, key, message)


def test_override_and_tracker_values_keep_their_types(tmp_path):
    def edit(d):
        d["stages"][1]["overrides"] = {"mlp_ratio": 4}
        d["budgets"]["tiny"]["eval"]["tracker"] = {"score_threshold": 1, "update_interval": 10}

    recipe = load_recipe(_variant(tmp_path, edit))
    assert recipe.stages[1].overrides == {"mlp_ratio": 4.0} and isinstance(recipe.stages[1].overrides["mlp_ratio"], float)
    assert recipe.budget("tiny").eval.tracker == {"score_threshold": 1.0, "update_interval": 10}


def test_exponent_numbers_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads an unquoted 1e-3 as a string; recipes read it as YAML 1.2 does."""
    text = open(TINY, encoding="utf-8").read()
    assert "optimizer: {lr: 1.0e-3," in text
    path = tmp_path / "exp.yaml"
    path.write_text(text.replace("optimizer: {lr: 1.0e-3,", "optimizer: {lr: 1e-3, weight_decay: 1E-4,"))
    optimizer = load_recipe(str(path)).budget("tiny").optimizer
    assert optimizer.lr == 1e-3 and optimizer.weight_decay == 1e-4
    path.write_text(text.replace("optimizer: {lr: 1.0e-3,", "optimizer: {lr: '1e-3',"))
    with pytest.raises(DistilkitError, match=re.escape("budgets.tiny.optimizer.lr: expected a number, got str '1e-3'")):
        load_recipe(str(path))


def test_recipe_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(open(TINY, "rb").read().replace(b"description: mixformerv2-s", "description: café".encode("latin-1")))
    with pytest.raises(DistilkitError, match=re.escape(f"{path}:3: not UTF-8 text (byte 0xe9)")):
        load_recipe(str(path))
