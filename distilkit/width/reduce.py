"""One-shot MLP-ratio reduction: score hidden channels, keep the best round(ratio × dim) per block."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional, Sequence

import torch
from torch import nn

from distilkit.blocks import unwrap
from distilkit.errors import DistilkitError
from distilkit.inputs import call_model
from distilkit.width.graph import eval_mode, slice_hidden
from distilkit.width.importance import ImportanceSpec, LossFn, channel_importance, make_importance
from distilkit.width.sites import MlpSite, find_mlp_sites, target_hidden


@dataclass(frozen=True)
class BlockWidth:
    """One block's MLP before and after: `kept` lists the surviving hidden channels in original numbering."""

    index: int
    name: str
    hidden_before: int
    hidden_after: int
    kept: tuple[int, ...]


@dataclass(frozen=True)
class WidthReport:
    """What width pruning did, per block and in total parameters."""

    blocks: tuple[BlockWidth, ...]
    params_before: int
    params_after: int
    importance: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "blocks": [{**asdict(b), "kept": list(b.kept)} for b in self.blocks]}

    def table(self) -> "rich.table.Table":  # noqa: F821 - rich is imported lazily
        """A rich table: block, hidden before → after, plus the parameter totals in the caption."""
        from rich.table import Table

        table = Table(title=f"MLP width ({self.importance} importance)")
        for col in ("block", "module", "hidden before", "hidden after"):
            table.add_column(col, justify="right" if "hidden" in col else "left")
        for b in self.blocks:
            table.add_row(str(b.index), b.name, f"{b.hidden_before:,}", f"{b.hidden_after:,}")
        table.caption = f"params {self.params_before:,} → {self.params_after:,}"
        return table


@dataclass(frozen=True)
class WidthPlan:
    """Which hidden channels go in which MLP (decided once, applied by slicing or by gates)."""

    sites: tuple[MlpSite, ...]
    targets: tuple[int, ...]
    drops: tuple[tuple[int, ...], ...]


def importance_name(importance: ImportanceSpec) -> str:
    return importance if isinstance(importance, str) else type(importance).__name__


def choose_drops(scores: Sequence[torch.Tensor], targets: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """The lowest-scoring `len(score) - target` channels of each site (ties: the lower index stays)."""
    drops = []
    for score, target in zip(scores, targets):
        order = torch.argsort(score, descending=True, stable=True)
        drops.append(tuple(sorted(order[target:].tolist())))
    return tuple(drops)


def plan_width(
    model: nn.Module,
    ratio: Optional[float],
    *,
    hidden: Optional[int],
    blocks: str,
    block_indices: Optional[Iterable[int]],
    importance: ImportanceSpec,
    batches: Optional[Iterable[Any]],
    loss_fn: Optional[LossFn],
    example_inputs: Any,
    round_to: int,
) -> WidthPlan:
    """Validate everything, score the hidden channels, and choose the ones to remove."""
    make_importance(importance)  # an unknown name fails before any work
    inference = next((name for name, p in model.named_parameters() if p.is_inference()), None)
    if inference is not None:  # torch-pruning traces with autograd, which refuses inference tensors
        raise DistilkitError(f"width pruning needs ordinary tensors, but {inference} was made under "
                             "torch.inference_mode; build or load the model outside it")
    sites = find_mlp_sites(model, blocks, block_indices)
    targets = target_hidden(sites, ratio, hidden, round_to)
    scores = channel_importance(model, sites, importance, batches, loss_fn, example_inputs)
    return WidthPlan(tuple(sites), tuple(targets), choose_drops(scores, targets))


def apply_plan(model: nn.Module, plan: WidthPlan, importance: str, example_inputs: Any = None) -> WidthReport:
    """Slice the planned channels off (torch-pruning), verify shapes, and smoke-test the forward."""
    before = count_parameters(model)
    old = [s.hidden for s in plan.sites]
    slice_hidden(model, plan.sites, plan.drops, example_inputs)
    if example_inputs is not None:
        try:
            with torch.no_grad(), eval_mode(model):
                call_model(model, example_inputs)
        except Exception as err:
            raise DistilkitError(f"forward of the width-pruned {type(model).__name__} failed: {err}") from err
    rows = tuple(
        BlockWidth(s.index, s.name, h, s.hidden, _kept(h, d)) for s, h, d in zip(plan.sites, old, plan.drops)
    )
    return WidthReport(rows, before, count_parameters(model), importance)


def _kept(hidden: int, drop: Sequence[int]) -> tuple[int, ...]:
    gone = set(drop)
    return tuple(c for c in range(hidden) if c not in gone)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def reduce_mlp_ratio(
    model: nn.Module,
    ratio: Optional[float] = None,
    blocks: str = "blocks",
    importance: ImportanceSpec = "l2",
    batches: Optional[Iterable[Any]] = None,
    *,
    loss_fn: Optional[LossFn] = None,
    hidden: Optional[int] = None,
    block_indices: Optional[Iterable[int]] = None,
    example_inputs: Any = None,
    round_to: int = 1,
) -> WidthReport:
    """Shrink each block's MLP hidden width to round(ratio × embed_dim) (or `hidden`), in place.

    Keeps the most important channels ("l2" group magnitude, "l1", "taylor" = |w·∂L/∂w| from
    `loss_fn(model, batch)` over `batches`, or any `tp.importance.Importance`); attention is never
    touched. `example_inputs` (tensor, tuple or dict of kwargs) makes torch-pruning trace the whole
    model and checks the pruned forward; `round_to` rounds the new width up to a multiple of it (e.g. 8 for fast GEMMs).
    Sliced layers get new Parameter objects: create the optimiser afterwards.
    """
    model = unwrap(model)
    plan = plan_width(
        model, ratio, hidden=hidden, blocks=blocks, block_indices=block_indices, importance=importance,
        batches=batches, loss_fn=loss_fn, example_inputs=example_inputs, round_to=round_to,
    )
    return apply_plan(model, plan, importance_name(importance), example_inputs)
