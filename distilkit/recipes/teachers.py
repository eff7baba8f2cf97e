"""Pretrained teachers shipped with distilkit, and which teacher a `distilkit prune` run starts from.

A budget may name a shipped teacher (`teacher: mixformerv2-s-demo`): the demo then starts from a
tracker that tracks, as a paper-budget user starts from `--teacher` with the official MixViT. The
CLI's `--teacher` overrides it: a model folder or checkpoint, or `none` to train the teacher here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from distilkit.errors import DistilkitError

SHIPPED_TEACHERS_DIR = Path(__file__).resolve().parent / "shipped" / "teachers"
TEACHER_FILES = ("model.safetensors", "arch.json")  # what distilkit.io.save writes
#: `--teacher none` trains the recipe's teacher stage even when the budget ships a teacher.
TRAIN_HERE = "none"


@dataclass(frozen=True)
class TeacherSource:
    """Where a run's teacher comes from: `path` to load (None: trained here) and `label` for logs and run.json."""

    path: Optional[str]
    label: Optional[str]


def shipped_teacher_names() -> list[str]:
    """Names of the teachers in the package (folders of distilkit/recipes/shipped/teachers)."""
    if not SHIPPED_TEACHERS_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_TEACHERS_DIR.iterdir() if p.is_dir() and not p.name.startswith("."))


def shipped_teacher_path(name: str) -> Path:
    """Folder of shipped teacher `name`, with both of its files present; else a one-line error naming what is missing."""
    folder = SHIPPED_TEACHERS_DIR / name
    if name not in shipped_teacher_names():
        known = ", ".join(shipped_teacher_names()) or "none"
        raise DistilkitError(f"no shipped teacher {name!r} in {SHIPPED_TEACHERS_DIR} (shipped: {known})")
    for file in TEACHER_FILES:
        if not (folder / file).is_file():
            raise DistilkitError(f"shipped teacher {name!r} is incomplete: {folder / file} is missing; reinstall "
                                 "distilkit, or train the teacher here with --teacher none")
    return folder


def resolve_teacher(cli_value: Optional[str], budget_teacher: Optional[str]) -> TeacherSource:
    """The teacher of a run: `--teacher` when given (`none`: train here), else the budget's shipped teacher, else none."""
    if cli_value is not None:
        if cli_value.strip().lower() == TRAIN_HERE:
            return TeacherSource(None, None)
        return TeacherSource(cli_value, cli_value)
    if budget_teacher is None:
        return TeacherSource(None, None)
    return TeacherSource(str(shipped_teacher_path(budget_teacher)), f"shipped:{budget_teacher}")
