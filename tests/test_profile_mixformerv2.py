"""MixFormerV2 counts: closed-form backbone MACs with asymmetric attention, and the head cost check."""

from __future__ import annotations

import pytest

from distilkit.commands.head_costs import SEED_PY_CORNER, SEED_T4, head_report, mixformerv2_expected_macs, seed_py_corner_formula
from distilkit.commands.models import resolve_model
from distilkit.profile import profile


def mixformerv2_macs(depth, dim, mlp_ratio, patch, template, search, bins, score_tokens=4):
    """(4 + 2r)·N·D² per block plus the pairs of asymmetric attention ((2T)² + (S + 4)·N, x2 for QKᵀ and
    AV, x D), the patch embedding of 2T + S patches, the T4 head on 4 tokens and the score head."""
    t2, s = 2 * (template // patch) ** 2, (search // patch) ** 2
    n = t2 + s + 4
    block = (4 + 2 * mlp_ratio) * n * dim * dim + 2 * dim * (t2 * t2 + (s + 4) * n)
    embed = (t2 + s) * 3 * patch * patch * dim
    t4 = 4 * (dim * dim + dim * bins)
    score = score_tokens * (dim * dim + dim)
    return depth * block + embed + t4 + score


def test_mixformerv2_s_exact():
    model, inputs = resolve_model("mixformerv2-s")
    prof = profile(model, inputs)
    assert prof.macs == mixformerv2_macs(4, 768, 1, 16, 112, 224, 96) == 4_822_035_456
    assert prof.params == 16_228_897  # measured on the official model
    assert prof.modules["box_head"].macs == 2_654_208
    assert prof.macs == mixformerv2_expected_macs(model)


@pytest.mark.parametrize("name", ["mixformerv2-b-tiny", "mixvit-b-tiny", "mixvit-b-corner-tiny"])
def test_tiny_variants_match_closed_form(name):
    model, inputs = resolve_model(name)
    prof = profile(model, inputs)
    assert prof.macs == mixformerv2_expected_macs(model)
    if name == "mixformerv2-b-tiny":
        assert prof.macs == mixformerv2_macs(8, 64, 4, 8, 32, 64, 48)


def test_head_costs_at_seed_dims():
    report = head_report(768, 18, 384)
    rows = {r.name.strip(): r for r in report.rows}
    t4 = rows["T4 head, 72 bins (linear)"]
    assert t4.measured == t4.expected == 4 * (768 * 768 + 768 * 72) == SEED_T4 == 2_580_480
    assert rows["T4 head, 96 bins (linear)"].measured == 4 * (768 * 768 + 768 * 96) == 2_654_208
    py = rows["Py-Corner head (conv, both corners)"]
    assert py.measured == py.expected == 4_543_579_008 and py.seed == SEED_PY_CORNER == 3_902_587_776
    plain = rows["plain corner head (conv, both corners)"]
    per_corner = (768 * 384 + 384 * 192 + 192 * 96 + 96 * 48) * 9 * 18 * 18 + 48 * 18 * 18
    assert plain.measured == plain.expected == 2 * per_corner == 2_284_308_864
    assert rows["seed's printed Py-Corner formula"].seed == seed_py_corner_formula() == 4_493_532_672
    assert rows["Py-Corner with adjust1 C_in=C/2, conv5 3x3"].expected == SEED_PY_CORNER
    assert report.ratio == pytest.approx(4_543_579_008 / 2_580_480)
    assert "3,902,587,776" in report.explanation and "4,493,532,672" in report.explanation
    assert all(r.ok for r in report.rows)


def test_head_costs_with_fvcore_beside():
    rows = {r.name: r for r in head_report(768, 18, 384, with_fvcore=True).rows}
    # fvcore adds LayerNorm (T4) or BatchNorm + upsampling (corner heads) to the same total (as measured on the official models)
    assert rows["T4 head, 72 bins (linear)"].fvcore == 2_597_280
    assert rows["T4 head, 96 bins (linear)"].fvcore == 2_671_488
    assert rows["Py-Corner head (conv, both corners)"].fvcore == 4_549_640_400
