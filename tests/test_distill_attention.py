"""attention_kd and MixFormerV2's prediction-token attention targets and recording."""

import math

import pytest
import torch

from distilkit.depth import ProgressiveDepthPruner
from distilkit.distill import attention_kd, corner_to_sides
from distilkit.errors import DistilkitError
from distilkit.trackers.mixformerv2 import build_model, corner_attention_targets, pool_bins
from distilkit.trackers.mixformerv2.backbone import TemplateKV


def _dist(*shape):
    p = torch.rand(*shape) + 0.01
    return p / p.sum(-1, keepdim=True)


def test_attention_kd_is_kl_and_counts_mass_outside_the_keys():
    target = _dist(2, 3, 5)
    assert attention_kd(target.log(), target).item() == pytest.approx(0.0, abs=1e-6)
    student = _dist(2, 3, 5)
    expected = (target * (target.log() - student.log())).sum(-1).mean()
    assert attention_kd(student.log(), target).item() == pytest.approx(expected.item(), rel=1e-5)
    # the same attention with half its mass on keys outside the slice costs log 2 more
    assert attention_kd(student.log() + math.log(0.5), target).item() == pytest.approx(expected.item() + math.log(2), rel=1e-5)


def test_attention_kd_broadcasts_targets_over_heads_and_has_gradients():
    logits = torch.randn(2, 4, 3, 6, requires_grad=True)
    target = _dist(2, 1, 3, 6)
    loss = attention_kd(logits.log_softmax(-1), target)
    loss.backward()
    assert logits.grad.abs().sum() > 0
    per_head = [attention_kd(logits.log_softmax(-1)[:, h:h + 1], target) for h in range(4)]
    assert loss.item() == pytest.approx(sum(per_head).item() / 4, rel=1e-5)


def test_attention_kd_rejects_mismatched_or_unnormalised_targets():
    with pytest.raises(DistilkitError, match="number of keys"):
        attention_kd(torch.zeros(2, 5), _dist(2, 4))
    with pytest.raises(DistilkitError, match="broadcast"):
        attention_kd(torch.zeros(2, 3, 5), _dist(4, 3, 5))
    with pytest.raises(DistilkitError, match="probability"):
        attention_kd(torch.zeros(2, 5), torch.randn(2, 5))


def test_pool_bins_keeps_mass_and_puts_it_in_the_covering_cell():
    probs = _dist(3, 4, 48)
    pooled = pool_bins(probs, 8)
    assert torch.allclose(pooled, probs.view(3, 4, 8, 6).sum(-1), atol=1e-6)
    uneven = pool_bins(probs, 14)  # 96/14-like uneven split
    assert torch.allclose(uneven.sum(-1), torch.ones(3, 4), atol=1e-5)
    one_hot = torch.zeros(1, 10)
    one_hot[0, 7] = 1.0  # bin [0.7, 0.8) lies in cell 2 of 3 ([0.667, 1))
    assert pool_bins(one_hot, 3).argmax().item() == 2


def test_corner_targets_point_each_token_at_its_own_corner():
    g = 8
    tl, br = torch.zeros(1, g, g), torch.zeros(1, g, g)
    tl[0, 2, 1] = 1.0  # y1 = row 2, x1 = col 1
    br[0, 6, 5] = 1.0  # y2 = row 6, x2 = col 5
    targets = corner_attention_targets(corner_to_sides(tl, br), g)
    assert targets.shape == (1, 4, g * g)
    peaks = [divmod(int(i), g) for i in targets[0].argmax(-1)]  # (row, col) per token l r t b
    assert peaks == [(2, 1), (6, 5), (2, 5), (6, 1)]
    assert torch.allclose(targets.sum(-1), torch.ones(1, 4))
    with pytest.raises(DistilkitError, match="l t r b"):
        corner_attention_targets(torch.zeros(1, 3, 8), g)


def test_mixformerv2_records_prediction_token_attention_only_when_asked():
    torch.manual_seed(0)
    model = build_model("mixformerv2-s-tiny")
    t, s = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64)
    plain = model(t, t, s)
    out = model(t, t, s, return_pred_attention=True)
    assert torch.equal(out["boxes"], plain["boxes"]) and "pred_attention" not in plain
    attn = out["pred_attention"]
    assert len(attn) == 4 and attn[0].shape == (2, 4, 4, 64)  # blocks; (B, heads, l r t b, search tokens)
    assert (attn[0].exp().sum(-1) < 1).all()  # the rest is on template and prediction tokens
    # equals the softmax of the last block's prediction-token queries against all keys
    blk, captured = model.backbone.blocks[0], {}
    handle = blk.norm1.register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
    model(t, t, s)
    handle.remove()
    x = captured["x"]
    q, k, _ = blk.attn.qkv(x).view(2, x.shape[1], 3, 4, 16).permute(2, 0, 3, 1, 4)
    ref = (q[:, :, -4:] @ k.transpose(-1, -2) / 4).log_softmax(-1)[..., 32:96]
    assert torch.allclose(attn[0], ref, atol=1e-5)
    x, feats, attentions = model.backbone(t, t.unsqueeze(1), s, attention_tail=4)  # an explicit return, no state
    assert not feats and torch.equal(attentions[0][..., 32:96], attn[0])
    assert torch.equal(x, model.backbone(t, t.unsqueeze(1), s)[0])
    assert not any(isinstance(v, torch.Tensor) for b in model.backbone.blocks for v in vars(b.attn).values())
    with pytest.raises(ValueError, match="attention_tail needs the full path"):
        model.backbone.blocks[0](x, 32, TemplateKV(), attention_tail=4)
    pruner = ProgressiveDepthPruner(model, [1], blocks="backbone.blocks", mode="block")  # block hooks see (x, attention)
    assert pruner.set_progress(20.0) == pytest.approx(0.5)
    pruned = model(t, t, s, return_pred_attention=True)
    assert torch.equal(pruned["boxes"], model(t, t, s)["boxes"]) and len(pruned["pred_attention"]) == 4
    pruner.remove()
    corner = build_model("mixvit-b-corner-tiny")
    with pytest.raises(DistilkitError, match="prediction tokens"):
        corner(t, t, s, return_pred_attention=True)
