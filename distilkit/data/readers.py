"""Readers for the official tracking benchmarks in their released layouts (listed in the README), and COCO
as single-image training sequences.

Sequence lists are found at construction (a missing root fails at once); annotations are parsed
when a sequence is first accessed (COCO: its JSON, at the first access of any sequence). Malformed
files raise DistilkitError naming file and line (or JSON key).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from distilkit.checks import is_ascii_digits
from distilkit.data.sequence import Sequence, read_boxes, read_flags
from distilkit.errors import DistilkitError, os_error_message
from distilkit.names import check_plain_name

T = TypeVar("T")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_MAX_FRAME_DIGITS = 12  # frame numbers are zero-padded to 8 digits in every benchmark


def _existing_dir(root: str | os.PathLike, what: str) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DistilkitError(f"{what} directory not found: {path}")
    return path


def _frame_files(folder: Path, first: int = 1) -> list[str]:
    """Image files of a sequence (as str: light for long videos) in numeric order (1 < 2 < 10), numbered
    `first`, `first`+1, ... without gaps: annotation lines are matched to frames by position.

    Hidden files (macOS `._00000001.jpg` AppleDouble files) are not frames and are skipped.
    """
    if not folder.is_dir():
        raise DistilkitError(f"frame directory not found: {folder}")
    files = [p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")]
    if not files:
        raise DistilkitError(f"no frames (.jpg/.png) in {folder}")
    unnumbered = [p.name for p in files if not (is_ascii_digits(p.stem) and len(p.stem) <= _MAX_FRAME_DIGITS)]
    if unnumbered:
        raise DistilkitError(f"{folder}: frame file {sorted(unnumbered)[0]!r} is not numbered like the other frames "
                             "(ASCII digits 0-9)")
    files.sort(key=lambda p: (int(p.stem), p.name))
    for expected, path in enumerate(files, start=first):
        number = int(path.stem)
        if number != expected:
            problem = f"frame {expected} is missing" if number > expected else f"frame {number} appears twice"
            raise DistilkitError(f"{folder}: {problem} (frames must be numbered {first}, {first + 1}, ... "
                                 "without gaps: annotation lines are matched to frames in order)")
    return [str(p) for p in files]


def _check_rows(path: Path, rows: int, frames: int, allow_first_only: bool = False) -> None:
    if rows != frames and not (allow_first_only and rows == 1):
        raise DistilkitError(f"{path}: {rows} annotation lines for {frames} frames")


def _pad_boxes(boxes: np.ndarray, n: int) -> np.ndarray:
    """Test splits annotate only the first frame: the unknown rest is NaN (scored as invalid)."""
    if len(boxes) == n:
        return boxes
    return np.concatenate([boxes, np.full((n - len(boxes), 4), np.nan)])


def _read_list(path: Path) -> list[str]:
    """Sequence names of a split list file (one per line); an empty list, or a name that is not a plain
    folder name (`../val/seq1` would read, and write results, outside the dataset), is an error naming the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DistilkitError(f"cannot read sequence list {path}: {err}") from None
    names = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if name:
            names.append(check_plain_name(name, f"{path}:{lineno}: sequence name"))
    if not names:
        raise DistilkitError(f"{path}: the sequence list is empty")
    return names


def _os_errors(method: Callable[..., T]) -> Callable[..., T]:
    """A reader method whose file-system errors (an unreadable folder, an I/O error) become one
    DistilkitError naming the dataset and the path."""

    @functools.wraps(method)
    def wrapper(self: _Reader, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except OSError as err:
            raise DistilkitError(f"{self.name}: {os_error_message(err)}") from None

    return wrapper


class _Reader:
    """Shared list/index behaviour; subclasses fill `self.names` and implement `_load(name)`."""

    name = ""
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Sequence:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence index {i} out of range for {len(self)} sequences")
        return self._cached(self.names[i])

    @functools.lru_cache(maxsize=256)  # noqa: B019 - readers are long-lived, few per process
    @_os_errors
    def _cached(self, name: str) -> Sequence:
        return self._load(name)

    def _load(self, name: str) -> Sequence:
        raise NotImplementedError

    def _select(self, found: list[str], sequences: list[str] | None, where: Path) -> list[str]:
        if sequences is None:
            return found
        missing = sorted(set(sequences) - set(found))
        if missing:
            raise DistilkitError(f"{self.name}: sequence(s) not found under {where}: {', '.join(missing[:5])}")
        if not sequences:
            raise DistilkitError(f"{self.name}: no sequences selected under {where}")
        return list(sequences)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self)} sequences)"


