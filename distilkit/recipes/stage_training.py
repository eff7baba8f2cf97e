"""How a stage trains under a budget: the family's training set, optimiser settings, loss and `Trainer`."""

from __future__ import annotations

from typing import Any

from distilkit.recipes.distributed import Dist
from distilkit.recipes.family import ModelFamily, StageSetup
from distilkit.recipes.losses import StageLoss
from distilkit.recipes.progress import RunLog
from distilkit.recipes.schema import Budget, Stage, effective_losses
from distilkit.recipes.trainer import Trainer, TrainSettings


def stage_trainer(family: ModelFamily, stage: Stage, budget: Budget, setup: StageSetup, train_sets: list[Any], seed: int,
                  stage_dir: str, dist: Dist, log: RunLog) -> Trainer:
    """The Trainer of `stage` (seeded by `seed`: the run's seed and the stage's index) on `train_sets`."""
    b, entry = budget, budget.stage(stage.name)
    family.set_drop_path(setup.student, b.drop_path)  # every trained stage, over the blocks it has, as the official
    dataset = family.training_set(stage, budget, train_sets, seed)
    o = b.optimizer
    settings = TrainSettings(
        epochs=entry.epochs, batch_size=b.batch_size, lr=entry.lr or o.lr,
        backbone_lr_scale=o.backbone_lr_scale if entry.backbone_lr_scale is None else entry.backbone_lr_scale,
        weight_decay=o.weight_decay, grad_clip=o.grad_clip, warmup_steps=o.warmup_steps,
        lr_drop_at=o.lr_drop_at if entry.lr_drop_at is None else entry.lr_drop_at, lr_drop_factor=o.lr_drop_factor,
        workers=b.workers, checkpoint_every=b.checkpoint_every, seed=seed, amp=b.amp,
    )
    loss = StageLoss(effective_losses(stage, entry), [tuple(p) for p in stage.feature_pairs], stage.attention_layers,
                     parts=family.loss_parts, options=b.options)
    return Trainer(stage.name, setup.student, setup.teacher, loss, dataset, settings, stage_dir, dist, log,
                   pruner=setup.pruner, inherited=setup.inherited, forward=family.forward, is_backbone=family.is_backbone)
