"""The one sequence type every tracking dataset yields, and the parser for box annotation files."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from distilkit.errors import DistilkitError

FrameSource = Union[np.ndarray, str, os.PathLike]
#: Largest frame accepted (8192 × 8192; 192 MiB as RGB): benchmark frames are at most 4K.
MAX_FRAME_PIXELS = 8192 * 8192


@dataclass
class Sequence:
    """A video with one target: frames (arrays or image paths), x,y,w,h boxes (N, 4) and visibility (N,).

    `dataset` names the protocol the sequence comes from ("lasot", "got10k", ...); evaluation uses it
    to pick pytracking's per-dataset convention for invalid frames.
    """

    name: str
    frames: SequenceABC[FrameSource]
    boxes: np.ndarray
    visible: np.ndarray
    dataset: str = ""
    attributes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.visible = np.asarray(self.visible, dtype=bool).reshape(-1)
        if not (len(self.frames) == len(self.boxes) == len(self.visible)):
            raise DistilkitError(
                f"sequence {self.name!r}: {len(self.frames)} frames but {len(self.boxes)} boxes "
                f"and {len(self.visible)} visibility flags"
            )

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, i: int) -> np.ndarray:
        """Frame `i` as an H×W×3 uint8 RGB array, whether stored in memory or as an image file."""
        src = self.frames[i]
        if isinstance(src, np.ndarray):
            return src
        return load_image(src)


def load_image(path: FrameSource) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB. A missing or unreadable file, or one larger than
    MAX_FRAME_PIXELS (a decompression bomb: a small file claiming a huge image), is a DistilkitError
    naming it; its size is checked from the header, before any pixel is decoded."""
    try:
        with warnings.catch_warnings():  # PIL only warns below twice its limit: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_FRAME_PIXELS:
                    raise DistilkitError(f"frame {os.fspath(path)} is {img.width}×{img.height} pixels, more than the "
                                         f"{MAX_FRAME_PIXELS:,} a frame may have (a decompression bomb?)")
                return np.asarray(img.convert("RGB"))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise DistilkitError(f"frame {os.fspath(path)} is larger than a frame may have ({err})") from None
    except DistilkitError:  # a ValueError, already naming the frame
        raise
    except (OSError, ValueError) as err:
        raise DistilkitError(f"cannot read frame {os.fspath(path)}: {err}") from None


def sized_boxes(boxes: np.ndarray) -> np.ndarray:
    """Which (N, 4) x,y,w,h boxes are real: finite, with positive width and height (NaN rows are not)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        return np.isfinite(b).all(1) & (b[:, 2] > 0) & (b[:, 3] > 0)


def read_boxes(path: Path) -> np.ndarray:
    """Parse an x,y,w,h annotation file (comma, tab or space separated; blank lines ignored) -> (N, 4).

    Raises DistilkitError naming the file and line for a missing file or a line that is not 4 numbers.
    """
    rows = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        text = line.strip()
        if not text:
            continue
        parts = text.replace(",", " ").replace("\t", " ").split()
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 4:
            raise DistilkitError(f"{path}:{lineno}: expected 4 numbers x,y,w,h, got {text[:60]!r}")
        rows.append(values)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def read_flags(path: Path, allowed: range | None = None) -> np.ndarray:
    """Parse integer flags, one per line or comma-separated (LaSOT style) -> (N,) int array.

    A fractional flag (0.5) is an error, not truncated to 0; an integral float (1.0) is accepted.
    """
    values = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        for part in line.replace(",", " ").split():
            try:
                number = float(part)
            except ValueError:
                number = float("nan")
            if not number.is_integer():
                raise DistilkitError(f"{path}:{lineno}: expected an integer flag, got {part[:30]!r}")
            value = int(number)
            if allowed is not None and value not in allowed:
                raise DistilkitError(f"{path}:{lineno}: flag {value} outside {allowed.start}..{allowed.stop - 1}")
            values.append(value)
    return np.asarray(values, dtype=np.int64)


def _read_lines(path: Path) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8-sig").splitlines()  # a BOM (Windows editors) is not data
    except FileNotFoundError:
        raise DistilkitError(f"annotation file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DistilkitError(f"cannot read annotation file {path}: {err}") from None
