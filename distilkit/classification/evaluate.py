"""Top-1 accuracy of a classifier on a dataset of (image, label) items."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from distilkit.checks import as_int
from distilkit.errors import DistilkitError


def top1_accuracy(model: nn.Module, dataset: Any, batch_size: int = 64, device: str = "cpu", workers: int = 0) -> float:
    """Share of `dataset` whose highest logit is the true label (no grad, eval mode; the mode is restored)."""
    if len(dataset) == 0:
        raise DistilkitError("top1_accuracy: the dataset is empty")
    loader = torch.utils.data.DataLoader(dataset, batch_size=as_int(batch_size, "batch_size", minimum=1),
                                         num_workers=as_int(workers, "workers", minimum=0))
    was_training = model.training
    model.eval()
    right = 0
    try:
        with torch.no_grad():
            for images, labels in loader:
                right += int((model(images.to(device)).argmax(-1).cpu() == labels).sum())
    finally:
        model.train(was_training)
    return right / len(dataset)
