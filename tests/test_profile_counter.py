"""profile(): exact MACs for linear/conv/matmul/attention, other ops kept apart, per-module attribution."""

from __future__ import annotations

import json
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from distilkit.errors import DistilkitError
from distilkit.profile import Profile, UncountedOpsWarning, attention_pairs, profile
from distilkit.profile.analytic import layer_macs
from distilkit.profile.reference import fvcore_macs


def vit_macs(depth: int, dim: int, tokens: int, patches: int, classes: int = 1000, mlp_ratio: int = 4) -> int:
    """(4 + 2r)·N·D² + 2·N²·D per block, patch embedding 3·16·16·D per patch, classifier D·classes."""
    block = (4 + 2 * mlp_ratio) * tokens * dim * dim + 2 * tokens * tokens * dim
    return depth * block + patches * (3 * 16 * 16) * dim + dim * classes


@pytest.fixture(scope="module")
def vit_small():
    return timm.create_model("vit_small_patch16_224", pretrained=False)


@pytest.fixture(scope="module")
def vit_tiny():
    return timm.create_model("vit_tiny_patch16_224", pretrained=False)


def test_vit_base_exact():
    model = timm.create_model("vit_base_patch16_224", pretrained=False)
    prof = profile(model, torch.randn(1, 3, 224, 224))
    assert prof.macs == vit_macs(12, 768, 197, 196) == 17_563_828_224
    assert prof.flops == 2 * prof.macs
    assert prof.params == sum(p.numel() for p in model.parameters())


def test_vit_small_exact_and_per_module(vit_small):
    prof = profile(vit_small, torch.randn(1, 3, 224, 224))
    assert prof.macs == vit_macs(12, 384, 197, 196)
    n, d = 197, 384
    assert prof.modules["blocks.3.attn"].macs == 4 * n * d * d + 2 * n * n * d  # qkv + proj + QK^T + AV
    assert prof.modules["blocks.3.mlp"].macs == 8 * n * d * d
    assert prof.modules["blocks"].macs == sum(prof.modules[f"blocks.{i}"].macs for i in range(12))
    assert prof.modules[""].macs == prof.macs
    # norms / GELU / residual adds are element counts, never MACs
    assert prof.other_ops["layer_norm"] == 25 * n * d
    assert prof.other_ops["gelu"] == 12 * n * 4 * d
    assert prof.modules["norm"].macs == 0 and prof.modules["norm"].other_ops == {"layer_norm": n * d}
    assert prof.uncounted_ops == {}


def test_counter_agrees_with_layer_shapes(vit_tiny):
    prof = profile(vit_tiny, torch.randn(1, 3, 224, 224))
    expected = layer_macs(vit_tiny, torch.randn(1, 3, 224, 224))
    assert len(expected) == 1 + 12 * 4 + 1
    assert all(prof.modules[name].macs == macs for name, macs in expected.items())


def test_conv_with_bias_and_groups():
    x = torch.randn(2, 8, 10, 10)
    assert profile(nn.Conv2d(8, 16, 3, padding=1, bias=True), x).macs == 2 * 16 * 10 * 10 * 8 * 9
    assert profile(nn.Conv2d(8, 16, 3, padding=1, groups=4), x).macs == 2 * 16 * 10 * 10 * 2 * 9
    assert profile(nn.Conv2d(8, 8, 5, stride=2, padding=2, groups=8), x).macs == 2 * 8 * 5 * 5 * 25  # depthwise
    assert profile(nn.Conv1d(8, 4, 3), torch.randn(1, 8, 12)).macs == 4 * 10 * 8 * 3
    assert profile(nn.ConvTranspose2d(8, 4, 2, stride=2), x).macs == 2 * 8 * 10 * 10 * 4 * 4


def test_linear_on_3d_input_and_matmuls():
    assert profile(nn.Linear(7, 3), torch.randn(2, 5, 7)).macs == 2 * 5 * 7 * 3
    assert profile(nn.Linear(7, 3, bias=False), torch.randn(4, 2, 5, 7)).macs == 4 * 2 * 5 * 7 * 3

    class Products(nn.Module):
        def forward(self, q, k, a, v):
            s = torch.einsum("bhqd,bhkd->bhqk", q, k)  # 2·3·5·6·4
            t = q @ k.transpose(-1, -2)  # same
            u = torch.bmm(a, a.transpose(1, 2))  # 4·6·8·6
            w = torch.mv(a[0], v)  # 6·8
            return s, t, u, w

    q, k = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 6, 4)
    prof = profile(Products(), (q, k, torch.randn(4, 6, 8), torch.randn(8)))
    assert prof.macs == 2 * (2 * 3 * 5 * 6 * 4) + 4 * 6 * 8 * 6 + 6 * 8


