"""MixFormerV2 architecture description: a JSON-serialisable config and the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from distilkit.checks import as_int, as_number
from distilkit.errors import DistilkitError

HEAD_TYPES = ("t4", "corner", "py_corner")
SCORE_VARIANTS = ("official", "paper")
# The sin-cos position tables (patch grid x embed_dim values) are computed in NumPy at build time, out of
# reach of distilkit.factories' size limit: bounded here (MixFormerV2-B: 18 x 18 x 768 = 248,832 values).
MAX_POSITION_TABLE = 2**26


def check_drop_path_rate(value: object) -> float:
    """`value` checked as a stochastic-depth rate: a number in [0, 1) (at 1 every branch would be dropped)."""
    rate = as_number(value, "drop_path_rate", minimum=0)
    if rate >= 1.0:
        raise DistilkitError(f"drop_path_rate must be in [0, 1), got {rate:g}")
    return rate


@dataclass
class MixFormerV2Config:
    """Everything needed to rebuild a MixFormerV2/MixViT model (widths per block so pruned models fit).

    `mlp_hidden` (one hidden size per block) wins over `mlp_ratio` when given.
    `drop_path_rate` is stochastic depth in training (0 at the first block rising to it at the last; no
    effect in eval mode). `legacy_timm_params` adds the unused cls_token/pos_embed/norm/head parameters
    that the official MixViT-B inherits from timm's VisionTransformer, so parameter counts and checkpoints match it.
    """

    name: str = "custom"
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    mlp_hidden: list[int] | None = None
    patch_size: int = 16
    template_size: int = 128
    search_size: int = 288
    num_online_templates: int = 1
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    head: str = "t4"
    bins: int = 96
    head_hidden: int | None = None
    corner_channel: int = 384
    score_head: bool = False
    score_variant: str = "official"
    search_factor: float = 5.0
    legacy_timm_params: bool = False
    legacy_num_classes: int = 1000
    legacy_img_size: int = 224

    def __post_init__(self) -> None:
        if self.head not in HEAD_TYPES:
            raise DistilkitError(f"unknown head {self.head!r}; valid: {', '.join(HEAD_TYPES)}")
        self._check_values()
        if self.mlp_hidden is not None:
            if isinstance(self.mlp_hidden, (str, bytes)) or not isinstance(self.mlp_hidden, (list, tuple)):
                raise DistilkitError(f"mlp_hidden must be a list of hidden sizes, got {self.mlp_hidden!r}")
            self.mlp_hidden = [as_int(h, "mlp_hidden entry", minimum=1) for h in self.mlp_hidden]
            if len(self.mlp_hidden) != self.depth:
                raise DistilkitError(
                    f"mlp_hidden has {len(self.mlp_hidden)} entries but depth is {self.depth}"
                )
        elif int(self.embed_dim * self.mlp_ratio) < 1:
            raise DistilkitError(f"mlp_ratio {self.mlp_ratio:g} leaves no MLP hidden channel at embed_dim {self.embed_dim}")
        if self.score_variant not in SCORE_VARIANTS:
            raise DistilkitError(
                f"unknown score_variant {self.score_variant!r}; valid: {', '.join(SCORE_VARIANTS)}"
            )
        if self.score_head and self.head != "t4":
            raise DistilkitError("a score head needs the prediction tokens of a T4 head (head='t4')")
        if self.embed_dim % self.num_heads:
            raise DistilkitError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        for what in ("template_size", "search_size"):
            if getattr(self, what) % self.patch_size:
                raise DistilkitError(f"{what} {getattr(self, what)} is not a multiple of patch_size {self.patch_size}")

    def _check_values(self) -> None:
        """Types and ranges of every field, so a bad override fails here rather than deep in a forward."""
        for key in ("embed_dim", "depth", "num_heads", "patch_size", "template_size", "search_size",
                    "num_online_templates", "bins", "corner_channel", "legacy_num_classes", "legacy_img_size"):
            setattr(self, key, as_int(getattr(self, key), key, minimum=1))
        if self.head_hidden is not None:
            self.head_hidden = as_int(self.head_hidden, "head_hidden", minimum=1)
        for key in ("mlp_ratio", "norm_eps", "search_factor"):
            setattr(self, key, as_number(getattr(self, key), key, above=0))
        self.drop_path_rate = check_drop_path_rate(self.drop_path_rate)
        for key in ("qkv_bias", "score_head", "legacy_timm_params"):
            if not isinstance(getattr(self, key), bool):
                raise DistilkitError(f"{key} must be true or false, got {getattr(self, key)!r}")
        if not isinstance(self.name, str):
            raise DistilkitError(f"name must be a string, got {self.name!r}")
        if self.embed_dim % 4:
            raise DistilkitError(f"embed_dim must be a multiple of 4 (2-D sin-cos positions), got {self.embed_dim}")
        for key in ("template_size", "search_size"):
            grid = getattr(self, key) // self.patch_size
            if grid * grid * self.embed_dim > MAX_POSITION_TABLE:
                raise DistilkitError(f"{key} {getattr(self, key)} at patch size {self.patch_size} and embed_dim "
                                     f"{self.embed_dim} needs a position table of {grid * grid * self.embed_dim:,} "
                                     f"values, more than {MAX_POSITION_TABLE:,}")
        if self.head != "t4" and self.corner_channel % 8:
            raise DistilkitError(f"corner_channel must be a multiple of 8 (the corner heads halve it three times), "
                                 f"got {self.corner_channel}")

    # derived sizes -------------------------------------------------------------------------
    @property
    def block_mlp_hidden(self) -> list[int]:
        """Hidden size of every block's MLP."""
        if self.mlp_hidden is not None:
            return list(self.mlp_hidden)
        return [int(self.embed_dim * self.mlp_ratio)] * self.depth

    @property
    def template_tokens(self) -> int:
        """Tokens of one template image."""
        return (self.template_size // self.patch_size) ** 2

    @property
    def search_feat_size(self) -> int:
        """Side of the search feature map."""
        return self.search_size // self.patch_size

    @property
    def num_pred_tokens(self) -> int:
        """4 prediction tokens (l, r, t, b) for the T4 head, none for corner heads."""
        return 4 if self.head == "t4" else 0

    # serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MixFormerV2Config:
        """Inverse of to_dict; unknown keys are an error (a typo must not pass silently)."""
        if not isinstance(data, dict):
            raise DistilkitError(f"MixFormerV2 config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DistilkitError(f"unknown MixFormerV2 config keys: {', '.join(unknown)}")
        return cls(**data)


def _tiny(cfg: MixFormerV2Config, **changes: Any) -> MixFormerV2Config:
    """Same structure as `cfg`, narrow and on small images: for tests and the demo recipe."""
    base = dict(
        name=cfg.name + "-tiny",
        embed_dim=64,
        num_heads=4,
        patch_size=8,
        template_size=32,
        search_size=64,
        corner_channel=32,
        search_factor=4.0,
        legacy_timm_params=False,
    )
    base.update(changes)
    return dataclasses.replace(cfg, **base)


_FULL = {
    "mixvit-b": MixFormerV2Config(
        name="mixvit-b", head="py_corner", legacy_timm_params=True, search_size=288, template_size=128
    ),
    "mixvit-b-corner": MixFormerV2Config(
        name="mixvit-b-corner", head="corner", legacy_timm_params=True, search_size=288, template_size=128
    ),
    "mixformerv2-12l": MixFormerV2Config(name="mixformerv2-12l", head="t4", bins=72),
    # B trains at search factor 5.0 but tracks at 4.5 (official TEST.SEARCH_FACTOR); config.search_factor is the tracking one
    "mixformerv2-b": MixFormerV2Config(name="mixformerv2-b", depth=8, head="t4", bins=96, score_head=True, search_factor=4.5),
    "mixformerv2-s": MixFormerV2Config(
        name="mixformerv2-s", depth=4, mlp_ratio=1.0, template_size=112, search_size=224,
        head="t4", bins=96, score_head=True, search_factor=4.5,
    ),
}
_TINY_BINS = {"mixformerv2-12l": 32, "mixformerv2-b": 48, "mixformerv2-s": 48}

PRESETS: dict[str, MixFormerV2Config] = dict(_FULL)
for _name, _cfg in _FULL.items():
    PRESETS[_name + "-tiny"] = _tiny(_cfg, **({"bins": _TINY_BINS[_name]} if _name in _TINY_BINS else {}))


def preset(name: str, /, **overrides: Any) -> MixFormerV2Config:
    """Named config with field overrides; unknown names/fields raise DistilkitError."""
    if name not in PRESETS:
        raise DistilkitError(f"unknown model {name!r}; valid names: {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(MixFormerV2Config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise DistilkitError(f"unknown override(s) for {name}: {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    cfg = PRESETS[name]
    if ("depth" in overrides or "mlp_ratio" in overrides or "embed_dim" in overrides) and "mlp_hidden" not in overrides:
        overrides["mlp_hidden"] = None
    return dataclasses.replace(cfg, **overrides)


__all__ = ["MixFormerV2Config", "PRESETS", "preset", "HEAD_TYPES", "SCORE_VARIANTS"]
