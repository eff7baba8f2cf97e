"""Parse the dataset spec strings of the CLI and recipes: `synthetic[:N]`, `got10k:DIR`, `lasot:DIR`,
`trackingnet:DIR`, `coco:DIR` (training only), comma-separated to mix several."""

from __future__ import annotations

from distilkit.checks import is_ascii_digits
from distilkit.data.readers import COCO, GOT10k, LaSOT, TrackingNet
from distilkit.data.synthetic import DEMO_IMAGE_SIZE, DEMO_LENGTH, DEMO_TEST_SEQUENCES, DEMO_TRAIN_SEQUENCES, SyntheticTracking
from distilkit.errors import DistilkitError
from distilkit.limits import MAX_SEQUENCES

SPEC_KINDS = ("synthetic", "got10k", "lasot", "trackingnet", "coco")
#: Kinds without a tracking protocol (still images): training data only.
TRAIN_ONLY_KINDS = ("coco",)
# built-in synthetic sizes (the demo splits): training set and held-out evaluation set
SYNTHETIC_DEFAULTS = {"train": dict(num_sequences=DEMO_TRAIN_SEQUENCES, length=DEMO_LENGTH, seed=0, image_size=DEMO_IMAGE_SIZE),
                      "test": dict(num_sequences=DEMO_TEST_SEQUENCES, length=DEMO_LENGTH, seed=0, image_size=DEMO_IMAGE_SIZE)}


def synthetic_count(arg: str) -> int:
    """The N of `synthetic:N`: ASCII digits for a count from 1 to MAX_SEQUENCES, else a one-line error."""
    if not (is_ascii_digits(arg) and len(arg) <= len(str(MAX_SEQUENCES)) and 1 <= int(arg) <= MAX_SEQUENCES):
        shown = arg if len(arg) <= 20 else arg[:17] + "..."
        raise DistilkitError(f"synthetic:N needs a sequence count from 1 to {MAX_SEQUENCES}, got {shown!r}")
    return int(arg)


def check_kind_for_split(kind: str, split: str) -> None:
    """Refuse a training-only kind (`coco`) for evaluation (`split="test"`), before its path is looked at."""
    if split == "test" and kind in TRAIN_ONLY_KINDS:
        raise DistilkitError(f"{kind}:DIR is training data only (still images, no tracking protocol to evaluate on): "
                             "train with it (`distilkit prune --data`) and evaluate on got10k, lasot or trackingnet")


def load_datasets(spec: str, split: str = "train") -> list:
    """Datasets named by `spec` for `split` ("train" or "test"); every path is checked before returning.

    For evaluation (`split="test"`) GOT-10k uses its `val` split (the test split has no public
    ground truth), LaSOT its official test list when `testing_set.txt` is present, TrackingNet TEST;
    COCO (`train2017`) is refused there.
    """
    if split not in ("train", "test"):
        raise DistilkitError(f"dataset split must be 'train' or 'test', got {split!r}")
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise DistilkitError("empty dataset spec: use synthetic, got10k:DIR, lasot:DIR, trackingnet:DIR or coco:DIR")
    datasets = []
    for part in parts:
        kind, _, arg = part.partition(":")
        kind = kind.strip().lower()
        if kind not in SPEC_KINDS:
            raise DistilkitError(f"unknown dataset {kind!r} in spec {spec!r}; expected one of {', '.join(SPEC_KINDS)}")
        check_kind_for_split(kind, split)
        if kind == "synthetic":
            options = dict(SYNTHETIC_DEFAULTS[split])
            if arg:
                options["num_sequences"] = synthetic_count(arg)
            datasets.append(SyntheticTracking(split=split, **options))
            continue
        if not arg:
            raise DistilkitError(f"dataset {kind!r} needs a directory: {kind}:DIR")
        if kind == "got10k":
            datasets.append(GOT10k(arg, split="train" if split == "train" else "val"))
        elif kind == "lasot":
            datasets.append(LaSOT(arg, split=split))
        elif kind == "coco":
            datasets.append(COCO(arg))
        else:
            datasets.append(TrackingNet(arg, chunks=None if split == "train" else ["TEST"]))
    return datasets