class Attend(nn.Module):
    def forward(self, q, k, v, mask=None, causal=False):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def test_sdpa_counts_pairs():
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 16)
    dense = 2 * 3 * 5 * 7 * (8 + 16)
    assert profile(Attend(), (q, k, v)).macs == dense
    mask = torch.rand(5, 7) > 0.5
    mask[:, 0] = True
    assert profile(Attend(), (q, k, v, mask)).macs == 2 * 3 * int(mask.sum()) * (8 + 16)
    additive = torch.zeros(5, 7).masked_fill(~mask, float("-inf"))
    assert profile(Attend(), (q, k, v, additive)).macs == 2 * 3 * int(mask.sum()) * (8 + 16)
    qs = torch.randn(2, 3, 7, 8)
    assert profile(Attend(), {"q": qs, "k": k, "v": v, "causal": True}).macs == 2 * 3 * (7 * 8 // 2) * (8 + 16)
    assert attention_pairs(3, 5, None, True, (1,)) == 1 + 2 + 3


def test_asymmetric_attention_two_calls_equals_bool_mask():
    t, n, d = 6, 10, 8
    q = k = v = torch.randn(1, 2, n, d)

    class TwoCalls(nn.Module):
        def forward(self, q, k, v):
            a = F.scaled_dot_product_attention(q[:, :, :t], k[:, :, :t], v[:, :, :t])
            return torch.cat([a, F.scaled_dot_product_attention(q[:, :, t:], k, v)], dim=2)

    mask = torch.ones(n, n, dtype=torch.bool)
    mask[:t, t:] = False
    expected = 2 * (t * t + (n - t) * n) * 2 * d
    assert profile(TwoCalls(), (q, k, v)).macs == expected == profile(Attend(), (q, k, v, mask)).macs


def test_other_ops_are_not_macs():
    model = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU(), nn.Upsample(scale_factor=2), nn.GroupNorm(2, 4), nn.Softmax(dim=-1))
    prof = profile(model, torch.randn(1, 4, 3, 3))
    assert prof.macs == 0
    assert prof.other_ops == {"batch_norm": 36, "relu": 36, "interpolate": 144, "group_norm": 144, "softmax": 144}


def test_torch_transformer_layers_counted_exactly_despite_their_fused_fast_path():
    """In eval mode nn.MultiheadAttention / nn.TransformerEncoderLayer run one fused op the counter cannot see."""
    d, ff, n, b = 16, 24, 5, 2
    layer = nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=ff, batch_first=True)
    attn = nn.MultiheadAttention(d, 4, batch_first=True)
    x = torch.randn(b, n, d)
    attention = b * (4 * n * d * d + 2 * n * n * d)  # in/out projections, QK^T and AV
    assert torch.backends.mha.get_fastpath_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncountedOpsWarning)
        assert profile(attn, (x, x, x)).macs == attention
        assert profile(layer, x).macs == attention + b * n * 2 * d * ff
    assert torch.backends.mha.get_fastpath_enabled()  # restored


def test_uncounted_ops_are_reported_and_warned():
    class Fft(nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x).abs()

    with pytest.warns(UncountedOpsWarning, match="_fft_r2c"):
        prof = profile(Fft(), torch.randn(8))
    assert "_fft_r2c" in prof.uncounted_ops


def test_inputs_forms_mode_restore_and_params():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    model.train()
    x = torch.randn(3, 4)
    a, b = profile(model, x), profile(model, (x,))
    assert a.macs == b.macs == 3 * (16 + 8) and model.training
    assert (a.params, a.trainable_params) == (20 + 10, 10)
    with pytest.raises(DistilkitError):
        profile(model, 3.0)


def test_json_and_table(vit_small):
    prof = profile(vit_small, torch.randn(1, 3, 224, 224))
    data = json.loads(prof.to_json())
    for key in ("params", "macs", "flops", "other_ops", "modules", "units"):
        assert key in data
    assert data["macs"] == prof.macs and data["flops"] == 2 * prof.macs
    assert data["params"] == {"total": prof.params, "trainable": prof.trainable_params}
    assert data["modules"]["blocks.0.attn"]["macs"] == prof.modules["blocks.0.attn"].macs
    assert "2 x MACs" in data["units"]["flops"]
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(prof.table(depth=1))
    text = console.export_text()
    assert "blocks" in text and "blocks.0" not in text and f"{prof.macs:,}" in text
    assert isinstance(prof, Profile)


def test_fvcore_reference_is_keyed_like_ours(vit_tiny):
    x = torch.randn(1, 3, 224, 224)
    ours, theirs = profile(vit_tiny, x), fvcore_macs(vit_tiny, x)
    assert theirs["blocks.0.mlp"] == ours.modules["blocks.0.mlp"].macs  # linears agree exactly
    attention = 2 * 197 * 197 * 192  # QK^T + AV of one block: fvcore skips scaled_dot_product_attention
    assert theirs["blocks.0.attn"] == ours.modules["blocks.0.attn"].macs - attention
    assert theirs[""] < ours.macs


def test_containers_never_called_get_their_childrens_sum():
    """A ModuleList is iterated, never called: FlopCounterMode sees only its children."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for blk in self.blocks:
                x = blk(x)
            return self.head(x)

    prof = profile(Net(), torch.randn(5, 8))
    assert prof.modules["blocks.0"].macs == 5 * 8 * 8
    assert prof.modules["blocks"].macs == 3 * 5 * 8 * 8
    assert prof.macs == prof.modules[""].macs == 3 * 5 * 8 * 8 + 5 * 8 * 2
