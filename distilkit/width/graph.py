"""torch-pruning dependency groups for MLP hidden channels, and the slicing that removes them.

Only `fc1` output channels are pruned; torch-pruning's dependency graph carries the cut through the
activation to `fc2`'s inputs. A group that would reach any other layer (attention, embeddings, a side
branch inside the MLP, ...) is refused before anything is sliced, and the result is re-checked from
parameter shapes alone.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import torch
import torch_pruning as tp
from torch import nn

from distilkit.errors import DistilkitError
from distilkit.inputs import call_model
from distilkit.width.sites import MlpSite


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode (no dropout, no running-stat updates), then restore every module's own mode."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        yield
    finally:
        for m, training in modes.items():
            m.training = training


@contextmanager
def _tracing_mode(model: nn.Module) -> Iterator[None]:
    """torch-pruning traces through autograd in eval mode: unfreeze frozen weights meanwhile."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(True)
        with eval_mode(model), torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "unwrapped parameters" notes about pos_embed etc.
            yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def build_graphs(model: nn.Module, sites: Sequence[MlpSite], example_inputs: Any = None) -> list[tp.DependencyGraph]:
    """One dependency graph per site: the whole model traced on `example_inputs` when given (catches any
    use of the hidden activations outside the MLP), else each MLP traced alone on a dummy token."""
    with _tracing_mode(model):
        if example_inputs is not None:
            try:
                graph = tp.DependencyGraph().build_dependency(
                    model, example_inputs=example_inputs, forward_fn=call_model, verbose=False
                )
            except DistilkitError:
                raise
            except Exception as err:  # the user's inputs do not fit the model
                raise DistilkitError(f"tracing {type(model).__name__} on example_inputs failed: {err}") from err
            missing = [s.name for s in sites if s.fc1 not in graph.module2node]
            if missing:
                raise DistilkitError(f"example_inputs do not reach {missing[0]}.fc1: the forward never used it")
            return [graph] * len(sites)
        graphs = []
        for site in sites:
            token = torch.zeros(1, 1, site.embed_dim, device=site.fc1.weight.device, dtype=site.fc1.weight.dtype)
            graphs.append(tp.DependencyGraph().build_dependency(site.mlp, example_inputs=token, verbose=False))
        return graphs


def hidden_group(graph: tp.DependencyGraph, site: MlpSite, idxs: Sequence[int]) -> Any:
    """The dependency group removing hidden channels `idxs` of `site`, refused if it changes any layer
    but fc1's outputs, fc2's inputs and per-channel (1-D, hidden-sized) parameters such as a hidden norm."""
    group = graph.get_pruning_group(site.fc1, tp.prune_linear_out_channels, list(idxs))
    for dep, _ in group:
        target = dep.target.module
        if not _may_change(site, target):
            name = graph._module2name.get(target, type(target).__name__)
            raise DistilkitError(
                f"pruning {site.name}.fc1 outputs would also change {name}; only MLP hidden channels may be pruned"
            )
    return group


def _may_change(site: MlpSite, target: Any) -> bool:
    if target is site.fc1 or target is site.fc2:
        return True
    if isinstance(target, nn.Parameter) or not isinstance(target, nn.Module):
        return False
    own = list(target.parameters(recurse=False))
    inside = any(target is m for m in site.mlp.modules())
    return not own or (inside and all(p.dim() == 1 and p.shape[0] == site.hidden for p in own))


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return {name: tuple(t.shape) for name, t in tensors}


def _expected_shapes(
    before: dict[str, tuple[int, ...]], sites: Sequence[MlpSite], old: Sequence[int], new: Sequence[int]
) -> dict[str, tuple[int, ...]]:
    expected = dict(before)
    for site, h_old, h_new in zip(sites, old, new):
        for name, shape in before.items():
            if not name.startswith(site.name + "."):
                continue
            local = name[len(site.name) + 1 :]
            if local in ("fc1.weight", "fc1.bias") or (local.split(".")[0] not in ("fc1", "fc2") and shape == (h_old,)):
                expected[name] = (h_new,) + shape[1:]
            elif local == "fc2.weight":
                expected[name] = (shape[0], h_new)
    return expected


def slice_hidden(
    model: nn.Module, sites: Sequence[MlpSite], drops: Sequence[Sequence[int]], example_inputs: Any = None
) -> None:
    """Remove hidden channels `drops[i]` from `sites[i]` in place, then verify every shape independently.
    The sliced fc1/fc2 get new Parameter objects: build optimisers after this."""
    old = [s.hidden for s in sites]
    new = [h - len(set(d)) for h, d in zip(old, drops)]
    before = _shapes(model)
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    todo = [(site, sorted(set(int(c) for c in drop))) for site, drop in zip(sites, drops) if len(drop)]
    if todo:
        graphs = build_graphs(model, [s for s, _ in todo], example_inputs)
        groups = [hidden_group(graph, site, drop) for graph, (site, drop) in zip(graphs, todo)]  # all checked first
        for group in groups:
            group.prune()
    for name, p in model.named_parameters():  # pruning makes new Parameters: keep frozen ones frozen
        p.requires_grad_(trainable.get(name, True))
    verify_widths(model, sites, new, expected=_expected_shapes(before, sites, old, new))


def verify_widths(
    model: nn.Module, sites: Sequence[MlpSite], hidden: Sequence[int], expected: Optional[dict[str, tuple[int, ...]]] = None
) -> None:
    """fc1.out == fc2.in == hidden for each site and (when given) every other tensor shape as expected."""
    for site, h in zip(sites, hidden):
        fc1, fc2 = site.fc1, site.fc2
        got = (fc1.out_features, fc1.weight.shape[0], fc2.in_features, fc2.weight.shape[1])
        if any(g != h for g in got) or (fc1.bias is not None and fc1.bias.shape[0] != h):
            raise DistilkitError(f"{site.name}: expected hidden width {h}, got fc1/fc2 widths {got}")
    if expected is not None:
        actual = _shapes(model)
        changed = [n for n in expected if actual.get(n) != expected[n]]
        if changed or set(actual) != set(expected):
            name = (changed or sorted(set(actual) ^ set(expected)))[0]
            raise DistilkitError(f"width pruning changed {name}: {expected.get(name)} -> {actual.get(name)}")
