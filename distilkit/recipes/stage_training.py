"""How a stage trains under a budget: its training pairs, optimiser settings, loss and `Trainer`."""

from __future__ import annotations

from typing import Any

from distilkit.recipes.distributed import Dist
from distilkit.recipes.losses import StageLoss
from distilkit.recipes.progress import RunLog
from distilkit.recipes.schema import Budget, Stage, effective_losses
from distilkit.recipes.stages import StageSetup
from distilkit.recipes.trainer import Trainer, TrainSettings


def stage_trainer(stage: Stage, budget: Budget, setup: StageSetup, train_sets: list[Any], seed: int, stage_dir: str,
                  dist: Dist, log: RunLog) -> Trainer:
    """The Trainer of `stage` (seeded by `seed`: the run's seed and the stage's index) on `train_sets`."""
    from distilkit.data import Augment, PairSampler

    b, entry = budget, budget.stage(stage.name)
    setup.student.backbone.set_drop_path(b.drop_path)  # every trained stage, over the blocks it has, as the official
    dataset = PairSampler(
        train_sets, template_size=b.template_size, search_size=b.search_size,
        template_factor=b.template_factor, search_factor=b.search_factor, center_jitter=b.center_jitter,
        scale_jitter=b.scale_jitter, max_gap=b.max_gap, dataset_weights=b.dataset_weights,
        samples_per_epoch=entry.samples_per_epoch or b.samples_per_epoch,
        negative_prob=b.negative_prob if stage.kind == "score" else 0.0, seed=seed,
        augment=Augment(b.augment.grayscale, b.augment.brightness, b.augment.flip),
    )
    o = b.optimizer
    settings = TrainSettings(
        epochs=entry.epochs, batch_size=b.batch_size, lr=entry.lr or o.lr,
        backbone_lr_scale=o.backbone_lr_scale if entry.backbone_lr_scale is None else entry.backbone_lr_scale,
        weight_decay=o.weight_decay, grad_clip=o.grad_clip, warmup_steps=o.warmup_steps,
        lr_drop_at=o.lr_drop_at if entry.lr_drop_at is None else entry.lr_drop_at, lr_drop_factor=o.lr_drop_factor,
        workers=b.workers, checkpoint_every=b.checkpoint_every, seed=seed, amp=b.amp,
    )
    loss = StageLoss(effective_losses(stage, entry), [tuple(p) for p in stage.feature_pairs], stage.attention_layers)
    return Trainer(stage.name, setup.student, setup.teacher, loss, dataset, settings, stage_dir, dist, log,
                   pruner=setup.pruner, inherited=setup.inherited)
