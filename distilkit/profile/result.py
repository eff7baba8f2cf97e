"""`Profile`: params, MACs and other-op element counts per module and in total, as table or JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

UNITS = {
    "params": "parameters (elements)",
    "macs": "multiply-accumulates: linear, conv, matmul/bmm/einsum, attention QK^T and AV",
    "flops": "2 x MACs",
    "other_ops": "output elements per op type (norms, softmax, activations, interpolation, elementwise); not in MACs",
}


@dataclass
class ModuleCost:
    """Cost of one module, including everything it calls (its whole subtree)."""

    name: str
    type: str
    params: int
    macs: int = 0
    other_ops: dict[str, int] = field(default_factory=dict)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def depth(self) -> int:
        return 0 if not self.name else self.name.count(".") + 1


@dataclass
class Profile:
    """Result of `distilkit.profile.profile`; module names are `model.named_modules()` names, "" is the model."""

    model: str
    inputs: Any
    params: int
    trainable_params: int
    macs: int
    other_ops: dict[str, int]
    modules: dict[str, ModuleCost]
    uncounted_ops: dict[str, int] = field(default_factory=dict)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable form: totals, per-module costs and the unit of every figure."""
        return {
            "model": self.model,
            "inputs": self.inputs,
            "params": {"total": self.params, "trainable": self.trainable_params},
            "macs": self.macs,
            "flops": self.flops,
            "other_ops": dict(self.other_ops),
            "modules": {
                name: {"type": m.type, "params": m.params, "macs": m.macs, "flops": m.flops, "other_ops": dict(m.other_ops)}
                for name, m in self.modules.items()
            },
            "uncounted_ops": dict(self.uncounted_ops),
            "units": dict(UNITS),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self, depth: int = 2, reference: Mapping[str, int] | None = None, reference_name: str = "fvcore"):
        """rich Table of modules down to `depth` (0 = model only; cost-free modules left out); `reference`
        (module name -> MACs, e.g. fvcore's) adds a column to compare."""
        from rich.table import Table

        table = Table(
            title=f"{self.model}: {self.macs / 1e9:.3f} GMACs = {self.flops / 1e9:.3f} GFLOPs, {self.params / 1e6:.3f} M params",
            caption="MACs = multiply-accumulates (linear, conv, matmul, attention); FLOPs = 2 x MACs; "
            "other ops = output elements, not in MACs",
        )
        table.add_column("module")
        table.add_column("type")
        table.add_column("params", justify="right")
        table.add_column("MACs", justify="right")
        table.add_column("% MACs", justify="right")
        table.add_column("other ops (elements)", justify="right")
        if reference is not None:
            table.add_column(f"{reference_name} MACs", justify="right")
            table.add_column(f"ours - {reference_name}", justify="right")
        for name, m in self.modules.items():
            if m.depth > depth or (m.name and not (m.params or m.macs or m.other_ops)):
                continue
            share = f"{100 * m.macs / self.macs:.1f}" if self.macs else "-"
            row = ["  " * m.depth + (name or "(model)"), m.type, f"{m.params:,}", f"{m.macs:,}", share,
                   f"{sum(m.other_ops.values()):,}"]
            if reference is not None:
                ref = reference.get(name)
                row += ["-", "-"] if ref is None else [f"{ref:,}", f"{m.macs - ref:+,}"]
            table.add_row(*row)
        return table

    def summary(self) -> str:
        """One line: totals with units."""
        return (
            f"{self.model}: params {self.params:,} ({self.trainable_params:,} trainable), "
            f"MACs {self.macs:,} ({self.macs / 1e9:.3f} G), FLOPs {self.flops:,} (= 2 x MACs)"
        )