class GOT10k(_Reader):
    """GOT-10k: `<root>/<split>/<seq>/00000001.jpg`, `groundtruth.txt`, `absence.label`, `cover.label`.

    `root` is the dataset root (holding train/val/test) or the split folder itself. Visible frames are
    those not absent and with cover > 0. The test split ships only the first box (the rest is NaN).
    """

    name = "got10k"

    @_os_errors
    def __init__(self, root: str | os.PathLike, split: str = "val", sequences: list[str] | None = None):
        if split not in ("train", "val", "test"):
            raise DistilkitError(f"GOT-10k split must be train, val or test, got {split!r}")
        base = _existing_dir(root, "GOT-10k")
        self.root = base / split if (base / split).is_dir() else base
        self.split = split
        listing = self.root / "list.txt"
        if listing.is_file():
            found = _read_list(listing)
        else:
            found = sorted(p.name for p in self.root.iterdir() if (p / "groundtruth.txt").is_file())
        if not found:
            raise DistilkitError(f"no GOT-10k sequences (folders with groundtruth.txt) under {self.root}")
        self.names = self._select(found, sequences, self.root)

    def _load(self, name: str) -> Sequence:
        folder = self.root / name
        frames = _frame_files(folder)
        gt = folder / "groundtruth.txt"
        boxes = read_boxes(gt)
        _check_rows(gt, len(boxes), len(frames), allow_first_only=self.split == "test")
        visible = np.ones(len(frames), dtype=bool)
        for label, invisible in (("absence.label", lambda v: v == 1), ("cover.label", lambda v: v == 0)):
            path = folder / label
            if path.is_file():
                flags = read_flags(path, range(0, 2) if label == "absence.label" else range(0, 9))
                _check_rows(path, len(flags), len(frames))
                visible &= ~invisible(flags)
        return Sequence(name, frames, _pad_boxes(boxes, len(frames)), visible, dataset=self.name)


class LaSOT(_Reader):
    """LaSOT: `<root>/<class>/<class>-<n>/img/00000001.jpg`, `groundtruth.txt`, `full_occlusion.txt`,
    `out_of_view.txt` (comma-separated 0/1). A frame is visible unless fully occluded or out of view.

    split "test"/"train" uses `testing_set.txt`/`training_set.txt` from root when present (one
    sequence name per line; "train" without its list takes every sequence not in the test list),
    else every sequence found; "all" takes every sequence; `sequences=`
    picks an explicit list. Sequence folders may also sit directly under root.
    """

    name = "lasot"

    @_os_errors
    def __init__(self, root: str | os.PathLike, split: str = "test", sequences: list[str] | None = None):
        if split not in ("train", "test", "all"):
            raise DistilkitError(f"LaSOT split must be train, test or all, got {split!r}")
        self.root = _existing_dir(root, "LaSOT")
        self.split = split
        self._folders = self._discover()
        if not self._folders:
            raise DistilkitError(f"no LaSOT sequences (<class>/<class>-<n>/groundtruth.txt) under {self.root}")
        found = sorted(self._folders, key=_natural_key)
        test_list, train_list = self.root / "testing_set.txt", self.root / "training_set.txt"
        if sequences is None and split == "test" and test_list.is_file():
            sequences = _read_list(test_list)
        elif sequences is None and split == "train" and train_list.is_file():
            sequences = _read_list(train_list)
        elif sequences is None and split == "train" and test_list.is_file():  # never train on the test list
            held_out = set(_read_list(test_list))
            sequences = [n for n in found if n not in held_out]
        self.names = self._select(found, sequences, self.root)

    def _discover(self) -> dict[str, Path]:
        folders = {}
        for gt in [*self.root.glob("*/groundtruth.txt"), *self.root.glob("*/*/groundtruth.txt")]:
            folders.setdefault(gt.parent.name, gt.parent)
        return folders

    def _load(self, name: str) -> Sequence:
        folder = self._folders[name]
        frames = _frame_files(folder / "img")
        gt = folder / "groundtruth.txt"
        boxes = read_boxes(gt)
        _check_rows(gt, len(boxes), len(frames))
        visible = np.ones(len(frames), dtype=bool)
        for label in ("full_occlusion.txt", "out_of_view.txt"):
            flags = read_flags(folder / label, range(0, 2))
            _check_rows(folder / label, len(flags), len(frames))
            visible &= flags == 0
        return Sequence(name, frames, boxes, visible, dataset=self.name)


