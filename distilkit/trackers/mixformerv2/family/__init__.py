"""MixFormerV2 as a recipe family: MixViT/T4 models from presets, tracking pairs from `--data` specs, box and
distribution losses, tracker evaluation (AUC/P/NP, per-frame speed) and the score stage (`family: mixformerv2`)."""

from __future__ import annotations

from typing import Any, Optional

from torch import nn

from distilkit.recipes.family import ModelFamily, ReportColumn, StageSetup
from distilkit.recipes.models import freeze_all_but
from distilkit.recipes.progress import RunLog
from distilkit.recipes.schema import Budget, Recipe, Stage
from distilkit.recipes.validate import Context
from distilkit.trackers.mixformerv2.family import checks, data, measure, models
from distilkit.trackers.mixformerv2.family.losses import LOSS_PARTS, head_problem
from distilkit.trackers.mixformerv2.family.options import TrackingBudget


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "–"


class MixFormerV2Family(ModelFamily):
    """The flagship family: the MixFormerV2 route (teacher → T4 student → PMDP → MLP ratio → score head)."""

    name = "mixformerv2"
    budget_options = TrackingBudget
    extra_stage_kinds = frozenset({"score"})
    loss_parts = LOSS_PARTS
    blocks = "backbone.blocks"
    metrics = (("auc", "AUC"), ("precision", "P"), ("norm_precision", "NP"))
    speed = ("frame_fps", "frame FPS")
    item_noun = "sequences"
    default_eval_label = "synthetic-test"

    # -- recipes ---------------------------------------------------------------------------------
    def check_recipe(self, recipe: Recipe, ctx: Context) -> None:
        checks.check_models(recipe, ctx)

    def check_plan(self, recipe: Recipe, budget_name: str, model: nn.Module) -> None:
        checks.check_tracker(recipe, budget_name, model)

    def is_builtin_data(self, part: str) -> bool:
        return data.is_synthetic(part)

    # -- models ----------------------------------------------------------------------------------
    def build(self, stage: Stage, budget: Budget) -> nn.Module:
        return models.build_stage_model(stage, budget)

    def load_teacher(self, path: str, stage: Stage, budget: Budget, label: Optional[str] = None) -> nn.Module:
        return models.load_teacher(path, stage, budget, label)

    def example_inputs(self, budget: Budget, batch: int = 1, device: str = "cpu") -> tuple[Any, ...]:
        return models.example_inputs(budget, batch, device)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        return models.describe(model)

    def architecture(self, row: dict[str, Any]) -> str:
        return row["head"] + (f"/{row['bins']}" if row.get("bins") else "") + ("+score" if row.get("score_head") else "")

    def set_drop_path(self, model: nn.Module, rate: float) -> None:
        model.backbone.set_drop_path(rate)

    def load_backbone(self, model: nn.Module, path: str) -> tuple[set[str], list[str], list[str]]:
        from distilkit.trackers.mixformerv2.mae import load_mae_backbone

        missing, unexpected = load_mae_backbone(model, path)
        loaded = {f"backbone.{k}" for k in model.backbone.state_dict() if k not in missing}
        return loaded, list(missing), list(unexpected)

    def loss_problem(self, weights: dict[str, float], student: nn.Module) -> Optional[tuple[str, str]]:
        return head_problem(weights, student.config.head)

    def setup_extra_stage(self, stage: Stage, budget: Budget, previous: nn.Module, device: str) -> StageSetup:
        """The score stage: the previous result plus a score head; only the score head trains (BCE with negatives)."""
        student = models.with_score_head(previous)
        flags = freeze_all_but(student, "score_head.")
        trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
        return StageSetup(student, None, notes=[f"score head only: {trainable:,} trainable parameters, the rest frozen"],
                          grad_flags=flags)

    def forward(self, model: nn.Module, batch: dict[str, Any], outputs: frozenset[str]) -> dict[str, Any]:
        extra = {"return_pred_attention": True} if "pred_attention" in outputs else {}
        return model(batch["template"], batch["online_template"], batch["search"],
                     return_features="features" in outputs, **extra)

    # -- data ------------------------------------------------------------------------------------
    def datasets(self, spec: str, budget: Budget, split: str) -> list[Any]:
        return data.datasets_for(spec, budget, split)

    def default_eval_set(self, budget: Budget) -> Any:
        return data.synthetic_split(budget, "test")

    def check_training_data(self, datasets: list[Any], budget: Budget, route: list[Stage]) -> None:
        if budget.negative_prob > 0 and any(s.kind == "score" for s in route):
            from distilkit.data.sampler import check_negatives_possible

            check_negatives_possible(datasets)  # the score stage comes last: fail before training

    def training_set(self, stage: Stage, budget: Budget, datasets: list[Any], seed: int) -> Any:
        from distilkit.data import Augment, PairSampler

        b, entry = budget, budget.stage(stage.name)
        return PairSampler(
            datasets, template_size=b.template_size, search_size=b.search_size,
            template_factor=b.template_factor, search_factor=b.search_factor, center_jitter=b.center_jitter,
            scale_jitter=b.scale_jitter, max_gap=b.max_gap, dataset_weights=b.dataset_weights,
            samples_per_epoch=entry.samples_per_epoch or b.samples_per_epoch,
            negative_prob=b.negative_prob if stage.kind == "score" else 0.0, seed=seed,
            augment=Augment(b.augment.grayscale, b.augment.brightness, b.augment.flip),
        )

    # -- evaluation and report ------------------------------------------------------------------
    def evaluate(self, model: nn.Module, budget: Budget, eval_set: Any, out_dir: str, name: str, log: RunLog,
                 device: str) -> dict[str, Any]:
        return measure.evaluate_tracking(model, budget, eval_set, out_dir, name, log, device)

    def baselines(self, out: str, eval_set: Any, log: RunLog) -> list[dict[str, Any]]:
        return measure.baselines(out, eval_set, log)

    def budget_lines(self, budget: Budget) -> list[str]:
        b = budget
        drawn = "each dataset equally often" if b.dataset_weights == "equal" else "datasets by sequence count"
        lines = [f"pairs drawn from {drawn}; {b.center_jitter:g}/{b.scale_jitter:g} centre/scale jitter, max gap {b.max_gap}",
                 f"crops template {b.template_size}px (×{b.template_factor:g}), search {b.search_size}px "
                 f"(×{b.search_factor:g})"]
        a = b.augment
        if a.grayscale or a.brightness or a.flip or b.drop_path:
            lines.append(f"augment grayscale p {a.grayscale:g}, brightness ±{a.brightness:g}, flip p {a.flip:g}; "
                         f"drop path {b.drop_path:g}")
        return lines

    def report_columns(self) -> list[ReportColumn]:
        return [ReportColumn("head", lambda r: r.get("head", "") + (" + score" if r.get("score_head") else "")),
                ReportColumn("frame ms", lambda r: _fmt(r.get("frame_ms"), ".1f"))]

    def report_notes(self, report: dict[str, Any]) -> list[str]:
        notes = []
        for s in report["stages"]:
            if s.get("auc_no_update") is not None:
                notes.append(f"Online template updates of `{s['name']}` (every {s.get('update_interval')} frames, frame "
                             f"picked by the score head): AUC {s['auc']:.3f} with, {s['auc_no_update']:.3f} without "
                             "(first-frame template throughout).")
            if s.get("score_accuracy") is not None:
                notes.append(f"Score head of `{s['name']}`: {s['score_accuracy']:.1%} of {measure.SCORE_PAIRS} held-out "
                             "pairs (half negatives) classified right at sigmoid 0.5.")
        notes.append("AUC / P / NP: success AUC, precision at 20 px and normalised precision at 0.2 on the evaluation set "
                     "(pytracking conventions). frame ms / FPS: one `MixFormerV2Tracker.track` step (crop, cached "
                     "templates, search forward, box), what tracking costs per frame; speed-up is per frame against the "
                     "teacher. Baselines: FPS measured while tracking the evaluation set.")
        return notes

    def eval_command(self, recipe: str, budget_name: str, eval_data: Optional[str], model_dir: str) -> Optional[str]:
        import shlex

        spec = eval_data or f"{data.RECIPE_SPLIT_KIND}:{recipe}@{budget_name}"
        return f"distilkit eval {shlex.quote(model_dir)} --data {shlex.quote(spec)}"
