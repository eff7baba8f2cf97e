"""A cheap identity of a module's weights and structure, to notice when cached results go stale.

`ModuleFingerprint(module).changed()` is True once after any in-place weight edit (optimizer step,
`load_state_dict`), replaced parameter, buffer or submodule, or train/eval switch; about 20 µs for a
60-module model, so it can run on every call of a per-frame path. Edits through `tensor.data` bypass
autograd's version counter and are not seen (nor by anything else that relies on it).
"""

from __future__ import annotations

from torch import nn

__all__ = ["ModuleFingerprint"]


class ModuleFingerprint:
    """Remembers `module`'s state now; `changed()` compares with it (and remembers the new state)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._submodules = list(module.modules())
        self._value = self._compute()

    def _compute(self) -> tuple:
        return tuple(
            (m.training, tuple(map(id, m._modules.values())),
             tuple((id(t), t.data_ptr(), t._version) for t in m._parameters.values() if t is not None),
             tuple((id(t), t.data_ptr(), t._version) for t in m._buffers.values() if t is not None))
            for m in self._submodules
        )

    def changed(self) -> bool:
        """True when anything changed since construction or the last call that returned True."""
        if self._compute() == self._value:
            return False
        self._submodules = list(self.module.modules())  # the tree itself may have changed
        self._value = self._compute()
        return True
