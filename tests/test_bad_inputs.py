"""Hostile or broken inputs (issue 20, findings 4 and 5): each is one DistilkitError in the library and one
line with exit code 2 through the CLI, never a traceback, a hang or a file written outside its folder.

Kinds: YAML beyond plain mappings/lists/scalars (aliases, anchors, merge keys, tags, deep nesting),
numbers out of range (every numeric recipe field and model override has a cap), non-ASCII digits,
decompression-bomb frames, file-system errors, and names that would become paths outside their folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib
import os
import re
import signal
import struct
import typing
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from distilkit.data import GOT10k, LaSOT, Sequence, TrackingNet, load_datasets, load_image
from distilkit.errors import DistilkitError
from distilkit.eval import ConstantBoxTracker, evaluate
from distilkit.eval.evaluate import Results, SequenceResult, load_results
from distilkit.recipes import load_recipe
from distilkit.recipes.schema import Budget, EvalSpec, OptimizerSpec, ScheduleSpec, Stage, StageBudget
from distilkit.trackers.mixformerv2.family.options import AugmentSpec, SyntheticSpec, TrackingBudget, TrackingEvalSpec
from distilkit.trackers.mixformerv2 import MixFormerV2Config

HERE = Path(__file__).parent
TINY = HERE / "data" / "recipe-tiny.yaml"
HUGE = 10**15  # above every cap, inside int64


@contextlib.contextmanager
def _within(seconds: float):
    """Fail (instead of hanging the suite) when the body runs longer than `seconds` (Unix: SIGALRM)."""
    def timeout(signum, frame):
        raise AssertionError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _one_line_exit_2(argv: list[str], capsys) -> str:
    """Run the CLI; it must exit 2 with exactly one line `error: ...` on stderr. Returns that line."""
    from distilkit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exc.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _recipe(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _line_of(path: str, needle: str) -> int:
    return next(i for i, line in enumerate(open(path, encoding="utf-8"), 1) if needle in line)


def _fails_everywhere(path: str, tmp_path: Path, capsys, message: str) -> str:
    """load_recipe raises DistilkitError containing `message`; `prune --dry-run` says the same in one line."""
    with pytest.raises(DistilkitError) as err:
        load_recipe(path)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    line = _one_line_exit_2(["prune", "--dry-run", "--recipe", path, "--out", str(tmp_path / "out")], capsys)
    assert line == f"error: {err.value}"
    assert not (tmp_path / "out").exists()
    return str(err.value)


# ---- YAML beyond plain data --------------------------------------------------------------------
_LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 12))
_TEXT = TINY.read_text(encoding="utf-8")
_DESCRIPTION = "description: mixformerv2-s route on toy models (tests)"


@pytest.mark.parametrize("edit, needle, message", [
    (lambda t: t.replace(_DESCRIPTION, "description: &a [*a]"), "&a", "anchor &a: anchors and aliases are not allowed"),
    (lambda t: "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + _LAUGHS + t, "l0:", "anchors and aliases"),
    (lambda t: t.replace(_DESCRIPTION, "description: *nowhere"), "*nowhere", "alias *nowhere: anchors and aliases"),
    (lambda t: t.replace("    description: toy sizes for tests", "    description: toy sizes for tests\n    <<: {batch_size: 4}"),
     "<<:", "merge keys (<<) are not allowed"),
    (lambda t: t.replace("name: tiny-s", "name: !!python/object/apply:os.system [echo hi]"), "!!python",
     "tag !!python/object/apply:os.system: YAML tags are not allowed"),
    (lambda t: t.replace("name: tiny-s", "name: !custom tiny-s"), "!custom", "tag !custom: YAML tags are not allowed"),
    (lambda t: t.replace("name: tiny-s", "name: !!str tiny-s"), "!!str", "tag !!str: YAML tags are not allowed"),
    (lambda t: t.replace("name: tiny-s", "name: !!binary aGVsbG8="), "!!binary", "YAML tags are not allowed"),
    (lambda t: t.replace("stages:\n", "stages: !!omap\n", 1), "!!omap", "YAML tags are not allowed"),
    (lambda t: t.replace(_DESCRIPTION, "description: " + "[" * 5000 + "]" * 5000), "description:", "nested more than 32 levels"),
    (lambda t: t.replace("search_factor: 4.0", "search_factor: " + "9" * 5000), "search_factor", "is too large"),
])
def test_yaml_beyond_plain_data_is_refused_with_its_line(tmp_path, capsys, edit, needle, message):
    """Aliases (a self-referencing one recursed forever; nested ones expand exponentially), merge keys, tags
    (ConstructorError before), deep nesting (RecursionError) and a 5,000-digit integer (ValueError)."""
    path = _recipe(tmp_path, edit(_TEXT))
    with _within(60):  # the nested aliases hung for minutes
        text = _fails_everywhere(path, tmp_path, capsys, message)
    assert text.startswith(f"{path}:{_line_of(path, needle)}: "), text


def test_odd_plain_scalars_stay_text(tmp_path):
    """YAML 1.1 types a recipe has no use for (an impossible date, `=`) are the text written, not a crash."""
    path = _recipe(tmp_path, _TEXT.replace(_DESCRIPTION, "description: 2024-13-45").replace(
        "    description: toy sizes for tests", "    description: ="))
    recipe = load_recipe(path)
    assert recipe.description == "2024-13-45" and recipe.budget("tiny").description == "="


def test_control_characters_and_oversized_recipe_files(tmp_path, capsys):
    path = _recipe(tmp_path, _TEXT.replace("tiny-s", "tiny\x00s"))
    _fails_everywhere(path, tmp_path, capsys, "unacceptable character")
    path = _recipe(tmp_path, _TEXT + "#" * 1_000_001)
    _fails_everywhere(path, tmp_path, capsys, "longer than 1,000,000 characters")


# ---- numbers -----------------------------------------------------------------------------------
def _numeric_fields(cls: type) -> list[str]:
    """Fields of a recipe dataclass that hold numbers (ints, floats, lists of them, loss weights)."""
    hints = typing.get_type_hints(cls)

    def numeric(tp) -> bool:
        if tp in (int, float):
            return True
        return any(numeric(arg) for arg in typing.get_args(tp) if arg is not str)

    return [f.name for f in dataclasses.fields(cls) if numeric(hints[f.name])]


_STAGE_OF = {"keep": 3, "mlp_ratio": 4}  # stage fields sit on a stage of the kind using them (default: pmdp-8)

#: Where each recipe dataclass sits in the tiny recipe: (its mapping there, its key path in messages).
_PLACES = {
    Budget: lambda d, key: (d["budgets"]["tiny"], "budgets.tiny."),
    TrackingBudget: lambda d, key: (d["budgets"]["tiny"], "budgets.tiny."),
    TrackingEvalSpec: lambda d, key: (d["budgets"]["tiny"].setdefault("eval", {}), "budgets.tiny.eval."),
    OptimizerSpec: lambda d, key: (d["budgets"]["tiny"]["optimizer"], "budgets.tiny.optimizer."),
    StageBudget: lambda d, key: (d["budgets"]["tiny"]["stages"]["pmdp-8"], "budgets.tiny.stages.pmdp-8."),
    SyntheticSpec: lambda d, key: (d["budgets"]["tiny"]["synthetic"], "budgets.tiny.synthetic."),
    EvalSpec: lambda d, key: (d["budgets"]["tiny"]["eval"], "budgets.tiny.eval."),
    AugmentSpec: lambda d, key: (d["budgets"]["tiny"].setdefault("augment", {}), "budgets.tiny.augment."),
    ScheduleSpec: lambda d, key: (d["stages"][2].setdefault("schedule", {}), "stages[2].schedule."),
    Stage: lambda d, key: (d["stages"][_STAGE_OF.get(key, 2)], f"stages[{_STAGE_OF.get(key, 2)}]."),
}


def _defaults(cls: type) -> object:
    """An instance of `cls` with its defaults (required fields set to 1), for the shape of a field's value."""
    required = {f.name: 1 for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return cls(**required) if cls is not Stage else None


def _huge_like(value):
    """`value` with one of its numbers made HUGE (a list keeps its length, a mapping its keys)."""
    if isinstance(value, dict):
        return {k: (HUGE if i == 0 else v) for i, (k, v) in enumerate(value.items())}
    if isinstance(value, list):
        return [_huge_like(value[0])] + value[1:] if value else [HUGE]
    return HUGE


@pytest.mark.parametrize("cls, key", [(cls, key) for cls in _PLACES for key in _numeric_fields(cls)],
                         ids=lambda v: v.__name__ if isinstance(v, type) else v)
def test_every_numeric_recipe_field_has_an_upper_bound(tmp_path, cls, key):
    """Every number a recipe holds is refused at 10^15 with file, line and key (e.g. template_size in the
    millions asked for a 298 GiB allocation); a new numeric field without a cap fails here."""
    data = yaml.safe_load(_TEXT)
    place, where = _PLACES[cls](data, key)
    current = place.get(key) or getattr(_defaults(cls), key, None)
    place[key] = _huge_like(current if current not in (None, [], {}) else 1)
    path = _recipe(tmp_path, yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(DistilkitError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}:") and f": {where}{key}: " in str(err.value), str(err.value)


@pytest.mark.parametrize("key", _numeric_fields(MixFormerV2Config))
def test_every_numeric_model_override_has_an_upper_bound(tmp_path, key):
    """`depth: 50000000` in an override hung the dry run (50 million blocks built); every numeric
    MixFormerV2Config field a recipe may override has a cap."""
    data = yaml.safe_load(_TEXT)
    data["stages"][1]["overrides"] = {key: [HUGE] if key == "mlp_hidden" else HUGE}
    path = _recipe(tmp_path, yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(DistilkitError, match=rf": stages\[1\]\.overrides\.{key}: must be <= "):
        load_recipe(path)


def test_models_too_large_in_total_are_refused_before_building(tmp_path):
    """Each value within its cap, together a model of 800 billion parameters: refused before any is built."""
    data = yaml.safe_load(_TEXT)
    data["stages"][1]["overrides"] = {"embed_dim": 8192, "num_heads": 8, "depth": 1024}
    data["budgets"]["tiny"].pop("model_overrides")
    data["budgets"]["tiny"].update(template_size=128, search_size=288)
    path = _recipe(tmp_path, yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(DistilkitError, match=r": stages\[1\]\.model: budget 'tiny': its backbone has about "
                                             r"824,633,720,832 parameters, more than the 4,294,967,296 allowed"):
        load_recipe(path)


@pytest.mark.parametrize("line, edited, message", [
    ("template_size: 16", "template_size: 5000000", "budgets.tiny.template_size: must be <= 1024, got 5000000"),
    ("search_factor: 4.0", "search_factor: 1" + "0" * 400, "budgets.tiny.search_factor: int 1000"),  # OverflowError before
    ("max_gap: 10", "max_gap: -1" + "0" * 400, "budgets.tiny.max_gap: int -1000"),
    ("center_jitter: 2.0", "center_jitter: .inf", "budgets.tiny.center_jitter: must be <= 50, got inf"),
    ("batch_size: 8", "batch_size: 1e30", "budgets.tiny.batch_size: expected an integer, got float 1e+30"),
    ("search_size: 32", "search_size: 1e400", "budgets.tiny.search_size: expected an integer, got float inf"),
])
def test_absurd_and_overflowing_numbers_through_the_cli(tmp_path, capsys, line, edited, message):
    assert f"    {line}\n" in _TEXT
    _fails_everywhere(_recipe(tmp_path, _TEXT.replace(f"    {line}\n", f"    {edited}\n")), tmp_path, capsys, message)


def test_cli_flags_have_caps(capsys):
    """Sizes and seeds given on the command line are capped too (click's usage error, exit 2)."""
    from distilkit.cli import main

    for argv in (["prune", "--dry-run", "--seed", str(2**70)], ["flops", "mixformerv2-s-tiny", "--search-size", "4000000"],
                 ["flops", "timm:vit_tiny_patch16_224", "--input-size", "1000000"],
                 ["eval", "constant", "--threads", "99999999999"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and "Traceback" not in capsys.readouterr().err


# ---- non-ASCII digits --------------------------------------------------------------------------
@pytest.mark.parametrize("count", ["²", "٣", "1²", "9" * 5000, "0", "100001", "-3"])
def test_synthetic_count_is_ascii_digits_in_range(tmp_path, capsys, count):
    """`'²'.isdigit()` is True but int('²') fails; '٣' is read as 3; 5,000 digits exceed int()'s limit."""
    with pytest.raises(DistilkitError, match="synthetic:N needs a sequence count from 1 to 100000"):
        load_datasets(f"synthetic:{count}")
    line = _one_line_exit_2(["eval", "constant", "--data", f"synthetic:{count}", "--no-progress"], capsys)
    assert "synthetic:N needs a sequence count" in line
    line = _one_line_exit_2(["prune", "--dry-run", "--recipe", str(TINY), "--data", f"synthetic:{count}",
                             "--out", str(tmp_path / "out")], capsys)
    assert "synthetic:N needs a sequence count" in line


def _frame(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 32, 3), 90, dtype=np.uint8)).save(path)


def _got10k(root: Path, frames: list[str], listed: list[str] | None = None) -> Path:
    """A GOT-10k val split with one sequence `seq1` holding `frames` (file names) and a box per frame."""
    seq = root / "val" / "seq1"
    for name in frames:
        _frame(seq / name)
    (seq / "groundtruth.txt").write_text("".join(f"{2 + i},3,10,8\n" for i in range(len(frames))))
    if listed is not None:
        (root / "val" / "list.txt").write_text("".join(f"{n}\n" for n in listed))
    return root


@pytest.mark.parametrize("odd", ["².jpg", "٣.jpg", "1" * 200 + ".jpg"])
def test_frame_numbers_are_ascii_digits(tmp_path, capsys, odd):
    root = _got10k(tmp_path / "got", ["00000001.jpg", "00000002.jpg", odd])
    with pytest.raises(DistilkitError, match="is not numbered like the other frames"):
        GOT10k(root)[0]
    line = _one_line_exit_2(["eval", "constant", "--data", f"got10k:{root}", "--no-progress"], capsys)
    assert odd[:20] in line


def test_natural_order_and_chunks_use_ascii_digits(tmp_path):
    root = tmp_path / "tn"
    for name in ("²", "seq10", "seq2"):  # '²'.isdigit() is True: int('²') raised ValueError
        _frame(root / "TRAIN_0" / "frames" / name / "0.jpg")
        (root / "TRAIN_0" / "anno").mkdir(parents=True, exist_ok=True)
        (root / "TRAIN_0" / "anno" / f"{name}.txt").write_text("1,2,3,4\n")
    assert TrackingNet(root).names == ["seq2", "seq10", "²"]
    with pytest.raises(DistilkitError, match="TrackingNet chunk directory not found"):
        TrackingNet(root, chunks=["٣"])  # not TRAIN_3
    with pytest.raises(DistilkitError, match="TrackingNet chunk '../tn' must be a plain name"):
        TrackingNet(root, chunks=["../tn"])


# ---- decompression bombs -----------------------------------------------------------------------
def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height pixels but holds no pixel data: a few bytes on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [8200, 10_000, 20_000])
def test_decompression_bombs_are_refused_before_decoding(tmp_path, capsys, side):
    """8200² is over distilkit's 8192² frame limit, 10000² makes PIL only warn (it would decode 300 MB),
    20000² makes PIL raise DecompressionBombError: each is one line naming the file, and no warning."""
    root = _got10k(tmp_path / "got", ["00000001.jpg", "00000002.jpg"])
    bomb = root / "val" / "seq1" / "00000002.png"
    (root / "val" / "seq1" / "00000002.jpg").unlink()
    _png_header(bomb, side, side)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DistilkitError, match=f"^frame {re.escape(str(bomb))} is .*(pixels|larger than a frame may have)"):
            load_image(bomb)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    line = _one_line_exit_2(["eval", "constant", "--data", f"got10k:{root}", "--no-progress"], capsys)
    assert str(bomb) in line


# ---- file-system errors ------------------------------------------------------------------------
def test_os_errors_on_write_are_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    """Disk full (ENOSPC), file too large (EFBIG), read-only (EROFS) while saving results: one line, exit 2."""
    ev = importlib.import_module("distilkit.eval.evaluate")  # the package's `evaluate` is the function

    for code in (errno.ENOSPC, errno.EFBIG, errno.EROFS):
        def full(path, data, code=code):
            raise OSError(code, os.strerror(code), str(path))

        monkeypatch.setattr(ev, "write_atomic", full)
        out = tmp_path / f"out{code}"
        line = _one_line_exit_2(["eval", "constant", "--data", "synthetic:1", "--out", str(out), "--no-progress"], capsys)
        assert line == f"error: {out / 'constant' / 'synthetic-test-0000.txt'}: {os.strerror(code)}"


def test_disk_full_while_writing_names_the_file(tmp_path, capsys, monkeypatch):
    """write() and fsync() fail with ENOSPC without a file name: the atomic writer adds the target's."""
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "out"
    line = _one_line_exit_2(["eval", "constant", "--data", "synthetic:1", "--out", str(out), "--no-progress"], capsys)
    assert line == f"error: {out / 'constant' / 'synthetic-test-0000.txt'}: {os.strerror(errno.ENOSPC)}"
    assert not [p for p in out.rglob("*") if p.is_file()]  # no temp file left behind


def test_os_errors_without_a_path_and_with_two(capsys, monkeypatch):
    import distilkit.commands.eval as ev_cmd

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ev_cmd, "_check_baselines", fail)
    assert _one_line_exit_2(["eval", "constant"], capsys) == f"error: {os.strerror(errno.ENOSPC)}"

    def rename(*args, **kwargs):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), "/a/x.tmp", None, "/b/x")

    monkeypatch.setattr(ev_cmd, "_check_baselines", rename)
    assert _one_line_exit_2(["eval", "constant"], capsys) == f"error: /a/x.tmp -> /b/x: {os.strerror(errno.EXDEV)}"