class TrackingNet(_Reader):
    """TrackingNet: `<root>/TRAIN_k/frames/<seq>/<i>.jpg` (i from 0), `<root>/TRAIN_k/anno/<seq>.txt`.

    `chunks` selects chunks by index (0 → TRAIN_0) or folder name ("TEST"); default: every TRAIN_k
    found. All frames are visible (TrackingNet has no absence labels); TEST annotates frame 0 only.
    """

    name = "trackingnet"

    @_os_errors
    def __init__(self, root: str | os.PathLike, chunks: list[int | str] | None = None,
                 sequences: list[str] | None = None):
        self.root = _existing_dir(root, "TrackingNet")
        if chunks is None:
            names = sorted((p.name for p in self.root.glob("TRAIN_*") if p.is_dir()), key=_natural_key)
            if not names and (self.root / "TEST").is_dir():
                names = ["TEST"]
        else:
            names = [f"TRAIN_{c}" if isinstance(c, int) or is_ascii_digits(str(c))
                     else check_plain_name(str(c), "TrackingNet chunk") for c in chunks]
        self.chunks = [_existing_dir(self.root / c, "TrackingNet chunk") for c in names]
        if not self.chunks:
            raise DistilkitError(f"no TrackingNet chunks (TRAIN_k or TEST folders) under {self.root}")
        self._chunk_of: dict[str, Path] = {}
        for chunk in self.chunks:
            anno = _existing_dir(chunk / "anno", "TrackingNet annotation")
            for path in sorted(anno.glob("*.txt"), key=lambda p: _natural_key(p.stem)):
                self._chunk_of.setdefault(path.stem, chunk)
        if not self._chunk_of:
            raise DistilkitError(f"no TrackingNet annotations (anno/<seq>.txt) under {self.root}")
        self.names = self._select(list(self._chunk_of), sequences, self.root)

    def _load(self, name: str) -> Sequence:
        chunk = self._chunk_of[name]
        frames = _frame_files(chunk / "frames" / name, first=0)
        gt = chunk / "anno" / f"{name}.txt"
        boxes = read_boxes(gt)
        _check_rows(gt, len(boxes), len(frames), allow_first_only=chunk.name == "TEST")
        return Sequence(name, frames, _pad_boxes(boxes, len(frames)), np.ones(len(frames), dtype=bool),
                        dataset=self.name)


@dataclass
class _CocoIndex:
    """The kept annotations of a COCO JSON as compact arrays (a million dicts would be copied into every worker)."""

    files: list[str]  # image file name, per image
    image_ids: np.ndarray  # (images,) COCO image id
    image: np.ndarray  # (N,) row in `files` of each kept annotation
    ann_ids: np.ndarray  # (N,) COCO annotation id: the sequence name
    boxes: np.ndarray  # (N, 4) x,y,w,h


class COCO(_Reader):
    """COCO (2017 layout) as training data: `<root>/annotations/instances_<split>.json`, `<root>/<split>/<file_name>`.

    One single-image sequence per object annotation with `iscrowd` = 0 and a box of positive width and
    height, named by its annotation id: the official MixFormerV2 (pytracking) training takes template and
    search crops from that one image. COCO has no tracking protocol, so it is never evaluation data.
    The JSON must exist at construction; it is parsed and checked at the first access.
    """

    name = "coco"

    @_os_errors
    def __init__(self, root: str | os.PathLike, split: str = "train2017"):
        check_plain_name(split, "COCO split")
        self.root = _existing_dir(root, "COCO")
        self.split = split
        self.annotation_file = self.root / "annotations" / f"instances_{split}.json"
        if not self.annotation_file.is_file():
            raise DistilkitError(f"COCO annotation file not found: {self.annotation_file} (a COCO root holds "
                                 f"annotations/instances_{split}.json and the {split}/ images)")
        self.image_dir = _existing_dir(self.root / split, "COCO image")
        self._parsed: _CocoIndex | None = None
        self._names: list[str] | None = None

    @_os_errors
    def _index(self) -> _CocoIndex:
        if self._parsed is None:
            self._parsed = _parse_coco(self.annotation_file)
        return self._parsed

    @property
    def names(self) -> list[str]:  # type: ignore[override]
        """Sequence names (annotation ids), listed at the first use."""
        if self._names is None:
            self._names = [str(a) for a in self._index().ann_ids.tolist()]
        return self._names

    def __len__(self) -> int:
        return len(self._index().ann_ids)

    def __getitem__(self, i: int) -> Sequence:
        index, n = self._index(), len(self)
        if not -n <= i < n:
            raise IndexError(f"sequence index {i} out of range for {n} sequences")
        i = int(i) % n
        row = int(index.image[i])
        return Sequence(str(int(index.ann_ids[i])), [str(self.image_dir / index.files[row])], index.boxes[i:i + 1],
                        np.ones(1, dtype=bool), dataset=self.name, attributes={"image_id": int(index.image_ids[row])})


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
               bool: "a boolean", type(None): "null"}
