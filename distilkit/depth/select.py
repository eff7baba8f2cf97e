"""Which blocks to remove: the paper's evenly skipped layers, first/last k, scores, or a list."""

from __future__ import annotations

from collections.abc import Sequence

from distilkit.blocks import check_layers
from distilkit.checks import as_int, as_number
from distilkit.errors import DistilkitError

METHODS = ("skip", "first", "last", "influence")


def _check_keep(depth: int, keep: int | None) -> tuple[int, int]:
    """(depth, keep) as Python ints (numpy integers are legal), with 1 <= keep <= depth."""
    depth = as_int(depth, "depth", minimum=1)
    if keep is None:
        raise DistilkitError("select_layers: `keep` (number of layers to keep) is required")
    keep = as_int(keep, "keep")
    if keep <= 0:
        raise DistilkitError(f"keep must be >= 1 (cannot remove every layer), got {keep}")
    if keep > depth:
        raise DistilkitError(f"keep={keep} exceeds depth {depth}")
    return depth, keep


def skip_kept(depth: int, keep: int) -> list[int]:
    """0-based layers kept by evenly skipping: 1-based ceil(i·depth/keep), i = 1..keep
    (12→8 keeps all but 0,3,6,9; 12→4 keeps 1-based 3,6,9,12; 8→4 keeps 2,4,6,8)."""
    return [(i * depth + keep - 1) // keep - 1 for i in range(1, keep + 1)]


def select_layers_by_influence(scores: Sequence[float], keep: int) -> list[int]:
    """Remove the len(scores) − keep blocks with the lowest influence (ties: earlier first)."""
    if len(scores) == 0:
        raise DistilkitError("no influence scores given (one per block expected)")
    values = [as_number(v, f"influence score of block {i}") for i, v in enumerate(scores)]
    _, keep = _check_keep(len(values), keep)
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    return sorted(order[: len(scores) - keep])


def select_layers(
    depth: int,
    keep: int | None = None,
    method: str | Sequence[int] = "skip",
    *,
    scores: Sequence[float] | None = None,
) -> list[int]:
    """Sorted 0-based indices of the blocks TO REMOVE so that `keep` of `depth` remain.

    method: "skip" (paper), "first" (keep the first k), "last" (keep the last k),
    "influence" (drop the lowest `scores`, e.g. from `block_influence`), or an explicit
    sequence of layers to remove (then `keep` is optional and must agree when given).
    """
    if not isinstance(method, str):
        depth = as_int(depth, "depth", minimum=1)
        removed = check_layers(depth, list(method))
        if len(removed) == depth:
            raise DistilkitError(f"cannot remove every layer (all {depth} listed)")
        if keep is not None and _check_keep(depth, keep)[1] != depth - len(removed):
            raise DistilkitError(
                f"keep={keep} disagrees with the {len(removed)} listed layers of depth {depth}"
            )
        return removed
    depth, keep = _check_keep(depth, keep)
    if method == "skip":
        kept = set(skip_kept(depth, keep))
        return [i for i in range(depth) if i not in kept]
    if method == "first":
        return list(range(keep, depth))
    if method == "last":
        return list(range(depth - keep))
    if method == "influence":
        if scores is None:
            raise DistilkitError('method="influence" needs scores=block_influence(...)')
        if len(scores) != depth:
            raise DistilkitError(f"got {len(scores)} influence scores for depth {depth}")
        return select_layers_by_influence(scores, keep)
    raise DistilkitError(f"unknown layer selection method {method!r}; expected one of {list(METHODS)} or a list")
