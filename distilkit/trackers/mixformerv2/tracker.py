"""Single-object tracker around a MixFormerV2 model: crops, cached templates, online template update.

Online update (official rule): a frame whose sigmoid(score) > score_threshold and is the best since
the last update gives the candidate online template; every `update_interval` frames the candidate
replaces the oldest online template and the template cache is recomputed. Models without a score head
do no online update and report score NaN.
"""

from __future__ import annotations

import numpy as np
import torch

from distilkit.checks import as_number
from distilkit.data.crop import crop_around
from distilkit.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from distilkit.errors import DistilkitError
from distilkit.fingerprint import ModuleFingerprint
from distilkit.prepack import prepack_available, prepacked_view, shared_view
from distilkit.trackers.mixformerv2.model import CachedTemplates, MixFormerV2
from distilkit.trackers.single_object import (
    DEFAULT_UPDATE_INTERVALS, FALLBACK_UPDATE_INTERVAL, UPDATE_INTERVALS, FollowsOnlineRule, OnlineUpdateRule,
    box_in_image, check_initial_box, default_update_interval, official_update_interval, online_update_enabled,
)


class MixFormerV2Tracker(FollowsOnlineRule):
    """pytracking-style tracker: `initialize(image, box_xywh)`, then `track(image) -> (box_xywh, score)`."""

    def __init__(
        self,
        model: MixFormerV2,
        template_factor: float = 2.0,
        search_factor: float | None = None,
        template_size: int | None = None,
        search_size: int | None = None,
        update_interval: int = FALLBACK_UPDATE_INTERVAL,
        score_threshold: float = 0.5,
        device: str | torch.device = "cpu",
        prepack: bool = True,
        compile: bool = False,
        online_update: bool | None = None,
    ) -> None:
        """prepack (CPU only): track with `distilkit.prepack.prepacked_view(model)`, a copy sharing the
        model's weights whose linear layers use prepacked oneDNN kernels (same outputs, faster per frame).
        compile: track with a weight-sharing copy whose per-frame path is compiled by TorchInductor
        (`MixFormerV2.compile_search`; needs a C++ compiler on CPU, compiles for seconds in the first
        `initialize`, then faster than prepack, which it replaces; figures per CPU in benchmarks/RESULTS.md §3).
        online_update: replace the
        online template by the best-scored recent frame every `update_interval` frames (default: when the model
        has a score head; False tracks with the first frame's template throughout). Either way the
        copy is what changes; `model` itself is only moved to `device` and put in eval mode (call
        `model.train()` again to go on training it). The copy follows in-place weight edits of `model`,
        and is remade when `model` gets other tensors (`load_state_dict(assign=True)`, a replaced
        parameter, pruning)."""
        if not isinstance(model, MixFormerV2):
            raise DistilkitError(f"MixFormerV2Tracker needs a MixFormerV2 model, got {type(model).__name__}")
        cfg = model.config
        self.template_size = cfg.template_size if template_size is None else template_size
        self.search_size = cfg.search_size if search_size is None else search_size
        if (self.template_size, self.search_size) != (cfg.template_size, cfg.search_size):
            raise DistilkitError(
                f"tracker sizes {self.template_size}/{self.search_size} do not match the model's "
                f"{cfg.template_size}/{cfg.search_size} (template/search)"
            )
        rule = OnlineUpdateRule(update_interval, score_threshold, cfg.num_online_templates)
        # crop side = factor × sqrt(w·h)
        self.template_factor = as_number(template_factor, "template_factor", above=0)
        self.search_factor = as_number(cfg.search_factor if search_factor is None else search_factor, "search_factor", above=0)
        try:
            self.device = torch.device(device)
            self.source = model.to(self.device).eval()
        except (RuntimeError, AssertionError) as err:  # unknown device string, or no such device here
            first = (str(err).strip().splitlines() or ["unavailable"])[0]
            raise DistilkitError(f"cannot track on device {device!r}: {first}") from None
        self.view_kind = "compiled" if compile else "prepacked" if (
            prepack and self.device.type == "cpu" and prepack_available()) else None
        self._make_view()
        self.rule = rule
        self.online_update = online_update_enabled(online_update, model.score_head is not None)
        self._mean = torch.tensor(IMAGENET_MEAN.tolist(), device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD.tolist(), device=self.device).view(1, 3, 1, 1)
        self.state: np.ndarray | None = None
        self.templates: CachedTemplates | None = None

    def _make_view(self) -> None:
        """The model tracking runs on: `source` itself, or a copy sharing its tensors (prepacked or
        compiled), watched so that a replaced parameter or pruned block of `source` is followed."""
        cfg = self.source.config
        if self.view_kind == "compiled":
            self.model = shared_view(self.source)
            self.model.compile_search()
        elif self.view_kind == "prepacked":
            self.model = prepacked_view(self.source, batch_hint=cfg.search_feat_size**2 + cfg.num_pred_tokens)
        else:
            self.model = self.source
        self._source_tensors = ModuleFingerprint(self.source, structure_only=True) if self.view_kind else None

    def _follow_source(self) -> None:
        """A copy keeps the tensors it was made with: make a new one when `source` holds other tensors."""
        if self._source_tensors is not None and self._source_tensors.changed():
            self._make_view()
            if self.state is not None:  # mid-sequence: this tracker's templates, on the new weights
                self.templates = self.model.set_templates(self.template, self.online)

    def _to_tensor(self, patch: np.ndarray) -> torch.Tensor:
        """uint8 H×W×3 crop → normalised, contiguous (1, 3, H, W) float tensor (a permuted view would
        hand the compiled search step channels-last strides, and a second compile on the first frame)."""
        x = torch.from_numpy(patch).to(self.device).permute(2, 0, 1).contiguous().unsqueeze(0).float()
        return ((x / 255.0 - self._mean) / self._std).to(self.model.input_dtype)

    def _template(self, image: np.ndarray, box: np.ndarray) -> torch.Tensor:
        patch, _ = crop_around(image, box, self.template_factor, self.template_size)
        return self._to_tensor(patch)

    @torch.no_grad()
    def initialize(self, image: np.ndarray, box_xywh: np.ndarray) -> None:
        """Start tracking the target at `box_xywh` (x, y, w, h in pixels) in the first frame."""
        box = check_initial_box(image, box_xywh)
        self.state = None
        self._follow_source()
        self.template = self._template(image, box)
        n = self.model.config.num_online_templates
        self.online = self.template.unsqueeze(1).repeat(1, n, 1, 1, 1)
        self.templates = self.model.set_templates(self.template, self.online)  # this tracker's own cache
        if self.model.search_compiled:  # compile (first time) or warm up now, not inside the first track()
            self.model.forward_search(torch.zeros(1, 3, self.search_size, self.search_size, device=self.device),
                                      templates=self.templates)
        self.state = box
        self.frame_id = 0
        self.rule.reset(self.template)

    @torch.no_grad()
    def track(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Locate the target in the next frame; returns (x, y, w, h) in pixels and the confidence."""
        if self.state is None:
            raise DistilkitError("track() called before initialize(image, box_xywh)")
        self.frame_id += 1
        self._follow_source()
        patch, window = crop_around(image, self.state, self.search_factor, self.search_size)
        out = self.model.forward_search(self._to_tensor(patch), templates=self.templates)
        box = box_in_image(out["boxes"][0].cpu().numpy(), window, image.shape[:2])
        self.state = box
        score = torch.sigmoid(out["score"][0]).item() if "score" in out else float("nan")
        if self.online_update:
            self._update_online(image, score)
        return box.copy(), score

    def _update_online(self, image: np.ndarray, score: float) -> None:
        update = self.rule.step(self.frame_id, score, lambda: self._template(image, self.state))
        if update is not None:
            slot, template = update
            self.online[:, slot] = template[0]
            self.model.update_online_template(self.online, templates=self.templates)


# the update intervals were defined here first: importing them from this module still works
__all__ = [
    "DEFAULT_UPDATE_INTERVALS", "FALLBACK_UPDATE_INTERVAL", "MixFormerV2Tracker", "UPDATE_INTERVALS",
    "default_update_interval", "official_update_interval",
]
