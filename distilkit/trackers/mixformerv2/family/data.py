"""Tracking data of a MixFormerV2 run: `--data` / `--eval-data` specs with the budget's synthetic sizes,
`synthetic-test:RECIPE[@BUDGET]` (the held-out split a recipe's report scores), ground-truth checks."""

from __future__ import annotations

import os
from typing import Any, Optional

from distilkit.errors import DistilkitError
from distilkit.recipes.schema import Budget

#: `synthetic-test:RECIPE[@BUDGET]`: exactly the held-out synthetic split that recipe's report evaluates.
RECIPE_SPLIT_KIND = "synthetic-test"


def _kind(part: str) -> str:
    """The dataset kind of one `--data` part (`synthetic:20` → synthetic), in any letter case, as
    `distilkit.data.load_datasets` reads it."""
    return part.partition(":")[0].strip().lower()


def is_synthetic(part: str) -> bool:
    """`synthetic` or `synthetic:N` in any letter case."""
    return _kind(part) == "synthetic"


# -- data ------------------------------------------------------------------------------------------
def synthetic_split(budget: Budget, split: str, count: Optional[int] = None) -> Any:
    """The budget's synthetic `split` ("train" or "test"): its sizes, seed 0; `count` overrides the sequence count."""
    from distilkit.data import SyntheticTracking

    spec = budget.synthetic
    n = count or (spec.train_sequences if split == "train" else spec.test_sequences)
    return SyntheticTracking(num_sequences=n, length=spec.length, seed=0, image_size=tuple(spec.image_size), split=split)


def datasets_for(spec: str, budget: Budget, split: str) -> list[Any]:
    """Datasets of a `--data` spec; `synthetic` uses the budget's sizes. Paths and ground truth are checked
    here, before training."""
    from distilkit.data import load_datasets
    from distilkit.data.spec import SPEC_KINDS, check_kind_for_split, synthetic_count

    flag = "--data" if split == "train" else "--eval-data"
    out = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        kind, arg = _kind(part), part.partition(":")[2]
        if kind == RECIPE_SPLIT_KIND:
            out.append(recipe_test_split(arg, f"{flag} {part}"))
            continue
        if kind == "synthetic":
            out.append(synthetic_split(budget, split, synthetic_count(arg) if arg else None))
            continue
        check_kind_for_split(kind, split)  # `--eval-data coco:DIR` is refused whether or not DIR exists
        if kind in SPEC_KINDS and arg and not os.path.isdir(arg):  # an unknown kind is load_datasets' to name
            raise DistilkitError(f"dataset directory not found: {arg} (from {flag} {part})")
        for dataset in load_datasets(part, split=split):
            check_ground_truth(dataset, f"{flag} {part}")
            out.append(dataset)
    if not out:
        raise DistilkitError(f"no datasets in spec {spec!r}")
    return out


def recipe_test_split(arg: str, where: str = RECIPE_SPLIT_KIND) -> Any:
    """`RECIPE[@BUDGET]` → that budget's held-out synthetic test split (default budget: the one `distilkit prune`
    picks for synthetic data, demo), so that `distilkit eval` scores exactly the sequences a report scored."""
    from distilkit.recipes.schema import load_recipe

    name, at, budget_name = arg.strip().rpartition("@") if "@" in arg else (arg.strip(), "", "")
    if not name:
        raise DistilkitError(f"{where}: give a recipe, as in {RECIPE_SPLIT_KIND}:mixformerv2-s or "
                             f"{RECIPE_SPLIT_KIND}:mixformerv2-s@demo")
    recipe = load_recipe(name)
    budget_name = budget_name or recipe.model_family.default_budget(recipe, "synthetic")
    if budget_name not in recipe.budgets:
        raise DistilkitError(f"{where}: recipe {recipe.name} has no budget {budget_name!r}; "
                             f"its budgets are {', '.join(recipe.budgets)}")
    return synthetic_split(recipe.budget(budget_name), "test")


def eval_datasets(spec: str) -> list[Any]:
    """Datasets of a `distilkit eval --data` spec: `synthetic-test:RECIPE[@BUDGET]` parts here, the rest as
    `distilkit.data.load_datasets` reads them (test splits)."""
    from distilkit.data import load_datasets

    out = []
    for part in (p.strip() for p in str(spec).split(",")):
        if _kind(part) == RECIPE_SPLIT_KIND:
            out.append(recipe_test_split(part.partition(":")[2], f"--data {part}"))
        elif part:
            out.extend(load_datasets(part, split="test"))
    if not out:
        raise DistilkitError(f"no datasets in spec {spec!r}")
    return out


def check_ground_truth(dataset: Any, where: str) -> None:
    """Refuse a dataset with no box beyond frame 0 (an unlabelled test split such as TrackingNet TEST):
    training would sample NaN boxes and evaluation could score nothing. The one box of a single-image
    sequence (COCO) is ground truth. Stops at the first annotated sequence."""
    from distilkit.data.sequence import sized_boxes

    for i in range(len(dataset)):
        boxes = dataset[i].boxes
        if sized_boxes(boxes[1:] if len(boxes) > 1 else boxes).any():
            return
    raise DistilkitError(f"{where}: no sequence has ground truth beyond frame 0 (an unlabelled test split?); "
                         "give annotated sequences (e.g. TrackingNet TRAIN_k chunks, GOT-10k train/val)")