_MAX_ID = 2**63 - 1
_TOP = "top level"


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _coco_value(entry: Any, key: str, kind: type, path: Path, where: str) -> Any:
    """`entry[key]`, checked to be a `kind` (a boolean is not an integer here), else an error naming file and key."""
    if not isinstance(entry, dict):
        raise DistilkitError(f"{path}: {where}: expected an object, got {_json_type(entry)}")
    if key not in entry:
        raise DistilkitError(f"{path}: {where}: missing key {key!r}")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        name = key if where == _TOP else f"{where}.{key}"
        raise DistilkitError(f"{path}: {name}: expected {_JSON_TYPES[kind]}, got {_json_type(value)}")
    return value


def _coco_id(entry: Any, key: str, path: Path, where: str) -> int:
    value = _coco_value(entry, key, int, path, where)
    if not 0 <= value <= _MAX_ID:
        raise DistilkitError(f"{path}: {where}.{key}: expected an id from 0 to 2^63-1, got {value}")
    return value


def _coco_box(entry: Any, path: Path, where: str) -> list[float]:
    """`bbox`: 4 finite numbers x,y,w,h."""
    box = _coco_value(entry, "bbox", list, path, where)
    try:
        values = [float(v) for v in box if isinstance(v, (int, float)) and not isinstance(v, bool)]
    except OverflowError:
        values = []
    if len(box) != 4 or len(values) != 4 or not all(math.isfinite(v) for v in values):
        shown = json.dumps(box)
        raise DistilkitError(f"{path}: {where}.bbox: expected 4 finite numbers x,y,w,h, got "
                             f"{shown if len(shown) <= 60 else shown[:57] + '...'}")
    return values


def _parse_coco(path: Path) -> _CocoIndex:
    """Read and check a COCO instances JSON; keep the annotations with `iscrowd` 0 and a box of positive size."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise DistilkitError(f"{path}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise DistilkitError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except RecursionError:
        raise DistilkitError(f"{path}: JSON nested too deeply for a COCO annotation file") from None
    images = _coco_value(data, "images", list, path, _TOP)
    annotations = _coco_value(data, "annotations", list, path, _TOP)
    row_of: dict[int, int] = {}
    files = []
    for i, image in enumerate(images):
        where = f"images[{i}]"
        image_id = _coco_id(image, "id", path, where)
        if image_id in row_of:
            raise DistilkitError(f"{path}: {where}.id: image id {image_id} appears twice")
        file_name = _coco_value(image, "file_name", str, path, where)
        files.append(check_plain_name(file_name, f"{path}: {where}.file_name"))
        row_of[image_id] = i
    seen: set[int] = set()
    rows, ann_ids, boxes = [], [], []
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]"
        ann_id = _coco_id(ann, "id", path, where)
        if ann_id in seen:
            raise DistilkitError(f"{path}: {where}.id: annotation id {ann_id} appears twice")
        seen.add(ann_id)
        image_id = _coco_id(ann, "image_id", path, where)
        if image_id not in row_of:
            raise DistilkitError(f"{path}: {where}.image_id: {image_id} is not the id of any image in 'images'")
        crowd = _coco_value(ann, "iscrowd", int, path, where)
        if crowd not in (0, 1):
            raise DistilkitError(f"{path}: {where}.iscrowd: expected 0 or 1, got {crowd}")
        box = _coco_box(ann, path, where)
        if crowd == 0 and box[2] > 0 and box[3] > 0:
            rows.append(row_of[image_id])
            ann_ids.append(ann_id)
            boxes.append(box)
    if not rows:
        raise DistilkitError(f"{path}: no annotation with iscrowd 0 and a box of positive width and height")
    return _CocoIndex(files, np.array(list(row_of), dtype=np.int64), np.array(rows, dtype=np.int64),
                      np.array(ann_ids, dtype=np.int64), np.array(boxes, dtype=np.float64))


def _natural_key(text: str) -> list:
    """Sort key putting seq2 before seq10: runs of ASCII digits compare as numbers."""
    return [int(t) if is_ascii_digits(t) else t for t in re.split(r"([0-9]+)", text)]
