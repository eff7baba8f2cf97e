"""Progressive model depth pruning (PMDP): fade blocks out with γ(t) while training, then drop them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from distilkit.depth._blocks import check_layers, resolve_blocks, unwrap
from distilkit.depth.influence import block_input, first_tensor
from distilkit.depth.layermap import LayerMap, remove_layers
from distilkit.errors import DistilkitError
from distilkit.schedule import CosineSchedule, schedule_to_dict

MODES = ("branch", "block")
UNITS = ("epoch", "iteration")
# Residual branch i of a block ends at the first of these that exists and is not shared:
# timm Block: x + drop_path1(ls1(attn(norm1(x)))), and drop_path/ls are linear, so scaling
# their output is scaling the branch (also right for post-norm blocks like timm ResPostBlock).
_BRANCH_ENDS = (("drop_path1", "ls1", "attn"), ("drop_path2", "ls2", "mlp"))


def _scale(output: Any, gamma: float) -> Any:
    if isinstance(output, torch.Tensor):
        return output * gamma
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (output[0] * gamma, *output[1:])
    raise DistilkitError(f"PMDP branch output must be a tensor, got {type(output).__name__}")


class ProgressiveDepthPruner:
    """Fade blocks `remove` (0-based; kept as `.removed`) of `model.<blocks>` by γ = schedule(t).

    mode="branch": x + γ·attn(norm1(x)), x + γ·mlp(norm2(x)) (the paper; blocks need `attn`
    and `mlp`). mode="block": x + γ·(block(x) − x) for any block. γ = 1 is exactly the
    unpruned model and γ = 0 exactly the model after `finalize()`. `remove()` detaches the hooks.
    Progress t is in epochs: call `set_epoch(e)` (0-based) once per epoch, or `step()`;
    with unit="iteration", `step()` advances 1/iters_per_epoch (or one schedule unit if
    `iters_per_epoch` is None, i.e. the schedule's m counts iterations).
    """

    def __init__(
        self,
        model: nn.Module,
        remove: Sequence[int],
        blocks: str = "blocks",
        schedule: Callable[[float], float] = CosineSchedule(m=40),
        mode: str = "branch",
        unit: str = "epoch",
        iters_per_epoch: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise DistilkitError(f"unknown PMDP mode {mode!r}; expected one of {list(MODES)}")
        if unit not in UNITS:
            raise DistilkitError(f"unknown PMDP unit {unit!r}; expected one of {list(UNITS)}")
        if iters_per_epoch is not None and (unit != "iteration" or iters_per_epoch <= 0):
            raise DistilkitError("iters_per_epoch must be a positive int and needs unit='iteration'")
        if not callable(schedule):
            raise DistilkitError(f"schedule must be a callable t -> gamma, got {type(schedule).__name__}")
        self.model = unwrap(model)
        self.blocks = blocks
        container = resolve_blocks(self.model, blocks)
        self.depth = len(container)
        self.removed = check_layers(self.depth, remove)
        if len(self.removed) == self.depth:
            raise DistilkitError(f"cannot remove all {self.depth} blocks of {blocks!r}")
        self.schedule = schedule
        self.mode = mode
        self.unit = unit
        self.iters_per_epoch = iters_per_epoch
        self._finalized = False
        self.set_progress(0.0)
        self._handles = self._attach(container)

    # -- hooks -------------------------------------------------------------------------------
    def _attach(self, container: nn.Sequential | nn.ModuleList) -> list[torch.utils.hooks.RemovableHandle]:
        if self.mode == "block":
            return [container[i].register_forward_hook(self._block_hook, with_kwargs=True) for i in self.removed]
        uses: dict[int, int] = {}
        for _, mod in self.model.named_modules(remove_duplicate=False):
            uses[id(mod)] = uses.get(id(mod), 0) + 1
        handles = []
        for i in self.removed:
            block = container[i]
            missing = [name for name in ("attn", "mlp") if not isinstance(getattr(block, name, None), nn.Module)]
            if missing:
                raise DistilkitError(
                    f"block {i} of {self.blocks!r} ({type(block).__name__}) has no {'/'.join(missing)} "
                    f"submodule; mode='branch' needs timm-style blocks, use mode='block'"
                )
            for *outer, core in _BRANCH_ENDS:
                present = [getattr(block, name, None) for name in outer]
                unshared = [m for m in present if isinstance(m, nn.Module) and uses[id(m)] == 1]
                end = unshared[0] if unshared else getattr(block, core)
                handles.append(end.register_forward_hook(self._branch_hook))
        return handles

    def _branch_hook(self, module: nn.Module, args: tuple, output: Any) -> Any:
        return None if self._gamma == 1.0 else _scale(output, self._gamma)

    def _block_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        gamma = self._gamma
        if gamma == 1.0:
            return None
        x, out = block_input(args, kwargs), first_tensor(output)
        if x is None or out is None or x.shape != out.shape:
            raise DistilkitError(
                f"PMDP mode='block': {type(module).__name__} must map a tensor x to a tensor of x's shape"
            )
        mixed = torch.lerp(x, out, gamma)  # exactly x at γ = 0, still in the graph (DDP sees the grads)
        return mixed if isinstance(output, torch.Tensor) else (mixed, *output[1:])

    # -- progress ----------------------------------------------------------------------------
    @property
    def gamma(self) -> float:
        """Current scale of the removed blocks' residual contribution."""
        return self._gamma

    def set_progress(self, t: float) -> float:
        """Set progress in schedule units (fractional epochs for per-iteration updates); returns γ."""
        if self._finalized:
            raise DistilkitError("ProgressiveDepthPruner was finalized; its schedule cannot move")
        t = float(t)
        if not math.isfinite(t) or t < 0:
            raise DistilkitError(f"PMDP progress must be a finite number >= 0, got {t}")
        self.progress = t
        self._gamma = min(max(float(self.schedule(t)), 0.0), 1.0)
        return self._gamma

    def set_epoch(self, epoch: int) -> float:
        """Set progress to 0-based epoch `epoch` (call at the start of each epoch); returns γ."""
        if self.unit == "iteration" and self.iters_per_epoch is None:
            raise DistilkitError("set_epoch needs unit='epoch' or iters_per_epoch; use set_progress")
        return self.set_progress(epoch)

    def step(self, n: int = 1) -> float:
        """Advance by `n` units (epochs, or iterations with unit='iteration'); returns γ."""
        per = 1.0 / self.iters_per_epoch if self.iters_per_epoch else 1.0
        return self.set_progress(self.progress + n * per)

    # -- checkpointing -----------------------------------------------------------------------
    def _schedule_spec(self) -> dict[str, Any] | None:
        try:
            return schedule_to_dict(self.schedule)  # type: ignore[arg-type]
        except DistilkitError:
            return None  # a custom callable: cannot be checked on resume

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: resuming with `load_state_dict` continues the same γ sequence."""
        return {
            "progress": self.progress,
            "remove": list(self.removed),
            "depth": self.depth,
            "mode": self.mode,
            "unit": self.unit,
            "iters_per_epoch": self.iters_per_epoch,
            "schedule": self._schedule_spec(),
            "finalized": self._finalized,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore progress; the pruner must be built with the same layers, mode and schedule."""
        expected = self.state_dict()
        for key in ("remove", "depth", "mode", "unit", "iters_per_epoch", "schedule"):
            saved = state.get(key, expected[key])
            if key == "schedule" and (saved is None or expected[key] is None):
                continue
            if saved != expected[key]:
                raise DistilkitError(f"PMDP state has {key}={saved!r} but this pruner has {expected[key]!r}")
        if state.get("finalized"):
            raise DistilkitError("PMDP state comes from a finalized pruner; load the pruned model instead")
        self.set_progress(state["progress"])

    # -- end ---------------------------------------------------------------------------------
    def remove(self) -> None:
        """Detach all hooks: the model behaves as unpruned again (γ = 1)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def finalize(self) -> LayerMap:
        """Detach hooks and physically delete the removed blocks; returns the old→new LayerMap.

        An existing optimizer keeps working (the deleted parameters just get no more gradients);
        re-wrap DDP models, whose reducer still expects gradients for them.
        """
        if self._finalized:
            raise DistilkitError("ProgressiveDepthPruner.finalize() was already called")
        self.remove()
        layer_map = remove_layers(self.model, self.removed, self.blocks)
        self._finalized = True
        self._gamma = 0.0
        return layer_map

    def __repr__(self) -> str:
        return (
            f"ProgressiveDepthPruner(removed={self.removed}, depth={self.depth}, mode={self.mode!r}, "
            f"progress={self.progress:g}, gamma={self._gamma:.4f})"
        )