def test_unreadable_dataset_folders_are_one_line(tmp_path, capsys, monkeypatch):
    """A folder the user cannot list (EACCES, EIO) while a reader scans or loads: DistilkitError naming it."""
    root = _got10k(tmp_path / "got", ["00000001.jpg", "00000002.jpg"])
    real = Path.iterdir

    def denied(self):
        if self.name in ("val", "seq1"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(DistilkitError, match=f"got10k: {root / 'val'}: Permission denied"):
        GOT10k(root)
    (root / "val" / "list.txt").write_text("seq1\n")
    reader = GOT10k(root)
    with pytest.raises(DistilkitError, match=f"got10k: {root / 'val' / 'seq1'}: Permission denied"):
        reader[0]
    line = _one_line_exit_2(["eval", "constant", "--data", f"got10k:{root}", "--no-progress"], capsys)
    assert "Permission denied" in line


def test_deeply_nested_summary_json(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DistilkitError, match="not a distilkit eval summary"):
        load_results(folder)
    seq = Sequence("a", [np.zeros((16, 16, 3), np.uint8)] * 2, [[1, 1, 4, 4]] * 2, [True, True])
    evaluate(ConstantBoxTracker(), [seq], out_dir=folder, progress=False)  # an earlier summary is replaced
    assert load_results(folder).name == "tracker"


# ---- names that become paths -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../val2/seq1", "..", "/tmp/x", "a\\b", "a\x00b", "x" * 256, "."])
def test_list_file_names_are_plain_names(tmp_path, capsys, name):
    """A GOT-10k list.txt naming `../val2/seq1` read a sequence outside the split and wrote its results
    outside <out>/<tracker>/: refused with the list file and line, before anything is written."""
    root = _got10k(tmp_path / "got", ["00000001.jpg", "00000002.jpg"], listed=["seq1", name])
    outside = root / "val2" / "seq1"
    for frame in ("00000001.jpg", "00000002.jpg"):
        _frame(outside / frame)
    (outside / "groundtruth.txt").write_text("2,3,10,8\n3,3,10,8\n")
    listing = root / "val" / "list.txt"
    with pytest.raises(DistilkitError, match=f"^{re.escape(str(listing))}:2: sequence name .* must be a plain name"):
        GOT10k(root)
    out = tmp_path / "results"
    line = _one_line_exit_2(["eval", "constant", "--data", f"got10k:{root}", "--out", str(out), "--no-progress"], capsys)
    assert f"{listing}:2: sequence name" in line
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".txt" and "results" in p.parts]


