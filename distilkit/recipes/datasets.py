"""Datasets of a run as one: several evaluation datasets scored as one set (sequences in order)."""

from __future__ import annotations

from typing import Any, Optional


class Concat:
    """Several datasets evaluated as one (sequences in order)."""

    def __init__(self, parts: list[Any]):
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, i: int) -> Any:
        for p in self.parts:
            if i < len(p):
                return p[i]
            i -= len(p)
        raise IndexError(i)

    @property
    def names(self) -> Optional[list[str]]:
        """Sequence names without loading sequences, when every part lists its own (readers, synthetic)."""
        lists = [getattr(p, "names", None) for p in self.parts]
        return [n for names in lists for n in names] if all(isinstance(n, list) for n in lists) else None
