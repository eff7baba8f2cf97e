"""MixFormerV2 head cost check (`distilkit flops --heads`) and closed-form MACs of MixFormerV2 models.

Measured values come from `distilkit.profile.profile` on real head modules built standalone at the
model's dims; expected values are computed here from the layer shapes (never from the counter);
seed values are the figures the paper's supplementary material states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The seed (paper supplementary, "Computation Loads of Different Localization Head").
SEED_T4 = 2_580_480  # 4 x (768 x 768 + 768 x 72)
SEED_PY_CORNER = 3_902_587_776
SEED_DIMS = {"dim": 768, "feat": 18, "channel": 384, "bins": 72}
# Its printed Py-Corner sum, term by term: (C_in, C_out, H_out, K), the whole sum doubled.
SEED_PY_CORNER_TERMS = (
    (768, 384, 18, 3), (384, 192, 18, 3), (384, 192, 18, 3), (192, 96, 36, 3), (192, 96, 36, 3),
    (384, 96, 18, 3), (96, 48, 72, 3), (48, 1, 72, 3), (192, 96, 18, 3), (96, 48, 18, 3),
    (96, 48, 18, 3), (96, 48, 18, 3), (96, 48, 36, 3), (96, 48, 36, 3), (48, 1, 36, 3),
)

# Py-Corner: resolution of each layer group relative to the input feature map (nearest x2 steps).
PY_CORNER_SCALE = {"conv1": 1, "conv2": 1, "adjust1": 1, "adjust2": 1, "adjust3": 1, "conv3": 2, "adjust4": 2, "conv4": 4,
                   "conv5": 4}


def seed_py_corner_formula() -> int:
    """The seed's printed Py-Corner formula, evaluated as printed."""
    return 2 * sum(cin * cout * h * h * k * k for cin, cout, h, k in SEED_PY_CORNER_TERMS)


def _conv_layers(head: Any) -> list[tuple[str, Any]]:
    from torch import nn

    return [(name, m) for name, m in head.named_modules() if isinstance(m, nn.Conv2d)]


def linear_head_macs(head: Any, tokens: int) -> int:
    """Expected MACs of an MLP head applied to `tokens` rows: tokens·Σ in·out over its Linear layers."""
    from torch import nn

    return sum(tokens * m.in_features * m.out_features for m in head.modules() if isinstance(m, nn.Linear))


def corner_head_macs(head: Any, feat: int, substitute: dict[str, tuple[int, int]] | None = None) -> int:
    """Expected conv MACs of a plain or pyramid corner head on a feat x feat map, from its conv shapes.

    `substitute` maps a layer group (e.g. "adjust1") to (C_in, kernel) to evaluate a variant."""
    from distilkit.trackers.mixformerv2 import PyCornerHead

    pyramid = isinstance(head, PyCornerHead)
    total = 0
    for name, conv in _conv_layers(head):
        group = name.split("_")[0]
        side = feat * (PY_CORNER_SCALE[group] if pyramid else 1)
        cin, k = (substitute or {}).get(group, (conv.in_channels, conv.kernel_size[0]))
        total += conv.out_channels * (cin // conv.groups) * k * k * side * side
    return total


@dataclass(frozen=True)
class HeadCost:
    """One row of the head cost check: counter-measured, analytic expectation, the seed's figure."""

    name: str
    measured: int | None
    expected: int | None
    seed: int | None = None
    note: str = ""
    fvcore: int | None = None

    @property
    def ok(self) -> bool:
        return self.measured is None or self.measured == self.expected


@dataclass(frozen=True)
class HeadReport:
    rows: list[HeadCost]
    dims: dict[str, int]
    ratio: float
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": "MACs (multiply-accumulates)",
            "dims": self.dims,
            "rows": [r.__dict__ | {"ok": r.ok} for r in self.rows],
            "ratio_py_corner_to_t4": self.ratio,
            "explanation": self.explanation,
        }


def _fvcore_heads(heads: dict[str, Any], dim: int, feat: int) -> dict[str, int]:
    """fvcore's totals for the same heads (real tensors: fvcore traces with the JIT)."""
    import torch

    from distilkit.profile.reference import fvcore_macs

    inputs = {"tokens": torch.randn(1, 4, dim), "fmap": torch.randn(1, dim, feat, feat)}
    return {key: fvcore_macs(head.to_empty(device="cpu"), inputs["tokens" if key.startswith("t4") else "fmap"])[""]
            for key, head in heads.items()}