def test_lasot_list_names_are_plain_names(tmp_path):
    seq = tmp_path / "lasot" / "cat" / "cat-1"
    _frame(seq / "img" / "00000001.jpg")
    (seq / "groundtruth.txt").write_text("1,2,3,4\n")
    for flags in ("full_occlusion.txt", "out_of_view.txt"):
        (seq / flags).write_text("0\n")
    (tmp_path / "lasot" / "testing_set.txt").write_text("cat-1\n../cat/cat-1\n")
    with pytest.raises(DistilkitError, match="testing_set.txt:2: sequence name '../cat/cat-1' must be a plain name"):
        LaSOT(tmp_path / "lasot")


def test_sequence_names_are_checked_before_tracking_and_saving(tmp_path):
    """Library users build Sequences themselves: evaluate() refuses a name that is not a plain name before
    tracking anything, Results.save before writing anything."""
    frames = [np.zeros((16, 16, 3), np.uint8)] * 2
    bad = Sequence("../escaped", frames, [[1, 1, 4, 4]] * 2, [True, True])
    tracked = []

    class Counting(ConstantBoxTracker):
        def initialize(self, image, box):
            tracked.append(1)
            super().initialize(image, box)

    out = tmp_path / "out" / "tracker"
    with pytest.raises(DistilkitError, match="sequence name '../escaped' must be a plain name"):
        evaluate(Counting(), [bad], out_dir=out, progress=False)
    assert not tracked and not (tmp_path / "out").exists()
    results = Results("t", [SequenceResult("ok", np.zeros((2, 4)), np.ones(2), np.ones(2)),
                            SequenceResult("../escaped", np.zeros((2, 4)), np.ones(2), np.ones(2))])
    with pytest.raises(DistilkitError, match="must be a plain name"):
        results.save(out)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize("name", ["a\nb", "x" * 300, "a/b"])
def test_tracker_names_are_plain_names(tmp_path, capsys, name):
    line = _one_line_exit_2(["eval", "constant", "--data", "synthetic:1", "--out", str(tmp_path / "out"),
                             "--no-progress", "--name", name], capsys)
    assert "must be a plain name" in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit, key", [
    (lambda t: t.replace("name: tiny-s", "name: ../../escaped"), "name"),  # names the default --out runs/<name>
    (lambda t: t.replace("  - name: score", "  - name: scoré").replace("      score: {epochs: 1}", "      scoré: {epochs: 1}"),
     "stages[5].name"),
    (lambda t: t.replace("  - name: score", "  - name: ../score").replace("      score: {epochs: 1}", "      ../score: {epochs: "
                                                                                                      "1}"),
     "stages[5].name"),
])
def test_recipe_and_stage_names_are_plain_names(tmp_path, capsys, edit, key):
    path = _recipe(tmp_path, edit(_TEXT))
    text = _fails_everywhere(path, tmp_path, capsys, f": {key}: ")
    assert "plain name" in text or "ASCII letters, digits" in text
