"""A cheap identity of a module's weights and structure, to notice when cached results go stale.

`ModuleFingerprint(module).changed()` is True once after any in-place weight edit (optimizer step,
`load_state_dict`), replaced parameter, buffer or submodule, or train/eval switch; about 30 µs for
MixFormerV2-S (60 modules), so it can run on every call of a per-frame path. Edits through
`tensor.data` bypass autograd's version counter and are not seen (nor by anything else that relies on
it); neither are in-place edits of inference tensors (made under `torch.inference_mode`), which have
no counter.
"""

from __future__ import annotations

import itertools
import operator

import torch
from torch import nn

__all__ = ["ModuleFingerprint", "tensor_version"]


def tensor_version(t: torch.Tensor) -> int:
    """Autograd's in-place edit counter of `t`; -1 for inference tensors, which keep none."""
    return -1 if t.is_inference() else t._version


class ModuleFingerprint:
    """Remembers `module`'s state now; `changed()` compares with it (and remembers the new state).

    structure_only: watch only which tensors and submodules the module holds (replaced parameters,
    `load_state_dict(assign=True)`, pruning), not in-place edits or train/eval switches: what a copy
    sharing the module's tensors (`distilkit.prepack.shared_view`) cannot follow by itself."""

    def __init__(self, module: nn.Module, structure_only: bool = False) -> None:
        self.module = module
        self.structure_only = structure_only
        self._submodules = list(module.modules())
        self._value = self._compute()

    def _compute(self) -> tuple:
        # map() over C-level getters: 2x faster than a per-module Python loop (this runs every frame);
        # the dicts are read anew each time, as some edits swap a whole dict (ModuleList.__delitem__ does)
        mods = self._submodules
        dicts = _chain((map(_parameters, mods), map(_buffers, mods)))
        tensors = [t for t in _chain(map(dict.values, dicts)) if t is not None]
        tree = tuple(map(id, _chain(map(dict.values, map(_modules, mods)))))
        if self.structure_only:
            return tree, tuple(map(id, tensors)), tuple(map(_data_ptr, tensors))
        try:
            versions = tuple(map(_version, tensors))
        except RuntimeError:  # inference tensors have no version counter
            versions = tuple(map(tensor_version, tensors))
        return (tuple(map(_training, mods)), tree, tuple(map(id, tensors)), tuple(map(_data_ptr, tensors)), versions)

    def changed(self) -> bool:
        """True when anything changed since construction or the last call that returned True."""
        if self._compute() == self._value:
            return False
        self._submodules = list(self.module.modules())  # the tree itself may have changed
        self._value = self._compute()
        return True


_chain = itertools.chain.from_iterable
_version = operator.attrgetter("_version")
_training = operator.attrgetter("training")
_parameters = operator.attrgetter("_parameters")
_buffers = operator.attrgetter("_buffers")
_modules = operator.attrgetter("_modules")
_data_ptr = torch.Tensor.data_ptr