def head_report(dim: int, feat: int, channel: int, with_fvcore: bool = False) -> HeadReport:
    """Measure T4 (72, 96 bins), Py-Corner and plain corner heads at (dim, feat x feat, channel);
    `with_fvcore` adds fvcore's totals for the same modules."""
    import torch

    from distilkit.profile import profile
    from distilkit.trackers.mixformerv2 import CornerHead, PyCornerHead, T4Head

    # On the meta device: every count depends on shapes only, so no arithmetic needs to run.
    with torch.device("meta"):
        tokens = torch.empty(1, 4, dim)
        fmap = torch.empty(1, dim, feat, feat)
        t4 = {bins: T4Head(dim, bins) for bins in (72, 96)}
        py, plain = PyCornerHead(dim, channel), CornerHead(dim, channel)
    measured = {bins: profile(h, tokens).macs for bins, h in t4.items()}
    py_macs, plain_macs = profile(py, fmap).macs, profile(plain, fmap).macs
    fv = _fvcore_heads({"t4_72": t4[72], "t4_96": t4[96], "py": py, "plain": plain}, dim, feat) if with_fvcore else {}
    seed_dims = (dim, feat, channel) == (SEED_DIMS["dim"], SEED_DIMS["feat"], SEED_DIMS["channel"])
    at = "" if seed_dims else " (seed figures are for D=768, 18x18 features, C=384)"
    formula = seed_py_corner_formula()
    stated_variant = corner_head_macs(py, feat, {"adjust1": (channel // 2, 3), "conv5": (channel // 8, 3)})
    rows = [
        HeadCost("T4 head, 72 bins (linear)", measured[72], linear_head_macs(t4[72], 4), SEED_T4,
                 "Load_T4 = 4x(768x768+768x72)", fv.get("t4_72")),
        HeadCost("T4 head, 96 bins (linear)", measured[96], linear_head_macs(t4[96], 4), fvcore=fv.get("t4_96")),
        HeadCost("Py-Corner head (conv, both corners)", py_macs, corner_head_macs(py, feat), SEED_PY_CORNER,
                 "Load_Py-Corner as stated", fv.get("py")),
        HeadCost("  seed's printed Py-Corner formula", None, None, formula, "evaluated as printed"),
        HeadCost("  Py-Corner with adjust1 C_in=C/2, conv5 3x3", None, stated_variant, SEED_PY_CORNER,
                 "reproduces the stated value" if stated_variant == SEED_PY_CORNER else "stated value at seed dims"),
        HeadCost("plain corner head (conv, both corners)", plain_macs, corner_head_macs(plain, feat), fvcore=fv.get("plain")),
    ]
    ratio = py_macs / measured[72]
    explanation = (
        f"The seed states Load_Py-Corner = {SEED_PY_CORNER:,} but its printed formula evaluates to {formula:,}: "
        "the printed sum lists different layers from the real head (its adjust terms read 384 or 192 channels, the real "
        "adjust1/adjust2 read the 768-channel input). "
        f"The real layer shapes give {corner_head_macs(py, feat):,} conv MACs{at}. The stated 3.9 B is reproduced exactly "
        f"if adjust1 is taken with {channel // 2} input channels (not {dim}) and conv5 as a 3x3 conv (not 1x1): "
        f"{stated_variant:,}. Bias, BatchNorm and the ten nearest-neighbour upsamplings are not MACs. "
        f"Either way Py-Corner costs {ratio:,.0f}x the T4 head (the seed says 'hundreds of times')."
    )
    return HeadReport(rows, {"dim": dim, "feat": feat, "channel": channel}, ratio, explanation)


def mixformerv2_expected_macs(model: Any) -> int:
    """Closed-form MACs of one full MixFormerV2 forward, from the live layer shapes and token counts.

    Per block: N·Σ(in·out) of qkv, proj, fc1, fc2 (= (4 + 2r)·N·D² unpruned) plus attention pairs
    (2T)² + (S + P)·N, each costing 2·D_attn (QKᵀ and AV); then patch embedding and heads."""
    cfg = model.config
    bb = model.backbone
    t2 = cfg.template_tokens * (1 + cfg.num_online_templates)
    s = cfg.search_feat_size ** 2
    p = cfg.num_pred_tokens
    n = t2 + s + p
    macs = 0
    for blk in bb.blocks:
        inner = blk.attn.qkv.out_features // 3
        macs += n * sum(m.in_features * m.out_features for m in (blk.attn.qkv, blk.attn.proj, blk.mlp.fc1, blk.mlp.fc2))
        macs += 2 * inner * (t2 * t2 + (s + p) * n)
    proj = bb.patch_embed.proj
    macs += (t2 + s) * proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1] * proj.out_channels
    if p:
        macs += linear_head_macs(model.box_head, p)
    else:
        macs += corner_head_macs(model.box_head, cfg.search_feat_size)
    if model.score_head is not None:
        macs += linear_head_macs(model.score_head, 1 if model.score_head.variant == "paper" else p)
    return macs
