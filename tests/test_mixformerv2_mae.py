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
    with pytest.raises(DistilkitError, match=r"patch_embed.proj.weight has shape \(768, 3, 16, 16\) in the checkpoint but \(64, 3, 8, 8\)"):
        load_mae_backbone(build_model("mixvit-b-corner-tiny"), path)
    other = tmp_path / "detector.pth"
    torch.save({"model": {"backbone.conv1.weight": torch.zeros(4, 3, 3, 3)}}, other)
    with pytest.raises(DistilkitError, match="not an MAE ViT checkpoint"):
        load_mae_backbone(build_model("mixvit-b-corner-tiny"), other)
    with pytest.raises(DistilkitError, match="checkpoint not found"):
        load_mae_backbone(build_model("mixvit-b-corner-tiny"), tmp_path / "missing.pth")
    with pytest.raises(DistilkitError, match="has no `backbone`"):
        load_mae_backbone(torch.nn.Linear(2, 2), path)
