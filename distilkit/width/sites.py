"""Locate the MLPs whose hidden width is pruned: `<blocks>[i].mlp.fc1` → activation → `.fc2`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from torch import nn

from distilkit.blocks import check_layers, resolve_blocks, unwrap
from distilkit.checks import as_int, as_number
from distilkit.errors import DistilkitError


@dataclass(frozen=True)
class MlpSite:
    """One block's MLP: `fc1` widens to the hidden size, `fc2` projects back."""

    index: int
    name: str  # dotted name of the MLP module, e.g. "blocks.3.mlp"
    mlp: nn.Module
    fc1: nn.Linear
    fc2: nn.Linear

    @property
    def hidden(self) -> int:
        return self.fc1.out_features

    @property
    def embed_dim(self) -> int:
        return self.fc1.in_features


def find_mlp_sites(model: nn.Module, blocks: str = "blocks", block_indices: Optional[Iterable[int]] = None) -> list[MlpSite]:
    """The MLP of every block at `blocks` (or of the chosen `block_indices`), checked to be a plain MLP."""
    block_list = resolve_blocks(unwrap(model), blocks)
    if block_indices is None:
        indices = list(range(len(block_list)))
    else:
        indices = check_layers(len(block_list), list(block_indices), what="block_indices")
        if not indices:
            raise DistilkitError("block_indices is empty: choose at least one block")
    keys = list(block_list._modules)
    sites: list[MlpSite] = []
    for i in indices:
        name = f"{blocks}.{keys[i]}.mlp"
        mlp = block_list[i]._modules.get("mlp")
        fc1 = getattr(mlp, "fc1", None)
        fc2 = getattr(mlp, "fc2", None)
        if not (isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)):
            raise DistilkitError(f"{blocks}.{keys[i]} has no timm-style MLP ({name}.fc1 / {name}.fc2 nn.Linear layers)")
        if fc1.out_features != fc2.in_features:
            raise DistilkitError(
                f"{name}: fc1 has {fc1.out_features} outputs but fc2 {fc2.in_features} inputs "
                "(gated/GLU MLPs are not supported)"
            )
        shared = next((s for s in sites if any(a is b for a in (s.mlp, s.fc1, s.fc2) for b in (mlp, fc1, fc2))), None)
        if shared is not None:  # slicing one would slice the other, and per-block widths could not differ
            raise DistilkitError(f"{shared.name} and {name} share modules; width pruning needs one MLP per block")
        sites.append(MlpSite(index=i, name=name, mlp=mlp, fc1=fc1, fc2=fc2))
    return sites


def target_hidden(sites: Sequence[MlpSite], ratio: Optional[float], hidden: Optional[int], round_to: int = 1) -> list[int]:
    """The new hidden width per site: round(ratio × embed_dim), or `hidden`, rounded up to a multiple of `round_to`."""
    if (ratio is None) == (hidden is None):
        raise DistilkitError("give exactly one of ratio (hidden = ratio × embed dim) or hidden (a channel count)")
    round_to = as_int(round_to, "round_to (channels)", minimum=1)
    if ratio is not None:
        ratio = as_number(ratio, "MLP ratio", above=0)
    if hidden is not None:
        hidden = as_int(hidden, "hidden size", minimum=1)
    targets = []
    for site in sites:
        size = round(ratio * site.embed_dim) if ratio is not None else hidden
        size = max(round_to, -(-size // round_to) * round_to)
        if size > site.hidden:
            raise DistilkitError(
                f"{site.name}: new hidden size {size} exceeds the current {site.hidden}; width pruning only shrinks"
            )
        targets.append(size)
    return targets
