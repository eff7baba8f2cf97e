"""timm ViT image classification as a recipe family (`family: vit-classifier`): models from ViT presets, images
from the built-in generated shapes (`synthetic[:N]`) or `imagefolder:DIR`, cross-entropy and logit KD, top-1."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from distilkit.errors import DistilkitError
from distilkit.limits import MAX_CROP, MAX_SAMPLES, MAX_WEIGHT
from distilkit.recipes.family import ModelFamily, ReportColumn
from distilkit.recipes.losses import DISTILLED_KINDS, FEATURE_PART, SUPERVISED_KINDS, LossPart, StageLoss
from distilkit.recipes.models import model_name
from distilkit.recipes.progress import RunLog
from distilkit.recipes.schema import Bound, Budget, Recipe, Stage, bounds_problem, check_model_presets
from distilkit.recipes.validate import Context

#: The family's built-in data: generated images of six textured shapes (`distilkit.classification.GeneratedShapes`).
BUILTIN_DATA = "synthetic"


@dataclass
class GeneratedSpec:
    """Size of the built-in generated data (`--data synthetic` and the default test split)."""

    train_images: int = 2400
    test_images: int = 600

    def check(self) -> Optional[tuple[str, str]]:
        return bounds_problem(self, {"train_images": Bound(1.0, MAX_SAMPLES), "test_images": Bound(1.0, MAX_SAMPLES)})


@dataclass
class ClassifierBudget:
    """Input size the models take (the images are resized to it), the generated data's size, the KD temperature."""

    image_size: int = 224
    synthetic: GeneratedSpec = field(default_factory=GeneratedSpec)
    temperature: float = 1.0  # of the `kd` loss (Hinton: KL of softened distributions, scaled by T²)
    eval_batch_size: int = 128

    def check(self) -> Optional[tuple[str, str]]:
        return bounds_problem(self, {"image_size": Bound(1.0, MAX_CROP), "temperature": Bound(0.0, MAX_WEIGHT, low_open=True),
                                     "eval_batch_size": Bound(1.0, MAX_SAMPLES)})


# -- losses --------------------------------------------------------------------------------------------
def _ce(out: dict[str, Any], teacher_out: Any, batch: dict[str, torch.Tensor], loss: StageLoss) -> torch.Tensor:
    return F.cross_entropy(out["logits"].float(), batch["label"])


def _kd(out: dict[str, Any], teacher_out: Any, batch: dict[str, torch.Tensor], loss: StageLoss) -> torch.Tensor:
    from distilkit.distill import logit_kd

    return logit_kd(out["logits"].float(), teacher_out["logits"].float(), temperature=loss.options.temperature)


#: Loss parts of classifier stages: cross-entropy on labels, logit KD from the previous result, feature MSE.
LOSS_PARTS: dict[str, LossPart] = {
    "ce": LossPart(_ce, SUPERVISED_KINDS),
    "kd": LossPart(_kd, DISTILLED_KINDS, needs_teacher=True),
    "feature": FEATURE_PART,
}


# -- training batches ----------------------------------------------------------------------------------
class Samples(torch.utils.data.Dataset):
    """`samples` training items drawn from `datasets` in turn (index i → image i mod total), as dicts the
    trainer batches; the trainer's sampler shuffles them every epoch."""

    def __init__(self, datasets: list[Any], samples: int):
        self.parts = datasets
        self.total = sum(len(d) for d in datasets)
        self.samples = samples

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = index % self.total
        for part in self.parts:
            if i < len(part):
                image, label = part[i]
                return {"image": image, "label": label}
            i -= len(part)
        raise IndexError(index)


class _BlockOutputs:
    """Forward hooks collecting every block's output tokens (the `features` loss parts read) for one call."""

    def __init__(self, model: nn.Module, blocks: str):
        from distilkit.blocks import resolve_blocks

        self.features: list[torch.Tensor] = []
        self.handles = [b.register_forward_hook(lambda m, a, out: self.features.append(out))
                        for b in resolve_blocks(model, blocks)]

    def __enter__(self) -> "_BlockOutputs":
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()


