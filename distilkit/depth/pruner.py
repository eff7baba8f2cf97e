"""Progressive model depth pruning (PMDP): fade blocks out with γ(t) while training, then drop them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from distilkit.blocks import check_layers, depth_attributes, resolve_blocks, unwrap
from distilkit.depth.influence import block_input, first_tensor
from distilkit.depth.layermap import LayerMap, remove_layers
from distilkit.errors import DistilkitError
from distilkit.schedule import CosineSchedule, ScheduledGamma

MODES = ("branch", "block")
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


class ProgressiveDepthPruner(ScheduledGamma):
    """Fade blocks `remove` (0-based; kept as `.removed`) of `model.<blocks>` by γ = schedule(t).

    mode="branch": x + γ·attn(norm1(x)), x + γ·mlp(norm2(x)) (the paper; blocks need `attn`
    and `mlp`). mode="block": x + γ·(block(x) − x) for any block. γ = 1 is exactly the
    unpruned model and γ = 0 exactly the model after `finalize()`. `remove()` detaches the hooks.
    Progress (`set_epoch`, `set_progress`, `step`) is that of `distilkit.schedule.ScheduledGamma`.

    freeze_removed=True sets `requires_grad=False` on the fading blocks' parameters for the whole fade, as
    the official MixFormerV2 code does (otherwise they keep training and can learn to offset γ); `remove()`
    (and `finalize()`) gives back the flags they had. Build the optimizer and any DDP wrapper after the pruner.
    """

    _what = "PMDP"

    def __init__(
        self,
        model: nn.Module,
        remove: Sequence[int],
        blocks: str = "blocks",
        schedule: Callable[[float], float] = CosineSchedule(m=40),
        mode: str = "branch",
        unit: str = "epoch",
        iters_per_epoch: int | None = None,
        freeze_removed: bool = False,
    ) -> None:
        if mode not in MODES:
            raise DistilkitError(f"unknown PMDP mode {mode!r}; expected one of {list(MODES)}")
        self.model = unwrap(model)
        self.blocks = blocks
        container = resolve_blocks(self.model, blocks)
        self.depth = len(container)
        self.removed = check_layers(self.depth, remove)
        if len(self.removed) == self.depth:
            raise DistilkitError(f"cannot remove all {self.depth} blocks of {blocks!r}")
        if not isinstance(freeze_removed, bool):
            raise DistilkitError(f"freeze_removed must be True or False, got {freeze_removed!r}")
        self.mode = mode
        self.freeze_removed = freeze_removed
        self._init_schedule(schedule, unit, iters_per_epoch)
        self._handles = self._attach(container)
        self._frozen = self._freeze(container) if freeze_removed else []

    def _freeze(self, container: nn.Sequential | nn.ModuleList) -> list[nn.Parameter]:
        """Stop the removed blocks' trainable parameters from training; returns them (to thaw in `remove`).
        A parameter a kept block shares (tied weights) keeps training."""
        kept = {id(p) for i in range(self.depth) if i not in self.removed for p in container[i].parameters()}
        frozen = list({id(p): p for i in self.removed for p in container[i].parameters()
                       if p.requires_grad and id(p) not in kept}.values())
        for param in frozen:
            param.requires_grad_(False)
        return frozen

    def remove(self) -> None:
        """Detach the hooks and unfreeze what `freeze_removed` froze: the model is unpruned again (γ = 1)."""
        super().remove()
        for param in self._frozen:
            param.requires_grad_(True)
        self._frozen = []

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
        x, out = block_input(module, args, kwargs), first_tensor(output)
        if x is None or out is None or x.shape != out.shape:
            raise DistilkitError(
                f"PMDP mode='block': {type(module).__name__} must map a tensor x to a tensor of x's shape"
            )
        mixed = torch.lerp(x, out, gamma)  # exactly x at γ = 0, still in the graph (DDP sees the grads)
        return mixed if isinstance(output, torch.Tensor) else (mixed, *output[1:])

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: resuming with `load_state_dict` continues the same γ sequence."""
        return {
            **self._schedule_state(),
            "remove": list(self.removed),
            "depth": self.depth,
            "mode": self.mode,
            "freeze_removed": self.freeze_removed,
            "finalized": self._finalized,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore progress; the pruner must be built with the same layers, mode, freezing and schedule."""
        self._check_resumable(state, ("remove", "depth", "mode", "freeze_removed"))
        self.set_progress(state["progress"])

    # -- end ---------------------------------------------------------------------------------
    def finalize(self, *, depth_attrs: str | Sequence[str] = ()) -> LayerMap:
        """Detach hooks and physically delete the removed blocks; returns the old→new LayerMap.
        `depth_attrs`: the model's int attributes that hold the depth, set to the new one (see `remove_layers`).

        An existing optimizer keeps working (the deleted parameters just get no more gradients);
        re-wrap DDP models, whose reducer still expects gradients for them.
        """
        if self._finalized:
            raise DistilkitError("ProgressiveDepthPruner.finalize() was already called")
        depth_attributes(self.model, depth_attrs, self.depth)  # before anything changes
        self.remove()
        layer_map = remove_layers(self.model, self.removed, self.blocks, depth_attrs=depth_attrs)
        self._finalized = True
        self._gamma = 0.0
        return layer_map

    def __repr__(self) -> str:
        return (
            f"ProgressiveDepthPruner(removed={self.removed}, depth={self.depth}, mode={self.mode!r}, "
            f"freeze_removed={self.freeze_removed}, "
            f"progress={self.progress:g}, gamma={self._gamma:.4f})"
        )
