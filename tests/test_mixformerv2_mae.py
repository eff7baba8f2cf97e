"""load_mae_backbone: an MAE ViT-B checkpoint (generated here in MAE's layout from a timm ViT-B) starts a MixViT backbone."""

from __future__ import annotations

import logging

import pytest
import timm
import torch

from distilkit.errors import DistilkitError
from distilkit.trackers.mixformerv2 import build_model, load_mae_backbone


@pytest.fixture(scope="module")
def mae_checkpoint(tmp_path_factory):
    """What mae_pretrain_vit_base.pth holds: the timm ViT-B encoder without its head, the mask token and a decoder."""
    torch.manual_seed(0)
    encoder = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).state_dict()
    state = {**encoder, "mask_token": torch.randn(1, 1, 512), "decoder_embed.weight": torch.randn(512, 768),
             "decoder_pos_embed": torch.randn(1, 197, 512), "decoder_pred.bias": torch.randn(768)}
    path = tmp_path_factory.mktemp("mae") / "mae_pretrain_vit_base.pth"
    torch.save({"model": state}, path)
    return path, encoder


def test_mixvit_teacher_takes_every_encoder_tensor_but_pos_embed(mae_checkpoint, caplog):
    path, encoder = mae_checkpoint
    model = build_model("mixvit-b-corner")
    with caplog.at_level(logging.INFO, logger="distilkit.trackers.mixformerv2.mae"):
        missing, unexpected = load_mae_backbone(model, path)
    assert unexpected == []
    assert "pos_embed" in missing and "pos_embed_t" in missing and "blocks.0.attn.qkv.weight" not in missing
    backbone = model.backbone.state_dict()
    for key in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.11.mlp.fc2.bias", "cls_token", "norm.weight"):
        assert torch.equal(backbone[key], encoder[key]), key
    assert not torch.equal(backbone["pos_embed"], encoder["pos_embed"])  # skipped, as the official code does
    [line] = [r.getMessage() for r in caplog.records]
    assert "missing" in line and "unexpected none" in line


def test_token_head_student_reports_what_it_cannot_place(mae_checkpoint):
    path, encoder = mae_checkpoint
    model = build_model("mixformerv2-12l")  # no legacy cls_token / norm / head
    missing, unexpected = load_mae_backbone(model, path)
    assert sorted(unexpected) == ["cls_token", "norm.bias", "norm.weight"]
    assert "reg_tokens" in missing and not any(k.startswith("blocks.") for k in missing)
    assert torch.equal(model.backbone.blocks[5].attn.proj.weight, encoder["blocks.5.attn.proj.weight"])


def test_bad_checkpoints_are_one_line_errors(mae_checkpoint, tmp_path):
    path, _ = mae_checkpoint
    with pytest.raises(DistilkitError,
                       match=r"patch_embed.proj.weight has shape \(768, 3, 16, 16\) in the checkpoint but \(64, 3, 8, 8\)"):
        load_mae_backbone(build_model("mixvit-b-corner-tiny"), path)
    other = tmp_path / "detector.pth"
    torch.save({"model": {"backbone.conv1.weight": torch.zeros(4, 3, 3, 3)}}, other)
    with pytest.raises(DistilkitError, match="not an MAE ViT checkpoint"):
        load_mae_backbone(build_model("mixvit-b-corner-tiny"), other)
    with pytest.raises(DistilkitError, match="checkpoint not found"):
        load_mae_backbone(build_model("mixvit-b-corner-tiny"), tmp_path / "missing.pth")
    with pytest.raises(DistilkitError, match="has no `backbone`"):
        load_mae_backbone(torch.nn.Linear(2, 2), path)


def _tiny_mae(path) -> dict:
    """An MAE checkpoint at the width of tests/data/recipe-tiny.yaml's models (dim 32, 2 heads, patch 8, 12 blocks)."""
    torch.manual_seed(1)
    encoder = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, img_size=64, patch_size=8,
                                embed_dim=32, num_heads=2).state_dict()
    torch.save({"model": {**encoder, "mask_token": torch.zeros(1, 1, 32)}}, path)
    return encoder


def test_prune_init_backbone_starts_the_teacher_and_the_first_student(tmp_path, monkeypatch):
    import os

    import yaml

    import distilkit.trackers.mixformerv2.mae as mae
    from distilkit.cli import main

    tiny = os.path.join(os.path.dirname(__file__), "data", "recipe-tiny.yaml")
    data = yaml.safe_load(open(tiny, encoding="utf-8"))
    data["stages"] = data["stages"][:2]
    stages = data["budgets"]["tiny"]["stages"]
    data["budgets"]["tiny"]["stages"] = {k: v for k, v in stages.items() if k in ("teacher", "dense-to-sparse")}
    recipe = tmp_path / "two.yaml"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    encoder = _tiny_mae(tmp_path / "mae.pth")
    loaded = []
    real = mae.load_mae_backbone

    def spy(model, path):
        result = real(model, path)
        loaded.append(torch.equal(model.backbone.blocks[3].mlp.fc1.weight, encoder["blocks.3.mlp.fc1.weight"]))
        return result

    monkeypatch.setattr(mae, "load_mae_backbone", spy)  # where the family's load_backbone finds it
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--recipe", str(recipe), "--budget", "tiny", "--init-backbone", str(tmp_path / "mae.pth"),
              "--out", str(out)])
    assert exc.value.code == 0
    assert loaded == [True, True, True]  # checked at start, then the teacher and dense-to-sparse stages
    log = (out / "prune.log").read_text()
    assert "[teacher] backbone from --init-backbone" in log and "[dense-to-sparse] backbone from --init-backbone" in log
    assert "unexpected cls_token, norm.weight, norm.bias" in log  # the -tiny presets carry no legacy timm parameters


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "checkpoint not found"),
    (lambda p: torch.save({"model": {"conv.weight": torch.zeros(1)}}, p), "not an MAE ViT checkpoint"),
])
def test_prune_init_backbone_bad_files_fail_before_training(tmp_path, capsys, make, message):
    from distilkit.cli import main

    make(tmp_path / "mae.pth")
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--recipe", "mixformerv2-s", "--init-backbone", str(tmp_path / "mae.pth"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
