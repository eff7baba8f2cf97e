"""MixFormerV2 / MixViT tracking model: backbone + box head (+ score head), full and cached forward."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distilkit.compiled import FrozenFunction
from distilkit.errors import DistilkitError
from distilkit.factories import register_factory
from distilkit.fingerprint import ModuleFingerprint
from distilkit.kernels import load_native
from distilkit.trackers.mixformerv2.backbone import MixViTBackbone, TemplateKV
from distilkit.trackers.mixformerv2.config import MixFormerV2Config, preset
from distilkit.trackers.mixformerv2.heads import CornerHead, PyCornerHead, ScoreHead, T4Head

FACTORY = "distilkit.trackers.mixformerv2:build_model_from_config"


def _check_image(t: torch.Tensor, size: int, what: str, dtype: torch.dtype, leading: int = 1) -> None:
    """Raise DistilkitError unless t is a (B, [n,] 3, size, size) tensor of the model's `dtype`."""
    expected = (3, size, size)
    if not isinstance(t, torch.Tensor) or t.dim() != 3 + leading or tuple(t.shape[-3:]) != expected:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        lead = "B, " if leading == 1 else "B, n, "
        raise DistilkitError(f"{what}: expected shape ({lead}3, {size}, {size}), got {got}")
    if t.dtype != dtype:
        raise DistilkitError(f"{what}: expected a normalised {dtype} image tensor (the model's dtype), got {t.dtype}")


@dataclass
class CachedTemplates:
    """Template images and what `set_templates` computed from them: per-layer keys/values and outputs,
    with a fingerprint of the weights they were computed with."""

    template: torch.Tensor
    online: torch.Tensor
    layers: list[TemplateKV]
    outputs: list[torch.Tensor]
    weights: ModuleFingerprint


