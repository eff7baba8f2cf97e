"""Box and score heads: T4 distribution head, score MLP, plain and pyramid corner heads.

Submodule names follow the official code (`layers`, `conv1_tl`, `adjust3_br`, ...) so official
checkpoints load key for key. All heads return normalised x1 y1 x2 y2 boxes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distilkit.errors import DistilkitError


class T4Head(nn.Module):
    """One MLP shared by the 4 prediction tokens (l, r, t, b): Linear-LN-ReLU-Linear(bins)-LN.

    Each side's coordinate is the expectation of softmax(logits) over bin positions i/bins
    (stride search_size/bins, normalised by the search size). Output sides are ordered l, t, r, b.
    """

    def __init__(self, dim: int, bins: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = dim if hidden is None else hidden
        self.bins = bins
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.ReLU()),
            nn.Sequential(nn.Linear(hidden, bins), nn.LayerNorm(bins)),
        )
        self.register_buffer("positions", torch.arange(bins, dtype=torch.float32) / bins, persistent=False)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """tokens (B, 4, D) in l, r, t, b order → boxes (B, 4) and side_logits (B, 4, bins) in l, t, r, b."""
        logits = self.layers(tokens)[:, [0, 2, 1, 3]]
        coords = (logits.softmax(dim=-1) * self.positions).sum(dim=-1)
        return {"boxes": coords, "side_logits": logits}


class ScoreHead(nn.Module):
    """Confidence logit from the prediction tokens: Linear-ReLU-Linear(1).

    variant "official": mean over tokens of MLP(token) (the released code, default);
    variant "paper": MLP(mean of tokens) (the paper's text). Same weights, same keys.
    """

    def __init__(self, dim: int, variant: str = "official") -> None:
        super().__init__()
        if variant not in ("official", "paper"):
            raise DistilkitError(f"unknown score head variant {variant!r}; valid: official, paper")
        self.variant = variant
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, dim), nn.ReLU()), nn.Linear(dim, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 4, D) → score logits (B,)."""
        if self.variant == "paper":
            return self.layers(tokens.mean(dim=1)).view(-1)
        return self.layers(tokens).mean(dim=1).view(-1)


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """3×3 conv (bias) - BatchNorm - ReLU, keys `.0` conv and `.1` BN as in the official heads."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=True), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def soft_argmax(score_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) heatmap → expected (x, y) normalised by the map side, and the flat logits (B, H·W)."""
    b, _, h, w = score_map.shape
    logits = score_map.reshape(b, h * w)
    prob = logits.softmax(dim=-1).view(b, h, w)
    xs = torch.arange(w, dtype=prob.dtype, device=prob.device) / w
    ys = torch.arange(h, dtype=prob.dtype, device=prob.device) / h
    return (prob.sum(dim=1) * xs).sum(-1), (prob.sum(dim=2) * ys).sum(-1), logits


class _CornerBase(nn.Module):
    """Shared output assembly for corner heads: two heatmaps → boxes and corner_logits."""

    def score_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        """feat (B, D, H, W) search feature map → boxes (B, 4) and corner_logits (B, 2, H'·W') (tl, br)."""
        tl, br = self.score_maps(feat)
        x1, y1, logit_tl = soft_argmax(tl)
        x2, y2, logit_br = soft_argmax(br)
        return {"boxes": torch.stack([x1, y1, x2, y2], dim=1), "corner_logits": torch.stack([logit_tl, logit_br], dim=1)}


class CornerHead(_CornerBase):
    """Plain corner head (STARK style): per corner 4 conv-BN-ReLU layers and a 1×1 conv, at feature resolution."""

    def __init__(self, dim: int, channel: int = 384) -> None:
        super().__init__()
        widths = [dim, channel, channel // 2, channel // 4, channel // 8]
        for corner in ("tl", "br"):
            for i in range(4):
                setattr(self, f"conv{i + 1}_{corner}", conv_bn_relu(widths[i], widths[i + 1]))
            setattr(self, f"conv5_{corner}", nn.Conv2d(channel // 8, 1, kernel_size=1))

    def _branch(self, x: torch.Tensor, corner: str) -> torch.Tensor:
        for i in range(1, 6):
            x = getattr(self, f"conv{i}_{corner}")(x)
        return x

    def score_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._branch(x, "tl"), self._branch(x, "br")


class PyCornerHead(_CornerBase):
    """Pyramid corner head (MixViT "CORNER_UP"): upsamples ×4 with nearest-neighbour steps, adding
    projections of the input (adjust1/2) and side outputs of coarse levels (adjust3/4) to the heatmap."""

    def __init__(self, dim: int, channel: int = 384) -> None:
        super().__init__()
        c = channel
        for corner in ("tl", "br"):
            setattr(self, f"conv1_{corner}", conv_bn_relu(dim, c))
            setattr(self, f"conv2_{corner}", conv_bn_relu(c, c // 2))
            setattr(self, f"conv3_{corner}", conv_bn_relu(c // 2, c // 4))
            setattr(self, f"conv4_{corner}", conv_bn_relu(c // 4, c // 8))
            setattr(self, f"conv5_{corner}", nn.Conv2d(c // 8, 1, kernel_size=1))
            setattr(self, f"adjust1_{corner}", conv_bn_relu(dim, c // 2))
            setattr(self, f"adjust2_{corner}", conv_bn_relu(dim, c // 4))
            setattr(self, f"adjust3_{corner}", nn.Sequential(
                conv_bn_relu(c // 2, c // 4), conv_bn_relu(c // 4, c // 8), conv_bn_relu(c // 8, 1)))
            setattr(self, f"adjust4_{corner}", nn.Sequential(conv_bn_relu(c // 4, c // 8), conv_bn_relu(c // 8, 1)))

    def _branch(self, x: torch.Tensor, corner: str) -> torch.Tensor:
        def m(name: str) -> nn.Module:
            return getattr(self, f"{name}_{corner}")

        up = F.interpolate
        x2 = m("conv2")(m("conv1")(x))
        x3 = m("conv3")(up(m("adjust1")(x), scale_factor=2) + up(x2, scale_factor=2))
        x4 = m("conv4")(up(m("adjust2")(x), scale_factor=4) + up(x3, scale_factor=2))
        return m("conv5")(x4) + up(m("adjust3")(x2), scale_factor=4) + up(m("adjust4")(x3), scale_factor=2)

    def score_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._branch(x, "tl"), self._branch(x, "br")


__all__ = ["T4Head", "ScoreHead", "CornerHead", "PyCornerHead", "soft_argmax", "conv_bn_relu"]
