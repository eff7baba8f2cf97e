"""Every benchmark script runs at its tiny size and writes tables/plots that parse (correctness, not timing)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from distilkit.compiled import compiler_available

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The scripts' --threads sets torch's global thread count: give it back to the rest of the session."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of every pipe table in `text`; asserts each row has the header's cell count."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines) - 1:
        if lines[i].startswith("|") and set(lines[i + 1].replace("|", "").replace(" ", "")) <= set("-:") \
                and lines[i + 1].startswith("|"):
            header = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                assert len(cells) == len(header), f"row {lines[i]!r} does not match header {header}"
                rows.append(cells)
                i += 1
            tables.append((header, rows))
        else:
            i += 1
    return tables


def _png(path: Path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 100


def _percent(cell: str) -> float:
    value = float(cell.split("±")[0])
    assert 0.0 <= value <= 100.0
    return value


def test_pmdp_ablation_quick_writes_both_tables_and_plot(tmp_path):
    res = _load("pmdp_ablation").main(["--quick", "--seeds", "0", "1", "--threads", "1", "--out", str(tmp_path)])
    text = (tmp_path / "pmdp_ablation.md").read_text()
    tables = markdown_tables(text)
    assert "## Tracking" in text and "## Classification" in text and len(tables) == 2
    (track_head, track_rows), (cls_head, cls_rows) = tables
    names = [r[0] for r in track_rows]
    assert names[0] == "Tea-fir4" and names[1].startswith("Tea-skip4") and names[-2:] == [
        "teacher: 12L plain corner head", "constant box (no tracking)"]
    assert sum(n.startswith("PMDP m =") for n in names) == 3 and names[-3].endswith("fading layers train")
    for row in track_rows[:-1]:
        _percent(row[2])
    assert [r[0].split(" (same")[0] for r in cls_rows[:-2]] == [r[0].split(" (same")[0] for r in track_rows[:-2]]
    for task, key in (("tracking", "auc"), ("classification", "accuracy")):
        rows = res[task]["rows"]
        assert len(rows) == 6 and [r["freeze"] for r in rows[3:]] == [True, True, False]
        for row in rows:
            assert [run["seed"] for run in row["runs"]] == [0, 1] and len(row["kept"]) == 4
            assert all(0.0 <= run[key] <= 1.0 for run in row["runs"])
        assert rows[1]["kept"] == [2, 5, 8, 11] and rows[0]["kept"] == [0, 1, 2, 3]
    saved = json.loads((tmp_path / "pmdp_ablation.json").read_text())
    assert saved["tracking"]["rows"][0]["runs"] == res["tracking"]["rows"][0]["runs"]
    _png(tmp_path / "pmdp_ablation.png")


def test_d2s_ablation_quick_writes_table_and_plot(tmp_path):
    res = _load("d2s_ablation").main(["--quick", "--seeds", "3", "--threads", "1", "--out", str(tmp_path)])
    [(header, rows)] = markdown_tables((tmp_path / "d2s_ablation.md").read_text())
    assert "AUC % (mean ± std)" in header and len(rows) == 5
    assert "dense-to-sparse" in rows[0][0] and "attention" in rows[1][0] and "ground truth only" in rows[2][0]
    assert "teacher" in rows[3][0]
    assert rows[0][1].startswith("kl×5") and "attn×2" in rows[1][1] and "kl" not in rows[2][1]
    for row in rows:
        _percent(row[2])
    assert [run["seed"] for run in res["rows"][0]["runs"]] == [3]
    assert json.loads((tmp_path / "d2s_ablation.json").read_text())["rows"][2]["name"] == "ground truth only"
    _png(tmp_path / "d2s_ablation.png")


def _run(args: list[str]) -> str:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_flops_table_quick_writes_a_table(tmp_path):
    out = tmp_path / "flops.md"
    _run([str(BENCH / "flops_table.py"), "--quick", "--iters", "0", "--out", str(out)])
    [(header, rows)] = markdown_tables(out.read_text())
    assert header[0] == "model" and "params" in header
    models = [r[0] for r in rows]
    assert "mixformerv2-s-tiny" in models and any(m.startswith("timm:") for m in models)
    for row in rows:
        assert int(row[1].replace(",", "")) > 0


def test_tracker_speed_tiny_prints_every_path_with_a_roofline(tmp_path):
    out = tmp_path / "speed.txt"
    # --no-native: the compiled+native rows differ from the compiled ones only by the attention kernel switch, which
    # tests/test_kernels.py checks inside a compiled program; compiling a second model here doubles this test
    text = _run([str(BENCH / "tracker_speed.py"), "--frames", "2", "--warmup", "1", "--models", "mixformerv2-s-tiny",
                 "--no-native", "--out", str(out)])
    kernels = {"default", "prepacked"} | ({"compiled"} if compiler_available() else set())
    kernels |= {"onnxruntime", "onnxruntime int8"} if importlib.util.find_spec("onnxruntime") else set()
    saved = out.read_text().splitlines()
    assert "matmul peak" in saved[0] and sum("│" in ln and "mixformerv2-s-tiny" in ln for ln in saved) == 3 * len(kernels)
    assert "matmul peak" in text and "roofline" in text and "vs burst peak" in text
    rows = [ln for ln in text.splitlines() if "mixformerv2-s-tiny" in ln and "│" in ln]
    cells = [[c.strip() for c in ln.replace("│", "|").split("|")] for ln in rows]
    assert {"full", "cached", "cached-untrimmed"} <= {c for row in cells for c in row}
    assert kernels <= {c for row in cells for c in row}
    assert len(rows) == 3 * len(kernels)
    summary = [ln for ln in text.splitlines() if ln.startswith("mixformerv2-s-tiny: fastest cached path")]
    assert len(summary) == 1 and "its full forward" in summary[0] and "the roofline" in summary[0]
    cached = {row[row.index("cached") - 1]: float(row[row.index("cached") + 2]) for row in cells if "cached" in row}
    named = summary[0].split("fastest cached path ")[1].split(",")[0]
    assert cached[named] == min(cached.values())  # medians as printed (rounded): ties allowed


def test_tracker_speed_reruns_itself_for_each_instruction_set(tmp_path):
    out = tmp_path / "speed.txt"
    text = _run([str(BENCH / "tracker_speed.py"), "--frames", "1", "--warmup", "0", "--models", "mixformerv2-s-tiny",
                 "--no-compile", "--no-onnx", "--isa", "both", "--out", str(out)])
    native, avx2 = text.split("== instruction set: avx2")
    assert native.startswith("== instruction set: native ==") and "ATEN_CPU_CAPABILITY=avx2" in avx2.splitlines()[0]
    assert "(ATen AVX2)" in avx2 and sum("mixformerv2-s-tiny: fastest cached path" in part for part in (native, avx2)) == 2
    assert out.read_text().count("== instruction set:") == 2


@pytest.mark.parametrize("script, args, message", [
    ("tracker_speed", ["--frames", "0"], "argument --frames: must be >= 1, got 0"),
    ("width_mlp_ratio", ["--threads", "0"], "argument --threads: must be >= 1, got 0"),
    ("flops_table", ["--iters", "-1"], "argument --iters: must be >= 0, got -1"),
    ("d2s_ablation", ["--seeds", "0", "0"], "--seeds values must be distinct"),
])
def test_bad_arguments_are_usage_errors_not_tracebacks(script, args, message):
    done = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_a_distilkit_error_inside_a_benchmark_is_one_line_and_exit_2(capsys, monkeypatch):
    import importlib

    from distilkit.errors import DistilkitError

    monkeypatch.syspath_prepend(str(BENCH))
    common = importlib.import_module("_common")

    def main():
        raise DistilkitError("unknown model 'bogus'")

    with pytest.raises(SystemExit) as exc:
        common.run_main(main)
    assert exc.value.code == 2 and capsys.readouterr().err == "error: unknown model 'bogus'\n"