class VitClassifierFamily(ModelFamily):
    """timm VisionTransformer classifiers: teacher → logit KD → PMDP → MLP ratio, evaluated by top-1 accuracy."""

    name = "vit-classifier"
    budget_options = ClassifierBudget
    loss_parts = LOSS_PARTS
    blocks = "blocks"
    metrics = (("top1", "top-1"),)
    speed = ("fps", "FPS")
    item_noun = "images"
    default_eval_label = "synthetic-test"

    # -- recipes ---------------------------------------------------------------------------------
    def check_recipe(self, recipe: Recipe, ctx: Context) -> None:
        from distilkit.classification.models import OVERRIDE_CAPS, OVERRIDE_TYPES, VIT_PRESETS

        check_model_presets(recipe, ctx, VIT_PRESETS, OVERRIDE_TYPES, OVERRIDE_CAPS, "ViT override", _model_problem)

    def default_budget(self, recipe: Recipe, data: str) -> str:
        """`demo` for the built-in data, `imagefolder` for folders of images (when the recipe has them), else the first."""
        want = "demo" if all(self.is_builtin_data(p) for p in data.split(",") if p.strip()) else "imagefolder"
        return want if want in recipe.budgets else next(iter(recipe.budgets))

    def is_builtin_data(self, part: str) -> bool:
        return _kind(part) == BUILTIN_DATA

    # -- models ----------------------------------------------------------------------------------
    def build(self, stage: Stage, budget: Budget) -> nn.Module:
        from distilkit.classification.models import build_vit

        return build_vit(model_name(stage, budget), **_model_kwargs(stage, budget))

    def load_teacher(self, path: str, stage: Stage, budget: Budget, label: Optional[str] = None) -> nn.Module:
        model = super().load_teacher(path, stage, budget, label)
        where = f"--teacher {path}" if label is None or label == path else f"teacher {label} ({path})"
        facts = self.describe(model) if hasattr(model, "patch_embed") and hasattr(model, "blocks") else None
        if facts is None:
            raise DistilkitError(f"{where}: not a ViT classifier ({type(model).__name__})")
        if facts["image_size"] != budget.image_size:
            raise DistilkitError(f"{where}: model takes {facts['image_size']} px images but the budget uses "
                                 f"{budget.image_size}; pick the matching --budget")
        return model

    def example_inputs(self, budget: Budget, batch: int = 1, device: str = "cpu") -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        return (torch.randn(batch, 3, budget.image_size, budget.image_size, generator=g).to(device),)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        from distilkit.width import find_mlp_sites

        sites = find_mlp_sites(model, self.blocks)
        embed = sites[0].embed_dim if sites else 0
        size = model.patch_embed.img_size
        return {"depth": len(sites), "embed_dim": embed,
                "mlp_ratio": round(sum(s.hidden for s in sites) / len(sites) / embed, 4) if sites else 0.0,
                "num_classes": int(model.num_classes), "image_size": int(size[0] if isinstance(size, tuple) else size),
                "patch_size": int(model.patch_embed.patch_size[0])}

    def architecture(self, row: dict[str, Any]) -> str:
        return f"ViT/{row['patch_size']} d{row['embed_dim']}, {row['num_classes']} classes"

    def is_backbone(self, name: str) -> bool:
        return not name.startswith(("head.", "head_drop.", "fc_norm."))

    def set_drop_path(self, model: nn.Module, rate: float) -> None:
        """Stochastic depth rising linearly over the blocks there are now (0 at the first, `rate` at the last);
        the models this family builds carry DropPath modules wherever their budget's drop_path asks for them."""
        from distilkit.blocks import resolve_blocks

        blocks = resolve_blocks(model, self.blocks)
        rates = torch.linspace(0, rate, len(blocks)).tolist() if len(blocks) > 1 else [0.0] * len(blocks)
        for i, (block, r) in enumerate(zip(blocks, rates)):
            for name in ("drop_path1", "drop_path2"):
                module = getattr(block, name, None)
                if hasattr(module, "drop_prob"):
                    module.drop_prob = r
                elif r > 0:
                    raise DistilkitError(f"block {i} has no DropPath ({type(module).__name__}): build the model with "
                                         "the budget's drop_path to train it with stochastic depth")

    def forward(self, model: nn.Module, batch: dict[str, Any], outputs: frozenset[str]) -> dict[str, Any]:
        if "features" not in outputs:
            return {"logits": model(batch["image"])}
        with _BlockOutputs(model, self.blocks) as blocks:
            logits = model(batch["image"])
        return {"logits": logits, "features": blocks.features}

    # -- data ------------------------------------------------------------------------------------
    def datasets(self, spec: str, budget: Budget, split: str) -> list[Any]:
        from distilkit.classification.imagefolder import check_same_classes, imagefolder_split

        flag = "--data" if split == "train" else "--eval-data"
        out = []
        for part in (p.strip() for p in str(spec).split(",")):
            if not part:
                continue
            kind, arg = _kind(part), part.partition(":")[2].strip()
            if kind == BUILTIN_DATA:
                out.append(self._generated(budget, split, _count(arg, f"{flag} {part}") if arg else None))
            elif kind == "imagefolder":
                if not arg:
                    raise DistilkitError(f"{flag} {part}: give the folder, as in imagefolder:/data/imagenet")
                out.append(imagefolder_split(arg, split, budget.image_size))
            else:
                raise DistilkitError(f"{flag} {part}: unknown data kind {kind!r} for the {self.name} family; expected "
                                     f"{BUILTIN_DATA}[:N] or imagefolder:DIR")
        if not out:
            raise DistilkitError(f"no datasets in spec {spec!r}")
        check_same_classes(out, f"{flag} {spec}")
        return out

    def _generated(self, budget: Budget, split: str, count: Optional[int] = None) -> Any:
        from distilkit.classification.shapes import GeneratedShapes

        spec = budget.synthetic
        n = count or (spec.train_images if split == "train" else spec.test_images)
        return GeneratedShapes(n, image_size=budget.image_size, split=split, seed=0)

    def default_eval_set(self, budget: Budget) -> Any:
        return self._generated(budget, "test")

    def check_training_data(self, datasets: list[Any], budget: Budget, route: list[Stage]) -> None:
        """The data's classes must be what the route's models output (checked before anything trains)."""
        from distilkit.classification.models import preset_config

        classes = len(datasets[0].classes)
        for stage in route:
            if stage.model is None:
                continue
            outputs = preset_config(model_name(stage, budget), **_model_kwargs(stage, budget))["num_classes"]
            if outputs != classes:
                raise DistilkitError(f"the data has {classes} classes but stage {stage.name!r} builds "
                                     f"{model_name(stage, budget)} with {outputs} outputs; set num_classes: {classes} in "
                                     "the budget's model_overrides")

    def training_set(self, stage: Stage, budget: Budget, datasets: list[Any], seed: int) -> Any:
        entry = budget.stage(stage.name)
        return Samples(datasets, entry.samples_per_epoch or budget.samples_per_epoch)

    # -- evaluation and report ------------------------------------------------------------------
    def evaluate(self, model: nn.Module, budget: Budget, eval_set: Any, out_dir: str, name: str, log: RunLog,
                 device: str) -> dict[str, Any]:
        from distilkit.classification.evaluate import top1_accuracy

        return {"top1": float(top1_accuracy(model, eval_set, batch_size=budget.eval_batch_size, device=device))}

    def baselines(self, out: str, eval_set: Any, log: RunLog) -> list[dict[str, Any]]:
        """The majority class: the accuracy of always answering the evaluation set's most common class."""
        labels = _labels(eval_set)
        counts = torch.bincount(torch.tensor(labels)) if labels else torch.zeros(1)
        return [{"name": "majority-class", "top1": float(counts.max()) / max(1, len(labels)), "fps": None}]

    def budget_lines(self, budget: Budget) -> list[str]:
        return [f"images {budget.image_size}px; KD temperature {budget.temperature:g}"]

    def report_columns(self) -> list[ReportColumn]:
        return [ReportColumn("classes", lambda r: str(r.get("num_classes", "")))]

    def report_notes(self, report: dict[str, Any]) -> list[str]:
        return ["top-1: share of the evaluation images whose highest logit is the true class. FPS: images per second "
                "of one full forward at batch 1 on CPU; speed-up against the teacher."]