class MixFormerV2(nn.Module):
    """Tracking model. forward(template, online_template, search) → dict (see `forward`)."""

    def __init__(self, config: MixFormerV2Config) -> None:
        super().__init__()
        self._base_config = config
        self.backbone = MixViTBackbone(config)
        if config.head == "t4":
            self.box_head: nn.Module = T4Head(config.embed_dim, config.bins, config.head_hidden)
        elif config.head == "corner":
            self.box_head = CornerHead(config.embed_dim, config.corner_channel)
        else:
            self.box_head = PyCornerHead(config.embed_dim, config.corner_channel)
        self.score_head = ScoreHead(config.embed_dim, config.score_variant) if config.score_head else None
        self._templates: CachedTemplates | None = None
        self._compiled_search: FrozenFunction | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave the compiled search step (bound to this instance) and the template
        cache (it may hold autograd graph, and it watches this instance's weights) behind: call
        `set_templates` on the copy."""
        state = super().__getstate__()
        state["_compiled_search"] = None
        state["_templates"] = None
        return state

    @property
    def config(self) -> MixFormerV2Config:
        """The architecture as it is now (depth/width read from the modules, so pruning shows)."""
        return self.live_config()

    # inputs ------------------------------------------------------------------------------
    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype inputs must have: that of the weights (a float64 image would fail inside a matmul)."""
        return self.backbone.patch_embed.proj.weight.dtype

    def _online(self, online: torch.Tensor) -> torch.Tensor:
        """Accept (B,3,t,t) for one online template or (B,n,3,t,t); return (B,n,3,t,t)."""
        n, t = self._base_config.num_online_templates, self._base_config.template_size
        if isinstance(online, torch.Tensor) and online.dim() == 4 and n == 1:
            online = online.unsqueeze(1)
        _check_image(online, t, "online_template", self.input_dtype, leading=2)
        if online.shape[1] != n:
            raise DistilkitError(f"online_template: expected {n} online template(s), got {online.shape[1]}")
        return online

    def _check_templates(self, template: torch.Tensor, online: torch.Tensor) -> torch.Tensor:
        _check_image(template, self._base_config.template_size, "template", self.input_dtype)
        online = self._online(online)
        if online.shape[0] != template.shape[0]:
            raise DistilkitError(f"template batch {template.shape[0]} != online_template batch {online.shape[0]}")
        return online

    # heads -------------------------------------------------------------------------------
    def _heads(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """tokens: search (+ prediction) tokens after the last block."""
        cfg = self._base_config
        s = cfg.search_feat_size
        n_pred = cfg.num_pred_tokens
        if n_pred:
            pred = tokens[:, -n_pred:]
            out = self.box_head(pred)
            if self.score_head is not None:
                out["score"] = self.score_head(pred)
            return out
        feat = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], s, s)
        return self.box_head(feat)

    # forward paths -----------------------------------------------------------------------
    def forward(self, template: torch.Tensor, online_template: torch.Tensor, search: torch.Tensor,
                return_features: bool = False,
                return_pred_attention: bool = False) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Full forward. Returns boxes (B,4 normalised xyxy); side_logits (B,4,bins; l t r b) for T4 or
        corner_logits (B,2,H·W; tl, br) for corner heads; score (B,) logit with a score head;
        features (per-block outputs, full token sequence) when return_features; pred_attention (per
        block, (B, heads, 4, S) log-attention of the prediction tokens l r t b over the S search tokens,
        row-major; the rest of the mass is on template and prediction tokens) when return_pred_attention."""
        online = self._check_templates(template, online_template)
        _check_image(search, self._base_config.search_size, "search", self.input_dtype)
        if search.shape[0] != template.shape[0]:
            raise DistilkitError(f"search batch {search.shape[0]} != template batch {template.shape[0]}")
        n_pred = self._base_config.num_pred_tokens
        if return_pred_attention and not n_pred:
            raise DistilkitError("return_pred_attention needs prediction tokens (a T4 head); this model has a corner head")
        if return_pred_attention:
            x, feats, attentions = self.backbone(template, online, search, return_features, attention_tail=n_pred)
        else:
            x, feats = self.backbone(template, online, search, return_features)
        nt = self.backbone.num_template_tokens
        out: dict[str, Any] = self._heads(x[:, nt:])
        if return_features:
            out["features"] = feats
        if return_pred_attention:
            s = self._base_config.search_feat_size ** 2
            out["pred_attention"] = [attention[..., nt:nt + s] for attention in attentions]
        return out

    def set_templates(self, template: torch.Tensor, online_template: torch.Tensor) -> CachedTemplates:
        """Compute every layer's template keys/values once; `forward_search` then reuses them (and
        recomputes them first if the weights changed since, e.g. by an optimizer step). Returns the
        cache: several users of one model (one tracker per target) each keep theirs and pass it as
        `forward_search(..., templates=cache)`, so that none of them runs on another's templates."""
        self._templates = self._encode_templates(template, self._check_templates(template, online_template))
        return self._templates

    def _encode_templates(self, template: torch.Tensor, online: torch.Tensor) -> CachedTemplates:
        layers, outputs = self.backbone.encode_templates(template, online)
        return CachedTemplates(template, online, layers, outputs, ModuleFingerprint(self))

    def update_online_template(self, online_template: torch.Tensor,
                               templates: CachedTemplates | None = None) -> CachedTemplates:
        """Replace only the online template(s) of `templates` (default: the last cache set), in place;
        its keys/values are recomputed (templates attend to each other)."""
        cache = self._cache(templates, "update_online_template")
        self._refresh(cache, cache.template, self._check_templates(cache.template, online_template))
        return cache

    def clear_templates(self) -> None:
        """Drop the template cache."""
        self._templates = None

    @property
    def has_templates(self) -> bool:
        return self._templates is not None

    def _cache(self, templates: CachedTemplates | None, caller: str) -> CachedTemplates:
        if templates is not None and not isinstance(templates, CachedTemplates):
            raise DistilkitError(f"{caller}: templates= takes what set_templates returned, got {type(templates).__name__}")
        cache = self._templates if templates is None else templates
        if cache is None:
            raise DistilkitError(f"{caller}: no templates cached, call set_templates(template, online_template)")
        if cache.weights.module is not self:
            raise DistilkitError(f"{caller}: these templates were cached by another model instance")
        return cache

    def _refresh(self, cache: CachedTemplates, template: torch.Tensor, online: torch.Tensor) -> None:
        """Recompute `cache` in place, so every holder of it sees the new keys/values."""
        fresh = self._encode_templates(template, online)
        cache.template, cache.online, cache.layers, cache.outputs, cache.weights = (
            fresh.template, fresh.online, fresh.layers, fresh.outputs, fresh.weights)

    def forward_search(self, search: torch.Tensor, return_features: bool = False, skip_unused: bool = True,
                       templates: CachedTemplates | None = None) -> dict[str, Any]:
        """Per-frame forward with cached templates (`templates`, a cache `set_templates` returned; default
        the last one set); same outputs as `forward`, template work skipped. A cache of batch 1 is
        shared by every search image of the batch. skip_unused (T4 heads, no features): the last block
        updates only the prediction tokens, the only ones the heads read."""
        cache = self._cache(templates, "forward_search")
        _check_image(search, self._base_config.search_size, "search", self.input_dtype)
        if cache.weights.changed():
            self._refresh(cache, cache.template, cache.online)
        caches, t_outs = cache.layers, cache.outputs
        tb = caches[0].k.shape[0]
        if tb not in (1, search.shape[0]):
            raise DistilkitError(f"search batch {search.shape[0]} does not match cached template batch {tb}")
        n_pred = self._base_config.num_pred_tokens
        tail = n_pred if (skip_unused and n_pred and not return_features) else None
        if self._compiled_search is not None and not return_features and not torch.is_grad_enabled():
            return self._compiled_search(search, [c.k for c in caches], [c.v for c in caches], tail)
        outs = self.backbone.forward_cached(search, caches, tail)
        out: dict[str, Any] = self._heads(outs[-1])
        if return_features:
            b = search.shape[0]
            out["features"] = [torch.cat([t.expand(b, -1, -1), s], dim=1) for t, s in zip(t_outs, outs)]
        return out

    def compile_search(self, enable: bool = True, *, max_autotune: bool = False) -> None:
        """Run `forward_search` through TorchInductor with the weights frozen (`distilkit.compiled`):
        same outputs (float rounding), faster per frame on CPU than prepacked eager kernels (benchmarks/RESULTS.md §3).
        Used without autograd and without features only; the first frame compiles (seconds), templates
        can change freely, weight changes recompile. enable=False goes back to eager. Enabling also
        loads the native attention kernel (`distilkit.kernels.load_native()`, built on first use on a
        machine, seconds) for a model on CPU, which the compiled program then calls; where it cannot be
        built, SDPA is used."""
        if enable and all(p.device.type == "cpu" for p in self.parameters()):
            load_native()
        self._compiled_search = FrozenFunction(_search_step, self, max_autotune=max_autotune) if enable else None

    @property
    def search_compiled(self) -> bool:
        return self._compiled_search is not None

    # description ---------------------------------------------------------------------------
    def live_config(self) -> MixFormerV2Config:
        """Config re-derived from the module shapes, so depth/width-pruned models are described correctly."""
        bb = self.backbone
        changes: dict[str, Any] = {
            "embed_dim": bb.patch_embed.proj.out_channels,
            "depth": len(bb.blocks),
            "mlp_hidden": [blk.mlp.fc1.out_features for blk in bb.blocks],
            "drop_path_rate": bb.drop_path_rate,
        }
        if bb.blocks:
            changes["num_heads"] = bb.blocks[0].attn.num_heads
        head = self.box_head
        if isinstance(head, T4Head):
            changes["bins"] = head.layers[1][0].out_features
            changes["head_hidden"] = head.layers[0][0].out_features
        else:
            changes["corner_channel"] = head.conv1_tl[0].out_channels
        return dataclasses.replace(self._base_config, **changes)

    def arch_spec(self) -> dict[str, Any]:
        """What distilkit.io stores next to the weights to rebuild this (possibly pruned) model."""
        return {"factory": FACTORY, "config": self.live_config().to_dict()}


