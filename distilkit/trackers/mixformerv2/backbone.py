"""MixViT backbone with P-MAM asymmetric mixed attention (templates never look at the search).

Token layout: template (T), online templates (n·T), search (S), prediction tokens (0 or 4, l r t b).
Template queries attend to template keys only; search/prediction queries attend to all keys. Both
halves are separate `scaled_dot_product_attention` calls so FLOPs counters see the real pairs. The
template-cached path attends with `distilkit.kernels.qkv_prefix_attention` (native CPU kernel once loaded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distilkit.kernels import qkv_prefix_attention
from distilkit.trackers.mixformerv2.config import MixFormerV2Config, check_drop_path_rate


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed MAE-style 2-D sin-cos table (grid², dim), row-major tokens; as in the official code the
    first half of the channels encodes the column index, the second half the row index."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    cols, rows = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))

    def encode(pos: np.ndarray) -> np.ndarray:
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    table = np.concatenate([encode(cols), encode(rows)], axis=1)
    return torch.from_numpy(table).float()


@dataclass
class TemplateKV:
    """Per-layer template keys/values (B, heads, 2T, head_dim). Empty = record on the next call."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None


class PatchConv(nn.Conv2d):
    """Conv2d with kernel = stride = patch, run as one matmul over unfolded patches (the mkldnn
    convolution is several times slower for this shape on CPU). Same parameters and hooks as Conv2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.kernel_size[0]
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)
        out = F.linear(patches, self.weight.reshape(self.out_channels, -1), self.bias)
        return out.transpose(1, 2).reshape(b, self.out_channels, h // p, w // p)


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) → (B, H·W/p², D)."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = PatchConv(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class MixedAttention(nn.Module):
    """Asymmetric mixed attention; `cache` switches between full, template-recording and cached use."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, num_template: int, cache: TemplateKV | None = None,
                query_tail: int | None = None, *, attention_tail: int = 0) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: all tokens (cache None), template tokens only (empty cache: fills it) or search and
        prediction tokens only (filled cache: their keys are appended to the cached template ones).
        query_tail=k (cached use only): outputs only for the last k tokens, which still see all keys.
        attention_tail=k (full path only): returns (output, log-attention of the last k query tokens over
        all keys, (B, heads, k, N)), e.g. for distilling where prediction tokens look."""
        b, n, _ = x.shape
        if query_tail is not None and (cache is None or cache.k is None):
            raise ValueError("query_tail needs a filled template cache")
        if attention_tail and cache is not None:
            raise ValueError("attention_tail needs the full path (no template cache)")
        inner = self.qkv.out_features // 3
        if cache is not None and cache.k is not None:
            # search (+ prediction) tokens over [cached template keys; their own keys], no concatenation
            return self.proj(qkv_prefix_attention(self.qkv(x), cache.k, cache.v, self.num_heads, query_tail))
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, inner // self.num_heads).permute(2, 0, 3, 1, 4)
        if cache is None:
            out_t = F.scaled_dot_product_attention(q[:, :, :num_template], k[:, :, :num_template], v[:, :, :num_template])
            out_s = F.scaled_dot_product_attention(q[:, :, num_template:], k, v)
            out = torch.cat([out_t, out_s], dim=2)
        else:
            if n != num_template:
                raise ValueError(f"template recording expects {num_template} tokens, got {n}")
            cache.k, cache.v = k.contiguous(), v.contiguous()
            out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(b, n, inner))
        if not attention_tail:
            return out
        tail = q[:, :, n - attention_tail:]
        return out, (tail @ k.transpose(-1, -2) * tail.shape[-1] ** -0.5).log_softmax(dim=-1)


class Mlp(nn.Module):
    """fc1 → GELU → fc2 (timm naming, so width pruners and official checkpoints fit)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth as timm's DropPath: in training, each sample's branch is zeroed with probability
    `drop_prob` and the kept ones scaled by 1 / (1 - drop_prob); the identity in eval mode or at rate 0.
    (Not timm's class: importing timm costs the tracker seconds.)"""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class Block(nn.Module):
    """Pre-norm transformer block: x + drop_path1(attn(norm1(x))), then x + drop_path2(mlp(norm2(x)))
    (timm's layout; the drop paths are the identity unless training with a rate, see `MixViTBackbone.set_drop_path`)."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, qkv_bias: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = MixedAttention(dim, num_heads, qkv_bias)
        self.drop_path1 = DropPath()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden)
        self.drop_path2 = DropPath()

    def forward(self, x: torch.Tensor, num_template: int, cache: TemplateKV | None = None,
                query_tail: int | None = None, *, attention_tail: int = 0) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """query_tail=k (cached use only): update only the last k tokens (the prediction tokens of the
        final block); the other rows are returned unchanged, so the output keeps the input's shape.
        attention_tail=k (full path only): returns (output, the attention's log-attention of the last k tokens)."""
        if attention_tail:
            attended, attention = self.attn(self.norm1(x), num_template, cache, attention_tail=attention_tail)
            x = x + self.drop_path1(attended)
            return x + self.drop_path2(self.mlp(self.norm2(x))), attention
        if query_tail is None:
            x = x + self.drop_path1(self.attn(self.norm1(x), num_template, cache))
            return x + self.drop_path2(self.mlp(self.norm2(x)))
        y = x[:, x.shape[1] - query_tail:] + self.drop_path1(self.attn(self.norm1(x), num_template, cache, query_tail))
        y = y + self.drop_path2(self.mlp(self.norm2(y)))
        return torch.cat([x[:, : x.shape[1] - query_tail], y], dim=1)


class MixViTBackbone(nn.Module):
    """Patch embedding, fixed sin-cos positions, prediction tokens and the stack of mixed blocks."""

    def __init__(self, cfg: MixFormerV2Config) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.num_online = cfg.num_online_templates
        self.template_tokens = cfg.template_tokens
        self.patch_embed = PatchEmbed(cfg.patch_size, d)
        # Parameters (not buffers) with requires_grad=False, exactly like the official model.
        self.pos_embed_t = nn.Parameter(
            sincos_pos_embed_2d(d, cfg.template_size // cfg.patch_size).unsqueeze(0), requires_grad=False
        )
        self.pos_embed_s = nn.Parameter(
            sincos_pos_embed_2d(d, cfg.search_feat_size).unsqueeze(0), requires_grad=False
        )
        self.num_pred_tokens = cfg.num_pred_tokens
        if self.num_pred_tokens:
            self.reg_tokens = nn.Parameter(torch.zeros(1, self.num_pred_tokens, d))
            self.pos_embed_reg = nn.Parameter(torch.zeros(1, self.num_pred_tokens, d))
        self.blocks = nn.ModuleList(
            Block(d, cfg.num_heads, h, cfg.qkv_bias, cfg.norm_eps) for h in cfg.block_mlp_hidden
        )
        self.set_drop_path(cfg.drop_path_rate)
        if cfg.legacy_timm_params:
            legacy_tokens = (cfg.legacy_img_size // cfg.patch_size) ** 2 + 1
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d), requires_grad=False)
            self.pos_embed = nn.Parameter(torch.zeros(1, legacy_tokens, d), requires_grad=False)
            self.norm = nn.LayerNorm(d, eps=cfg.norm_eps).requires_grad_(False)
            self.head = nn.Linear(d, cfg.legacy_num_classes).requires_grad_(False)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.num_pred_tokens:
            nn.init.trunc_normal_(self.reg_tokens, std=0.02)

    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth rising linearly over the blocks, 0 at the first and `rate` at the last (timm's and
        the official rule, over the blocks there are now); only acts in training mode."""
        self.drop_path_rate = check_drop_path_rate(rate)
        rates = torch.linspace(0, self.drop_path_rate, len(self.blocks), device="cpu").tolist()  # builds may be on meta
        for blk, r in zip(self.blocks, rates):
            blk.drop_path1.drop_prob = blk.drop_path2.drop_prob = r

    def embed_templates(self, template: torch.Tensor, online: torch.Tensor) -> torch.Tensor:
        """(B,3,t,t) and (B,n,3,t,t) → (B, (1+n)·T, D) template tokens with positions."""
        b = template.shape[0]
        z = self.patch_embed(template) + self.pos_embed_t
        oz = self.patch_embed(online.flatten(0, 1)) + self.pos_embed_t
        return torch.cat([z, oz.reshape(b, -1, z.shape[-1])], dim=1)

    def embed_search(self, search: torch.Tensor) -> torch.Tensor:
        """(B,3,s,s) → (B, S + prediction tokens, D)."""
        x = self.patch_embed(search) + self.pos_embed_s
        if not self.num_pred_tokens:
            return x
        pred = (self.reg_tokens + self.pos_embed_reg).expand(x.shape[0], -1, -1)
        return torch.cat([x, pred], dim=1)

    @property
    def num_template_tokens(self) -> int:
        return self.template_tokens * (1 + self.num_online)

    def forward(self, template: torch.Tensor, online: torch.Tensor, search: torch.Tensor,
                return_features: bool = False, *, attention_tail: int = 0,
                ) -> tuple[torch.Tensor, list[torch.Tensor]] | tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Full forward over all tokens; returns the last token sequence and per-block outputs (empty unless
        `return_features`), and with attention_tail=k a third list: per block, the log-attention of the last
        k tokens over all keys (B, heads, k, N), as timm's `forward_intermediates` returns what it is asked for."""
        x = torch.cat([self.embed_templates(template, online), self.embed_search(search)], dim=1)
        nt = self.num_template_tokens
        feats, attentions = [], []
        for blk in self.blocks:
            if attention_tail:
                x, attention = blk(x, nt, attention_tail=attention_tail)
                attentions.append(attention)
            else:
                x = blk(x, nt)
            if return_features:
                feats.append(x)
        return (x, feats, attentions) if attention_tail else (x, feats)

    def encode_templates(self, template: torch.Tensor, online: torch.Tensor) -> tuple[list[TemplateKV], list[torch.Tensor]]:
        """Run the template tokens alone through every block, recording each layer's keys/values."""
        z = self.embed_templates(template, online)
        nt = z.shape[1]
        caches, outs = [], []
        for blk in self.blocks:
            cache = TemplateKV()
            z = blk(z, nt, cache)
            caches.append(cache)
            outs.append(z)
        return caches, outs

    def forward_cached(self, search: torch.Tensor, caches: list[TemplateKV], last_tail: int | None = None) -> list[torch.Tensor]:
        """Search and prediction tokens only, attending to cached template keys; returns per-block outputs.
        last_tail=k: the final block computes only the last k tokens (enough for token heads)."""
        x = self.embed_search(search)
        nt = self.num_template_tokens
        outs = []
        for i, (blk, cache) in enumerate(zip(self.blocks, caches)):
            x = blk(x, nt, cache, last_tail if i == len(self.blocks) - 1 else None)
            outs.append(x)
        return outs


__all__ = ["MixViTBackbone", "Block", "DropPath", "MixedAttention", "Mlp", "PatchEmbed", "TemplateKV", "sincos_pos_embed_2d"]
