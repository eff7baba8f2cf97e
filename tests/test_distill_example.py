from __future__ import annotations

import math
import runpy
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "distill_custom_tracker.py"


def test_custom_tracker_example_trains() -> None:
    example = runpy.run_path(str(EXAMPLE))
    history = example["train"](steps=30, batch_size=8)
    assert len(history) == 30
    assert set(history[0]) == {"total", "kd", "l1", "ciou", "feat", "iou"}
    assert all(math.isfinite(v) for row in history for v in row.values())
    first, last = history[:5], history[-10:]
    assert sum(r["total"] for r in last) / len(last) < sum(r["total"] for r in first) / len(first)