class CachedSearchStep(nn.Module):
    """The per-frame computation of a tracker as a module: `model`'s templates are set once, and
    forward(search) is `model.forward_search(search)`; for profilers and timers that take (module, inputs).
    Puts `model` in eval mode (the templates are computed in it)."""

    def __init__(self, model: MixFormerV2, template: torch.Tensor, online_template: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.eval()  # before caching: a later train/eval switch would recompute the templates per frame
        with torch.no_grad():
            self.templates = model.set_templates(template, online_template)

    def forward(self, search: torch.Tensor) -> dict[str, Any]:
        return self.model.forward_search(search, templates=self.templates)


def _search_step(model: MixFormerV2, search: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
                 tail: int | None) -> dict[str, torch.Tensor]:
    """The per-frame cached path as a function of explicit template tensors (what gets compiled), so
    new templates are new inputs rather than baked-in constants."""
    caches = [TemplateKV(k, v) for k, v in zip(keys, values)]
    return model._heads(model.backbone.forward_cached(search, caches, tail)[-1])


def build_model_from_config(config: MixFormerV2Config | dict[str, Any]) -> MixFormerV2:
    """Build from a config object or its dict form (as stored in arch.json)."""
    if isinstance(config, dict):
        config = MixFormerV2Config.from_dict(config)
    return MixFormerV2(config)


register_factory(FACTORY, build_model_from_config)  # saved folders name it (distilkit.factories.BUILTIN)


def build_model(name: str, /, **overrides: Any) -> MixFormerV2:
    """Build a named model (mixvit-b, mixvit-b-corner, mixformerv2-12l/-b/-s and their -tiny variants)."""
    return MixFormerV2(preset(name, **overrides))
