"""`distilkit flops`: table/JSON agreement, --compare, --heads, --strict, --latency and bad input (exit 2)."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from distilkit.cli import app, main

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, ["flops", *args], env={"COLUMNS": "200"})
    return result


def exit_code_and_stderr(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(["flops", *args])
    return info.value.code, capsys.readouterr().err


def test_json_parses_and_matches_table():
    data = json.loads(invoke("mixformerv2-s-tiny", "--json").output)
    for key in ("params", "macs", "flops", "other_ops", "modules", "units"):
        assert key in data
    assert data["flops"] == 2 * data["macs"] and data["params"]["total"] == 130_577
    table = invoke("mixformerv2-s-tiny", "--depth", "1")
    assert table.exit_code == 0, table.output
    rows = {m.group(1): int(m.group(2).replace(",", ""))
            for m in re.finditer(r"│ +(\S+) +│ \w+ +│ +[\d,]+ │ +([\d,]+) │", table.output)}
    assert rows["(model)"] == data["macs"]
    for name in ("backbone", "box_head", "score_head"):
        assert rows[name] == data["modules"][name]["macs"]
    assert "FLOPs = 2 x MACs" in table.output


def test_cached_counts_the_per_frame_path():
    """--cached: templates once, then search + prediction tokens only, last block for the 4 tokens only."""
    from distilkit.trackers.mixformerv2 import build_model

    cfg = build_model("mixformerv2-s-tiny").config
    d, p, h = cfg.embed_dim, cfg.num_pred_tokens, cfg.block_mlp_hidden
    s, nt = cfg.search_feat_size ** 2, cfg.template_tokens * (1 + cfg.num_online_templates)
    keys = nt + s + p
    expected = s * 3 * cfg.patch_size ** 2 * d  # patch embedding of the search image
    for i, hidden in enumerate(h):
        queries = p if i == len(h) - 1 else s + p
        expected += (s + p) * 3 * d * d + 2 * queries * keys * d + queries * (d * d + 2 * d * hidden)
    hid = cfg.head_hidden or d
    expected += 4 * (d * hid + hid * cfg.bins) + 4 * (d * d + d)  # T4 head and score head on the 4 tokens
    data = json.loads(invoke("mixformerv2-s-tiny", "--cached", "--json").output)
    assert data["macs"] == expected
    full = json.loads(invoke("mixformerv2-s-tiny", "--json").output)["macs"]
    assert data["macs"] < full and data["modules"]["model.backbone.blocks"]["macs"] > 0


def test_compare_fvcore_and_latency():
    result = invoke("mixformerv2-s-tiny", "--compare", "fvcore", "--latency", "--iters", "2", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "fvcore MACs" in result.output and "ours - fvcore" in result.output and "latency: median" in result.output
    data = json.loads(invoke("mixformerv2-s-tiny", "--compare", "fvcore", "--json").output)
    fv = data["compare"]["fvcore"]
    assert fv["modules"]["score_head"] == data["modules"]["score_head"]["macs"]  # linear-only module: both agree
    assert fv["macs"] != data["macs"]  # fvcore skips SDPA


def test_heads_prints_measured_and_seed_values():
    result = invoke("mixformerv2-s", "--search-size", "288", "--depth", "0", "--heads", "--strict")
    assert result.exit_code == 0, result.output
    out = result.output
    for value in ("2,580,480", "2,654,208", "4,543,579,008", "3,902,587,776", "4,493,532,672", "2,284,308,864"):
        assert value in out
    assert "ratio Py-Corner / T4 (72 bins): 1,760.7" in out
    assert "adjust1" in out and "conv5" in out


def test_heads_json_and_strict_failure(monkeypatch):
    data = json.loads(invoke("mixformerv2-s-tiny", "--heads", "--json").output)
    assert data["heads"]["dims"] == {"dim": 64, "feat": 8, "channel": 32}
    assert all(row["ok"] for row in data["heads"]["rows"])
    import distilkit.commands.head_costs as head_costs

    monkeypatch.setattr(head_costs, "corner_head_macs", lambda head, feat, substitute=None: 1)
    result = invoke("mixformerv2-s-tiny", "--heads", "--strict")
    assert result.exit_code == 1
    assert "strict: Py-Corner head (conv, both corners): measured" in result.output and "expected 1 (+1 more)" in result.output


def test_timm_model_and_input_size():
    result = invoke("timm:vit_tiny_patch16_224", "--input-size", "112", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    n, d = 50, 192
    assert data["inputs"] == [[1, 3, 112, 112]]
    assert data["macs"] == 12 * (12 * n * d * d + 2 * n * n * d) + 49 * 768 * d + d * 1000


@pytest.mark.parametrize(
    "args, message",
    [
        (("mixformerv2-xl",), "valid names: mixvit-b, mixvit-b-corner, mixformerv2-12l"),
        (("timm:vit_bse_patch16_224",), "close matches: vit_base_patch16_224"),
        (("timm:vit_tiny_patch16_224", "--input-size", "230"), "--input-size 230 is not divisible by the patch size 16"),
        (("mixformerv2-s-tiny", "--search-size", "60"), "--search-size 60 is not divisible by the patch size 8"),
        (("mixformerv2-s-tiny", "--input-size", "64"), "use --template-size / --search-size"),
        (("mixformerv2-s-tiny", "--compare", "ptflops"), "valid: fvcore"),
        (("timm:vit_tiny_patch16_224", "--heads"), "--heads applies to MixFormerV2 models"),
        (("./no/such/dir",), "does not exist"),
        (("timm:vit_tiny_patch16_224", "--cached"), "--cached applies to MixFormerV2 models"),
        (("mixformerv2-s-tiny", "--cached", "--strict"), "--cached cannot be combined with --strict"),
        (("mixformerv2-s-tiny", "--threads", "1", "--iters", "3"), "--threads and --iters only apply with --latency"),
    ],
)
def test_bad_input_exits_2(capsys, args, message):
    code, err = exit_code_and_stderr(capsys, *args)
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_directory_without_arch_json(capsys, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    code, err = exit_code_and_stderr(capsys, str(tmp_path))
    assert code == 2 and "has no arch.json" in err
    code, err = exit_code_and_stderr(capsys, str(tmp_path / "model.safetensors"))  # the file, not its folder
    assert code == 2 and "is a file: give the model directory" in err


def test_usage_names_the_argument_as_the_docstring_does():
    usage = next(line for line in invoke("--help").output.splitlines() if "Usage:" in line)
    assert "MODEL" in usage and "model" not in usage.replace("MODEL", "")



def test_saved_timm_directory(tmp_path):
    import timm

    from distilkit import io

    io.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64), tmp_path / "vit")
    vit = json.loads(invoke(str(tmp_path / "vit"), "--json").output)
    assert vit["inputs"] == [[1, 3, 64, 64]]
    assert vit["macs"] == 12 * (12 * 17 * 192 * 192 + 2 * 17 * 17 * 192) + 16 * 768 * 192 + 192 * 1000


def test_saved_tracker_directory(tmp_path):
    from distilkit import io
    from distilkit.trackers.mixformerv2 import build_model

    io.save(build_model("mixformerv2-s-tiny"), tmp_path / "tracker")
    tracker = json.loads(invoke(str(tmp_path / "tracker"), "--json").output)
    named = json.loads(invoke("mixformerv2-s-tiny", "--json").output)
    assert tracker["macs"] == named["macs"] and tracker["params"] == named["params"]
