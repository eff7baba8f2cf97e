"""Progressive MLP width pruning: gate the channels to go by γ(t) on a PMDP-style schedule, then slice.

The gate multiplies fc2's input (after fc1, activation, dropout), so a gate of 0 on channel c is
exactly the model with c removed and a gate of 1 is the untouched model. Gates are plain tensors
applied by forward pre-hooks, never parameters or buffers: the model's state_dict, optimiser and
DDP parameter set stay as they are, and every rank computes the same γ from the same progress.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import nn

from distilkit.blocks import unwrap
from distilkit.errors import DistilkitError
from distilkit.schedule import CosineSchedule, ScheduledGamma
from distilkit.width.graph import eval_mode
from distilkit.width.importance import ImportanceSpec, LossFn
from distilkit.width.reduce import WidthPlan, WidthReport, apply_plan, importance_name, plan_width
from distilkit.width.sites import MlpSite


class _Gate:
    """fc2 forward pre-hook: input × (1 on kept channels, γ on the channels to go)."""

    def __init__(self, pruner: "ProgressiveWidthPruner", hidden: int, drop: Iterable[int]) -> None:
        self.pruner = pruner
        self.choose(hidden, drop)

    def choose(self, hidden: int, drop: Iterable[int]) -> None:
        self.drop = torch.zeros(hidden, dtype=torch.bool)
        self.drop[list(drop)] = True
        self.active = bool(self.drop.any())
        self._cache: dict[tuple[torch.device, torch.dtype, float], torch.Tensor] = {}

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> Optional[tuple[Any, ...]]:
        gamma = self.pruner._gamma
        if gamma == 1.0 or not self.active:
            return None
        x = args[0]
        key = (x.device, x.dtype, gamma)
        gate = self._cache.get(key)
        if gate is None:
            gate = torch.where(self.drop, gamma, 1.0).to(device=x.device, dtype=x.dtype)
            self._cache = {key: gate}
        return (x * gate,) + tuple(args[1:])


class ProgressiveWidthPruner(ScheduledGamma):
    """Shrink MLP hidden widths gradually: the least important channels fade out as γ = schedule(t).

    Channels are chosen once, at construction, exactly as `reduce_mlp_ratio` would (same arguments);
    γ = 1 is exactly the unpruned model and γ = 0 exactly the model after `finalize()`, which has the
    shapes `reduce_mlp_ratio` gives (MLPs that mix hidden channels before fc2, e.g. with a LayerNorm
    over them, cannot keep that promise and are refused). Progress (`set_epoch`, `set_progress`, `step`)
    is that of `distilkit.schedule.ScheduledGamma`, as for `ProgressiveDepthPruner`.
    """

    _what = "width-pruning"

    def __init__(
        self,
        model: nn.Module,
        ratio: Optional[float] = None,
        blocks: str = "blocks",
        importance: ImportanceSpec = "l2",
        schedule: Callable[[float], float] = CosineSchedule(m=40),
        unit: str = "epoch",
        iters_per_epoch: Optional[int] = None,
        *,
        batches: Optional[Iterable[Any]] = None,
        loss_fn: Optional[LossFn] = None,
        hidden: Optional[int] = None,
        block_indices: Optional[Iterable[int]] = None,
        example_inputs: Any = None,
        round_to: int = 1,
    ) -> None:
        self._init_schedule(schedule, unit, iters_per_epoch)  # validates before the costly planning
        self.model = unwrap(model)
        self.importance = importance_name(importance)
        self._example_inputs = example_inputs
        plan = plan_width(
            self.model, ratio, hidden=hidden, blocks=blocks, block_indices=block_indices, importance=importance,
            batches=batches, loss_fn=loss_fn, example_inputs=example_inputs, round_to=round_to,
        )
        self._plan = _agree_across_ranks(plan)
        for site, drop in zip(self._plan.sites, self._plan.drops):
            _check_channels_independent(site, drop)
        self._gates = [_Gate(self, s.hidden, d) for s, d in zip(self._plan.sites, self._plan.drops)]
        self._handles = [s.fc2.register_forward_pre_hook(g) for s, g in zip(self._plan.sites, self._gates)]

    # -- channel choice and checkpointing ----------------------------------------------------
    @property
    def drops(self) -> dict[str, tuple[int, ...]]:
        """Hidden channels that will be removed, per MLP module name (original numbering)."""
        return {s.name: d for s, d in zip(self._plan.sites, self._plan.drops)}

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: progress, schedule and the channel choice (so a resume keeps both)."""
        return {
            **self._schedule_state(),
            "mlps": [s.name for s in self._plan.sites],
            "hidden_before": [s.hidden for s in self._plan.sites],
            "hidden_after": list(self._plan.targets),
            "drop": [list(d) for d in self._plan.drops],
            "importance": self.importance,
            "finalized": self._finalized,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: same progress and the same channels as the saved run. The saved channel choice
        replaces the one computed at construction (the weights have moved since it was made)."""
        if "drop" not in state:
            raise DistilkitError("width-pruning state lacks 'drop'")
        self._check_resumable(state, ("mlps", "hidden_before", "hidden_after"))
        drops = _checked_drops(self._plan, state["drop"])
        self._plan = WidthPlan(self._plan.sites, self._plan.targets, drops)
        for gate, site, drop in zip(self._gates, self._plan.sites, drops):
            gate.choose(site.hidden, drop)
        self.set_progress(state["progress"])

    # -- end ---------------------------------------------------------------------------------
    def finalize(self) -> WidthReport:
        """Detach the gates and slice the chosen channels off (torch-pruning); returns the report.
        fc1/fc2 get new Parameter objects, so build the next stage's optimiser afterwards."""
        if self._finalized:
            raise DistilkitError("ProgressiveWidthPruner.finalize() was already called")
        if self._gamma > 0:
            warnings.warn(f"finalizing width pruning at gamma={self._gamma:.3g}: the sliced model differs from the gated one")
        self.remove()
        report = apply_plan(self.model, self._plan, self.importance, self._example_inputs)
        self._finalized = True
        self._gamma = 0.0
        return report

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s.hidden}->{t}" for s, t in zip(self._plan.sites, self._plan.targets))
        return f"ProgressiveWidthPruner(hidden=[{sizes}], progress={self.progress:g}, gamma={self._gamma:.4f})"