def _kind(part: str) -> str:
    return part.partition(":")[0].strip().lower()


def _count(arg: str, where: str) -> int:
    if not arg.isdigit() or int(arg) < 1:
        raise DistilkitError(f"{where}: the image count must be a positive integer, got {arg!r}")
    return int(arg)


def _model_kwargs(stage: Stage, budget: Budget) -> dict[str, Any]:
    """Overrides of a teacher/distill stage's model: the budget's, the stage's, the budget's image size and, where
    the budget trains with stochastic depth, drop-path modules to set it on."""
    from distilkit.classification.models import preset_config

    kwargs = {**budget.model_overrides, **stage.overrides, "img_size": budget.image_size}
    if budget.drop_path:
        kwargs["drop_path_rate"] = budget.drop_path
    preset_config(model_name(stage, budget), **kwargs)
    return kwargs


def _model_problem(stage: Stage, budget: Budget) -> Optional[str]:
    """Why a teacher/distill stage's model cannot be built under `budget`, or None."""
    try:
        _model_kwargs(stage, budget)
    except DistilkitError as err:
        return str(err)
    return None


def _labels(dataset: Any) -> list[int]:
    """Every label of a classification dataset (its `targets` when it lists them, else read item by item)."""
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return [int(t) for t in targets]
    return [int(dataset[i][1]) for i in range(len(dataset))]


__all__ = ["ClassifierBudget", "GeneratedSpec", "LOSS_PARTS", "Samples", "VitClassifierFamily"]
