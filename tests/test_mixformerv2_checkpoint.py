"""Official-layout checkpoints: load, report, and match an independent plain re-implementation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distilkit.errors import DistilkitError
from distilkit.trackers.mixformerv2 import build_model, load_official_checkpoint

pytestmark = pytest.mark.isa_sensitive  # float results: rerun under .ci/avx2.env

D, HEADS, P, TS, SS = 64, 4, 8, 32, 64  # the -tiny sizes



def official_state_dict(depth: int, mlp: int, head: str, bins: int = 48, score: bool = False,
                        channel: int = 32, legacy: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the key names and shapes of the official MixFormerV2 / MixViT code."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def put(key: str, *shape: int, scale: float = 0.1, positive: bool = False) -> None:
        t = torch.rand(*shape, generator=g) + 0.5 if positive else torch.randn(*shape, generator=g) * scale
        sd[key] = t

    put("backbone.patch_embed.proj.weight", D, 3, P, P, scale=0.05)
    put("backbone.patch_embed.proj.bias", D)
    put("backbone.pos_embed_t", 1, (TS // P) ** 2, D, scale=0.5)
    put("backbone.pos_embed_s", 1, (SS // P) ** 2, D, scale=0.5)
    if head == "MLP":
        put("backbone.reg_tokens", 1, 4, D, scale=1.0)
        put("backbone.pos_embed_reg", 1, 4, D, scale=0.5)
    if legacy:
        put("backbone.cls_token", 1, 1, D)
        put("backbone.pos_embed", 1, (224 // P) ** 2 + 1, D)
        put("backbone.norm.weight", D), put("backbone.norm.bias", D)
        put("backbone.head.weight", 1000, D), put("backbone.head.bias", 1000)
    for i in range(depth):
        b = f"backbone.blocks.{i}."
        put(b + "norm1.weight", D, positive=True), put(b + "norm1.bias", D)
        put(b + "attn.qkv.weight", 3 * D, D, scale=0.15), put(b + "attn.qkv.bias", 3 * D)
        put(b + "attn.proj.weight", D, D), put(b + "attn.proj.bias", D)
        put(b + "norm2.weight", D, positive=True), put(b + "norm2.bias", D)
        put(b + "mlp.fc1.weight", mlp, D), put(b + "mlp.fc1.bias", mlp)
        put(b + "mlp.fc2.weight", D, mlp), put(b + "mlp.fc2.bias", D)
    if head == "MLP":
        put("box_head.layers.0.0.weight", D, D), put("box_head.layers.0.0.bias", D)
        put("box_head.layers.0.1.weight", D, positive=True), put("box_head.layers.0.1.bias", D)
        put("box_head.layers.1.0.weight", bins, D), put("box_head.layers.1.0.bias", bins)
        put("box_head.layers.1.1.weight", bins, positive=True), put("box_head.layers.1.1.bias", bins)
        if score:
            put("score_head.layers.0.0.weight", D, D), put("score_head.layers.0.0.bias", D)
            put("score_head.layers.1.weight", 1, D), put("score_head.layers.1.bias", 1)
    else:
        c = channel

        def conv(key: str, cin: int, cout: int, k: int = 3, bn: bool = True) -> None:
            put(key + (".0.weight" if bn else ".weight"), cout, cin, k, k, scale=(2 / (cin * k * k)) ** 0.5)
            put(key + (".0.bias" if bn else ".bias"), cout)
            if bn:
                put(key + ".1.weight", cout, positive=True), put(key + ".1.bias", cout)
                put(key + ".1.running_mean", cout), put(key + ".1.running_var", cout, positive=True)
                sd[key + ".1.num_batches_tracked"] = torch.tensor(7)

        for corner in ("tl", "br"):
            h = "box_head."
            conv(f"{h}conv1_{corner}", D, c), conv(f"{h}conv2_{corner}", c, c // 2)
            conv(f"{h}conv3_{corner}", c // 2, c // 4), conv(f"{h}conv4_{corner}", c // 4, c // 8)
            conv(f"{h}conv5_{corner}", c // 8, 1, k=1, bn=False)
            if head == "CORNER_UP":
                conv(f"{h}adjust1_{corner}", D, c // 2), conv(f"{h}adjust2_{corner}", D, c // 4)
                conv(f"{h}adjust3_{corner}.0", c // 2, c // 4), conv(f"{h}adjust3_{corner}.1", c // 4, c // 8)
                conv(f"{h}adjust3_{corner}.2", c // 8, 1)
                conv(f"{h}adjust4_{corner}.0", c // 4, c // 8), conv(f"{h}adjust4_{corner}.1", c // 8, 1)
    return sd


def reference_forward(sd: dict[str, torch.Tensor], depth: int, head: str, z: torch.Tensor, oz: torch.Tensor,
                      x: torch.Tensor, bins: int = 48) -> dict[str, torch.Tensor]:
    """The official computation written out plainly: explicit softmax attention over
    [template, online template, search, (4 reg tokens)], then the official head math."""
    B = z.shape[0]

    def embed(img: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(img, sd["backbone.patch_embed.proj.weight"], sd["backbone.patch_embed.proj.bias"], stride=P)
        return y.flatten(2).transpose(1, 2)

    t_tok = embed(z) + sd["backbone.pos_embed_t"]
    ot_tok = embed(oz) + sd["backbone.pos_embed_t"]
    s_tok = embed(x) + sd["backbone.pos_embed_s"]
    parts = [t_tok, ot_tok, s_tok]
    if head == "MLP":
        parts.append((sd["backbone.reg_tokens"] + sd["backbone.pos_embed_reg"]).expand(B, -1, -1))
    h = torch.cat(parts, dim=1)
    n_t = 2 * t_tok.shape[1]
    N = h.shape[1]
    for i in range(depth):
        b = f"backbone.blocks.{i}."
        y = F.layer_norm(h, (D,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps=1e-6)
        qkv = (y @ sd[b + "attn.qkv.weight"].T + sd[b + "attn.qkv.bias"]).reshape(B, N, 3, HEADS, D // HEADS)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        scale = (D // HEADS) ** -0.5
        a_t = ((q[:, :, :n_t] @ k[:, :, :n_t].transpose(-2, -1)) * scale).softmax(-1) @ v[:, :, :n_t]
        a_s = ((q[:, :, n_t:] @ k.transpose(-2, -1)) * scale).softmax(-1) @ v
        a = torch.cat([a_t, a_s], dim=2).transpose(1, 2).reshape(B, N, D)
        h = h + a @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        y = F.layer_norm(h, (D,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps=1e-6)
        y = F.gelu(y @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        h = h + y @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]

    out: dict[str, torch.Tensor] = {}
    if head == "MLP":
        reg = h[:, -4:]

        def mlp_head(tok: torch.Tensor) -> torch.Tensor:
            y = tok @ sd["box_head.layers.0.0.weight"].T + sd["box_head.layers.0.0.bias"]
            y = F.relu(F.layer_norm(y, (D,), sd["box_head.layers.0.1.weight"], sd["box_head.layers.0.1.bias"]))
            y = y @ sd["box_head.layers.1.0.weight"].T + sd["box_head.layers.1.0.bias"]
            return F.layer_norm(y, (bins,), sd["box_head.layers.1.1.weight"], sd["box_head.layers.1.1.bias"])

        stride = SS / bins
        indice = torch.arange(bins).float() * stride
        score_l, score_r, score_t, score_b = (mlp_head(reg[:, j]) for j in range(4))
        coords = [(indice * s.softmax(-1)).sum(-1) for s in (score_l, score_t, score_r, score_b)]
        out["boxes"] = torch.stack(coords, dim=1) / (bins * stride)
        out["side_logits"] = torch.stack([score_l, score_t, score_r, score_b], dim=1)
        if "score_head.layers.1.weight" in sd:
            y = F.relu(reg @ sd["score_head.layers.0.0.weight"].T + sd["score_head.layers.0.0.bias"])
            out["score"] = (y @ sd["score_head.layers.1.weight"].T + sd["score_head.layers.1.bias"]).mean(1).view(-1)
        return out

    fs = SS // P
    feat = h[:, n_t:].transpose(1, 2).reshape(B, D, fs, fs)

    def cbr(key: str, y: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(y, sd[key + ".0.weight"], sd[key + ".0.bias"], padding=1)
        y = F.batch_norm(y, sd[key + ".1.running_mean"], sd[key + ".1.running_var"],
                         sd[key + ".1.weight"], sd[key + ".1.bias"], training=False, eps=1e-5)
        return F.relu(y)

    def conv5(corner: str, y: torch.Tensor) -> torch.Tensor:
        return F.conv2d(y, sd[f"box_head.conv5_{corner}.weight"], sd[f"box_head.conv5_{corner}.bias"])

    maps = []
    for corner in ("tl", "br"):
        k = lambda name: f"box_head.{name}_{corner}"  # noqa: E731
        if head == "CORNER":
            y = feat
            for j in range(1, 5):
                y = cbr(k(f"conv{j}"), y)
            maps.append(conv5(corner, y))
            continue
        up = F.interpolate
        x1 = cbr(k("conv1"), feat)
        x2 = cbr(k("conv2"), x1)
        x3 = cbr(k("conv3"), up(cbr(k("adjust1"), feat), scale_factor=2) + up(x2, scale_factor=2))
        x4 = cbr(k("conv4"), up(cbr(k("adjust2"), feat), scale_factor=4) + up(x3, scale_factor=2))
        a3 = cbr(k("adjust3") + ".2", cbr(k("adjust3") + ".1", cbr(k("adjust3") + ".0", x2)))
        a4 = cbr(k("adjust4") + ".1", cbr(k("adjust4") + ".0", x3))
        maps.append(conv5(corner, x4) + up(a3, scale_factor=4) + up(a4, scale_factor=2))
    side = maps[0].shape[-1]
    stride = SS / side
    idx = torch.arange(side).view(-1, 1) * stride
    coord_x = idx.repeat((side, 1)).view(-1)
    coord_y = idx.repeat((1, side)).view(-1)
    coords, logits = [], []
    for m in maps:
        vec = m.reshape(B, -1)
        prob = vec.softmax(1)
        coords += [(coord_x * prob).sum(1), (coord_y * prob).sum(1)]
        logits.append(vec)
    out["boxes"] = torch.stack(coords, dim=1) / (side * stride)
    out["corner_logits"] = torch.stack(logits, dim=1)
    return out


CASES = [
    ("mixformerv2-b-tiny", dict(depth=8, mlp=256, head="MLP", score=True), {}),
    ("mixformerv2-s-tiny", dict(depth=4, mlp=64, head="MLP", score=True), {}),
    ("mixvit-b-tiny", dict(depth=12, mlp=256, head="CORNER_UP", legacy=True), {"legacy_timm_params": True}),
    ("mixvit-b-corner-tiny", dict(depth=12, mlp=256, head="CORNER"), {}),
]


@pytest.mark.parametrize("name, layout, overrides", CASES)
def test_official_checkpoint_matches_reference(tmp_path: Path, name: str, layout: dict, overrides: dict) -> None:
    sd = official_state_dict(**layout)
    path = tmp_path / "MixFormerV2.pth.tar"
    torch.save({"net": sd, "epoch": 40}, path)
    model = build_model(name, **overrides).eval()
    report = load_official_checkpoint(model, path, strict=True)
    assert report.ok and report.loaded == len(sd)

    g = torch.Generator().manual_seed(3)
    z, oz = torch.randn(2, 3, TS, TS, generator=g), torch.randn(2, 3, TS, TS, generator=g)
    x = torch.randn(2, 3, SS, SS, generator=g)
    with torch.no_grad():
        ours = model(z, oz, x)
        model.set_templates(z, oz)
        cached = model.forward_search(x)
    ref = reference_forward(sd, layout["depth"], layout["head"], z, oz, x)
    assert set(ref) <= set(ours)
    for key, value in ref.items():
        assert torch.allclose(ours[key], value, atol=1e-4, rtol=0), (key, (ours[key] - value).abs().max())
        assert torch.allclose(cached[key], value, atol=1e-4, rtol=0), key


def test_module_prefix_missing_pos_embed_and_report(tmp_path: Path) -> None:
    sd = official_state_dict(depth=4, mlp=64, head="MLP", score=True)
    del sd["backbone.pos_embed_t"], sd["backbone.pos_embed_s"]  # as written by the official convert_ckpt
    del sd["score_head.layers.1.bias"]
    sd["backbone.mask_token"] = torch.zeros(1, 1, D)
    path = tmp_path / "ddp.pth.tar"
    torch.save({"net": {"module." + k: v for k, v in sd.items()}}, path)
    model = build_model("mixformerv2-s-tiny")
    report = load_official_checkpoint(model, path)
    assert report.missing == ["score_head.layers.1.bias"]
    assert report.unexpected == ["backbone.mask_token"]
    assert sorted(report.rebuilt) == ["backbone.pos_embed_s", "backbone.pos_embed_t"]
    assert torch.equal(model.backbone.blocks[3].mlp.fc2.weight, sd["backbone.blocks.3.mlp.fc2.weight"])
    with pytest.raises(DistilkitError, match="missing"):
        load_official_checkpoint(model, path, strict=True)


def test_bad_checkpoints_raise(tmp_path: Path) -> None:
    model = build_model("mixformerv2-s-tiny")
    sd = official_state_dict(depth=4, mlp=256, head="MLP", score=True)  # MLP ratio 4 into a ratio-1 model
    path = tmp_path / "wrong.pth.tar"
    torch.save({"net": sd}, path)
    with pytest.raises(DistilkitError, match=r"backbone.blocks.0.mlp.fc1.weight: checkpoint \(256, 64\) vs model \(64, 64\)"):
        load_official_checkpoint(model, path)
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DistilkitError, match="cannot read checkpoint"):
        load_official_checkpoint(model, junk)
    with pytest.raises(DistilkitError, match="not found"):
        load_official_checkpoint(model, tmp_path / "absent.pth.tar")
    torch.save({"net": [1, 2]}, path)
    with pytest.raises(DistilkitError, match="state dict"):
        load_official_checkpoint(model, path)
    (tmp_path / "empty.pth.tar").write_bytes(b"")
    with pytest.raises(DistilkitError, match="is an empty file"):
        load_official_checkpoint(model, tmp_path / "empty.pth.tar")
    torch.save({"net": {"classifier.weight": torch.zeros(2, 2)}}, path)  # another model's weights
    with pytest.raises(DistilkitError,
                       match=r"none of its 1 tensors matches a key of the model \(first: \['classifier.weight'\]\)"):
        load_official_checkpoint(model, path)
    torch.save({"net": Path("x")}, path)  # weights_only refuses pickled objects: the error stays one line
    with pytest.raises(DistilkitError, match="cannot read checkpoint .*holds pickled objects, which are never loaded") as err:
        load_official_checkpoint(model, path)
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)
    assert "weights_only" not in str(err.value)  # torch's advice to switch the safety off is not passed on
