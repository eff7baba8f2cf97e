"""Per-channel importance of MLP hidden channels: group L2 magnitude or first-order Taylor (torch-pruning)."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import torch
import torch_pruning as tp
from torch import nn

from distilkit.errors import DistilkitError, NonFiniteLossError
from distilkit.width.graph import build_graphs, hidden_group
from distilkit.width.sites import MlpSite

LossFn = Callable[[nn.Module, Any], torch.Tensor]
ImportanceSpec = Union[str, tp.importance.Importance]
IMPORTANCES = ("l2", "l1", "taylor")


def make_importance(importance: ImportanceSpec) -> tp.importance.Importance:
    """A torch-pruning scorer for a name in IMPORTANCES, or a user-supplied `tp.importance.Importance`."""
    if isinstance(importance, tp.importance.Importance):
        return importance
    if importance == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer=None)
    if importance == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None)
    if importance == "taylor":
        return tp.importance.GroupTaylorImportance(group_reduction="mean", normalizer=None)
    raise DistilkitError(f"unknown importance {importance!r}; expected one of {list(IMPORTANCES)} or a tp.importance.Importance")


def needs_gradients(importance: ImportanceSpec) -> bool:
    return importance == "taylor" or isinstance(importance, tp.importance.GroupTaylorImportance)


def channel_importance(
    model: nn.Module,
    sites: Sequence[MlpSite],
    importance: ImportanceSpec = "l2",
    batches: Optional[Iterable[Any]] = None,
    loss_fn: Optional[LossFn] = None,
    example_inputs: Any = None,
) -> list[torch.Tensor]:
    """A score per hidden channel of each site (higher = keep). Gradient-based scorers run
    `loss_fn(model, batch).backward()` over `batches` first; the caller's `.grad`s are restored after."""
    scorer = make_importance(importance)
    graphs = build_graphs(model, sites, example_inputs)
    if needs_gradients(importance):
        with _fresh_gradients(model, sites):
            _accumulate(model, batches, loss_fn)
            _check_gradients(sites)
            return _score(scorer, graphs, sites)
    return _score(scorer, graphs, sites)


def _score(scorer: tp.importance.Importance, graphs: Sequence[tp.DependencyGraph],
           sites: Sequence[MlpSite]) -> list[torch.Tensor]:
    scores = []
    for graph, site in zip(graphs, sites):
        imp = scorer(hidden_group(graph, site, range(site.hidden)))
        if imp is None or imp.shape != (site.hidden,):
            raise DistilkitError(f"{type(scorer).__name__} gave no per-channel score for {site.name}")
        if not torch.isfinite(imp).all():
            raise DistilkitError(f"{type(scorer).__name__} gave non-finite scores for {site.name}")
        scores.append(imp.detach().float().cpu())
    return scores


def _accumulate(model: nn.Module, batches: Optional[Iterable[Any]], loss_fn: Optional[LossFn]) -> None:
    if batches is None or loss_fn is None:
        raise DistilkitError("taylor importance needs batches and loss_fn(model, batch) -> scalar loss")
    count = 0
    with torch.enable_grad():
        for step, batch in enumerate(batches):
            loss = loss_fn(model, batch)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise DistilkitError(f"loss_fn must return a scalar tensor, got {type(loss).__name__} at batch {step}")
            if not math.isfinite(loss.item()):
                raise NonFiniteLossError(f"taylor importance: loss is {loss.item()} at batch {step}")
            if not loss.requires_grad:
                raise DistilkitError(f"taylor importance: the loss at batch {step} does not depend on any pruned MLP")
            loss.backward()
            count += 1
    if count == 0:
        raise DistilkitError("taylor importance: batches is empty")


def _check_gradients(sites: Sequence[MlpSite]) -> None:
    for site in sites:
        for part, layer in (("fc1", site.fc1), ("fc2", site.fc2)):
            if layer.weight.grad is None:
                raise DistilkitError(f"taylor importance: the loss does not depend on {site.name}.{part}")


@contextmanager
def _fresh_gradients(model: nn.Module, sites: Sequence[MlpSite]) -> Iterator[None]:
    """Within the block only fc1/fc2 collect (fresh) gradients; afterwards every parameter gets back
    its previous `.grad` and `requires_grad`, so scoring never disturbs a training loop."""
    params = list(model.parameters())
    wanted = {id(p) for s in sites for p in (*s.fc1.parameters(), *s.fc2.parameters())}
    saved = [(p.grad, p.requires_grad) for p in params]
    try:
        for p in params:
            p.grad = None
            p.requires_grad_(id(p) in wanted)
        yield
    finally:
        for p, (grad, requires) in zip(params, saved):
            p.grad = grad
            p.requires_grad_(requires)
