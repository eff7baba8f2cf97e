"""Images in the torchvision ImageFolder layout (`ROOT/<class>/<image>`, classes sorted by name), resized and
normalised for a ViT; every problem with the folder or a file is one error naming it."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from distilkit.checks import as_int
from distilkit.errors import DistilkitError
from distilkit.limits import MAX_CROP

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff")
#: Split sub-folders `imagefolder_split` looks for, in order of preference.
SPLIT_FOLDERS = {"train": ("train",), "test": ("val", "test")}
#: ImageNet statistics (the normalisation timm ViTs are trained with).
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _visible(names: Sequence[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


class ImageFolder(torch.utils.data.Dataset):
    """`ROOT/<class>/<image>` → items (normalised float tensor 3×S×S at `image_size`, class index); `classes`
    are the sorted folder names, `targets` the label of every image, `name` the folder's name."""

    def __init__(self, root: str, image_size: int):
        self.root = os.fspath(root)
        self.image_size = as_int(image_size, "image_size", minimum=1)
        if self.image_size > MAX_CROP:
            raise DistilkitError(f"image_size must be <= {MAX_CROP}, got {self.image_size}")
        if not os.path.isdir(self.root):
            raise DistilkitError(f"dataset directory not found: {self.root}")
        self.classes = [c for c in _visible(os.listdir(self.root)) if os.path.isdir(os.path.join(self.root, c))]
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            for dirpath, dirnames, files in sorted(os.walk(os.path.join(self.root, name), followlinks=True)):
                dirnames[:] = _visible(dirnames)
                self.samples += [(os.path.join(dirpath, f), label) for f in _visible(files)
                                 if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not self.samples:
            raise DistilkitError(f"{self.root}: no images in the ImageFolder layout ROOT/<class>/<image> "
                                 f"({', '.join(IMAGE_EXTENSIONS)}); found {len(self.classes)} class folder(s)")
        self.targets = [label for _, label in self.samples]
        self.names = [os.path.relpath(path, self.root) for path, _ in self.samples]
        self.name = os.path.basename(os.path.normpath(self.root))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize((self.image_size, self.image_size), Image.BILINEAR)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise DistilkitError(f"cannot read image {path}: {err}") from None
        x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - MEAN) / STD, label


def imagefolder_split(root: str, split: str, image_size: int) -> ImageFolder:
    """The `split` ("train" or "test") of ROOT: ROOT/train, ROOT/val (or ROOT/test) when ROOT has a train
    folder and one of those, else ROOT itself."""
    if split not in SPLIT_FOLDERS:
        raise DistilkitError(f"split must be 'train' or 'test', got {split!r}")
    if not os.path.isdir(root):
        raise DistilkitError(f"dataset directory not found: {root}")
    held_out = [f for f in SPLIT_FOLDERS["test"] if os.path.isdir(os.path.join(root, f))]
    if os.path.isdir(os.path.join(root, "train")) and held_out:
        return ImageFolder(os.path.join(root, "train" if split == "train" else held_out[0]), image_size)
    return ImageFolder(root, image_size)


def check_same_classes(datasets: Sequence[Any], where: str) -> None:
    """Datasets used together must name the same classes in the same order (labels are class indices)."""
    first = list(datasets[0].classes)
    for other in datasets[1:]:
        if list(other.classes) != first:
            extra = sorted(set(other.classes) ^ set(first))
            differ = f"differing classes {extra[:5]}" if extra else "the same classes in another order"
            names = f"{getattr(other, 'name', 'a dataset')} and {getattr(datasets[0], 'name', 'the first')}"
            raise DistilkitError(f"{where}: {names} have {differ}; datasets used together need the same classes")