def _check_channels_independent(site: MlpSite, drop: Sequence[int]) -> None:
    """Fading channels out at fc2's input equals removing them only if nothing between fc1 and fc2 mixes
    hidden channels (a LayerNorm over them does): perturb the channels to go and watch the others."""
    if not drop:
        return
    seen: list[torch.Tensor] = []
    hook = site.fc2.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    weight = site.fc1.weight
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, site.embed_dim, generator=gen).to(device=weight.device, dtype=weight.dtype)
    rows = torch.tensor(list(drop), device=weight.device)
    saved = weight[rows].clone()
    try:
        with torch.no_grad(), eval_mode(site.mlp):
            site.mlp(x)
            weight[rows] = torch.randn(saved.shape, generator=gen).to(saved) * (saved.abs().max() + 1)
            site.mlp(x)
    except Exception:  # an MLP that cannot run alone on tokens (e.g. needs a spatial shape): not checked
        return
    finally:
        with torch.no_grad():
            weight[rows] = saved
        hook.remove()
    keep = torch.ones(site.hidden, dtype=torch.bool, device=weight.device)
    keep[rows] = False
    if len(seen) == 2 and not torch.allclose(seen[0][..., keep], seen[1][..., keep], rtol=1e-4, atol=1e-6):
        raise DistilkitError(
            f"{site.name}: a layer between fc1 and fc2 mixes hidden channels (e.g. a LayerNorm over them), so fading "
            "channels out cannot equal removing them; use reduce_mlp_ratio (one-shot) for this model"
        )


def _checked_drops(plan: WidthPlan, saved: Any) -> tuple[tuple[int, ...], ...]:
    """The saved channel lists, validated against this model's MLPs and targets."""
    if not isinstance(saved, (list, tuple)) or len(saved) != len(plan.sites):
        raise DistilkitError(f"width-pruning state: 'drop' must list channels for {len(plan.sites)} MLPs")
    drops = []
    for site, target, drop in zip(plan.sites, plan.targets, saved):
        chans = sorted({int(c) for c in drop})
        if len(chans) != len(drop) or len(chans) != site.hidden - target or any(not 0 <= c < site.hidden for c in chans):
            raise DistilkitError(f"width-pruning state: bad channel list for {site.name} (need {site.hidden - target} distinct "
                                 f"channels < {site.hidden})")
        drops.append(tuple(chans))
    return tuple(drops)


def _agree_across_ranks(plan: WidthPlan) -> WidthPlan:
    """Under torch.distributed every rank adopts rank 0's channel choice (data-driven scores differ per rank)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return plan
    device = plan.sites[0].fc1.weight.device
    masks = torch.cat([torch.zeros(s.hidden, dtype=torch.uint8) for s in plan.sites])
    offset = 0
    for site, drop in zip(plan.sites, plan.drops):
        masks[offset + torch.tensor(drop, dtype=torch.long)] = 1
        offset += site.hidden
    masks = masks.to(device)
    dist.broadcast(masks, src=0)
    drops, offset = [], 0
    for site in plan.sites:
        drops.append(tuple(torch.nonzero(masks[offset : offset + site.hidden]).flatten().tolist()))
        offset += site.hidden
    return WidthPlan(plan.sites, plan.targets, tuple(drops))
