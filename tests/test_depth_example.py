"""Smoke run of examples/prune_timm_vit.py at its --quick size."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import torch

from distilkit import io

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "prune_timm_vit.py"


def test_prune_timm_vit_quick(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "--quick", "--threads", "1", "--out", str(tmp_path / "pmdp")])
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    finally:
        torch.set_num_threads(threads)  # the example sets it process-wide
    out = capsys.readouterr().out
    for row in ("teacher", "first-k", "skip-k", "PMDP"):
        assert row in out
    assert "removed [0, 2, 4, 6, 8, 10]" in out
    student = io.load(tmp_path / "pmdp")
    assert len(student.blocks) == 6
    assert student(torch.randn(1, 3, 32, 32)).shape == (1, 6)
