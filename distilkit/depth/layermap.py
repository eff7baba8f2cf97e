"""Old → new block numbering after blocks are removed, and physical removal itself."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from distilkit.blocks import check_layers, depth_attributes, drop_entries, resolve_blocks, update_depth_records
from distilkit.errors import DistilkitError


@dataclass(frozen=True)
class LayerMap:
    """Which of `old_depth` blocks were removed; maps old (0-based) indices to new ones."""

    old_depth: int
    removed: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "removed", tuple(check_layers(self.old_depth, self.removed)))

    @property
    def kept(self) -> list[int]:
        """Old indices of the surviving blocks, in order."""
        gone = set(self.removed)
        return [i for i in range(self.old_depth) if i not in gone]

    @property
    def new_depth(self) -> int:
        return self.old_depth - len(self.removed)

    @property
    def mapping(self) -> dict[int, int]:
        """{old index: new index} for every surviving block."""
        return {old: new for new, old in enumerate(self.kept)}

    def __getitem__(self, old: int) -> int:
        """New index of old block `old`; DistilkitError if it was removed or is out of range."""
        check_layers(self.old_depth, [old], what="layer map")
        if old in self.removed:
            raise DistilkitError(f"layer {old} was removed (removed: {list(self.removed)})")
        return self.mapping[old]

    def remap(
        self, pairs: Iterable[tuple[int, int]], drop_removed: bool = False
    ) -> list[tuple[int, int]]:
        """Renumber (student_layer, teacher_layer) pairs given in the old student numbering.

        A pair on a removed student layer raises DistilkitError, or is dropped with `drop_removed`.
        """
        out: list[tuple[int, int]] = []
        for pair in pairs:
            student, teacher = pair
            if student in self.removed and drop_removed:
                continue
            out.append((self[student], teacher))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"old_depth": self.old_depth, "removed": list(self.removed)}

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "LayerMap":
        try:
            return cls(old_depth=int(spec["old_depth"]), removed=tuple(spec["removed"]))
        except DistilkitError:  # a ValueError, already saying which layer is wrong
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise DistilkitError(f"bad LayerMap spec {spec!r}: {err}") from None


def remove_layers(model: nn.Module, remove: Sequence[int], blocks: str = "blocks", *,
                  depth_attrs: str | Sequence[str] = ()) -> LayerMap:
    """Physically delete blocks `remove` (0-based) from the container at `blocks`, in place.

    The container keeps its type and identity; timm `feature_info` follows, and so do the int attributes
    named in `depth_attrs` (dotted paths from `model` holding the depth, e.g. "config.num_hidden_layers").
    Rebuild optimizers afterwards: the removed blocks' parameters are gone.
    """
    container = resolve_blocks(model, blocks)
    depth = len(container)
    removed = check_layers(depth, remove)
    if len(removed) == depth:
        raise DistilkitError(f"cannot remove all {depth} blocks of {blocks!r}")
    attributes = depth_attributes(model, depth_attrs, depth)
    layer_map = LayerMap(depth, tuple(removed))
    drop_entries(container, removed)
    update_depth_records(model, blocks, layer_map.kept, attributes)
    return layer_map
