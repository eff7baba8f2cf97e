"""The training loop every stage shares: AdamW, step LR drop, grad clipping, pruner progress, DDP,
atomic resumable checkpoints, non-finite-loss stop, progress display.

Progress of depth/width pruners is set every step to the fractional epoch `epoch + i/steps`, so γ is
a pure function of the step counter and a resumed run continues the same γ sequence.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
import torch.distributed as tdist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from distilkit.distill import Distiller
from distilkit.errors import DistilkitError, NonFiniteLossError
from distilkit.recipes.amp import MixedPrecision
from distilkit.recipes.distributed import Dist
from distilkit.recipes.losses import StageLoss
from distilkit.recipes.outdir import CHECKPOINT
from distilkit.recipes.progress import RunLog, StageProgress
from distilkit.recipes.state import load_state, rng_state, save_state, set_rng_state

_STATE_KEYS = frozenset({"stage", "epoch", "step_in_epoch", "steps_per_epoch", "elapsed", "model", "optimizer",
                         "pruner", "rng"})


@dataclass
class TrainSettings:
    """Resolved per-stage training settings (recipe stage + budget)."""

    epochs: int
    batch_size: int
    lr: float
    backbone_lr_scale: float
    weight_decay: float
    grad_clip: float
    warmup_steps: int
    lr_drop_at: float
    lr_drop_factor: float
    workers: int
    checkpoint_every: int
    seed: int
    amp: str = "none"


class _ResumeSampler(Sampler[int]):
    """The epoch's index order from a DistributedSampler, skipping the first `skip` samples (mid-epoch resume)."""

    def __init__(self, base: DistributedSampler, skip: int = 0):
        self.base = base
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.base)[self.skip:])

    def __len__(self) -> int:
        return len(self.base) - self.skip


def _in_backbone(name: str) -> bool:
    return name.startswith("backbone.")


def _param_groups(model: nn.Module, lr: float, backbone_scale: float, weight_decay: float,
                  inherited: Optional[set[str]] = None,
                  is_backbone: Callable[[str], bool] = _in_backbone) -> list[dict[str, Any]]:
    """Backbone parameters (`is_backbone`) carried over from earlier training (`inherited`; None = all) at
    lr·backbone_scale, heads and newly initialised parameters at lr; no weight decay on norms, biases and tokens."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        carried = inherited is None or name in inherited
        key = (is_backbone(name) and carried, p.ndim <= 1)
        groups.setdefault(key, []).append(p)
    out = []
    for (is_backbone, no_decay), params in sorted(groups.items()):
        base = lr * (backbone_scale if is_backbone else 1.0)
        out.append({"params": params, "lr": base, "base_lr": base, "weight_decay": 0.0 if no_decay else weight_decay})
    if not out:
        raise DistilkitError("nothing to train: every parameter is frozen")
    return out


def lr_factor(step: int, total_steps: int, s: TrainSettings) -> float:
    """Linear warm-up, then constant, then × lr_drop_factor from lr_drop_at of the stage on."""
    warm = min(1.0, (step + 1) / s.warmup_steps) if s.warmup_steps > 0 else 1.0
    drop = s.lr_drop_factor if step >= int(s.lr_drop_at * total_steps) and s.lr_drop_at < 1.0 else 1.0
    return warm * drop


Forward = Callable[[nn.Module, dict[str, Any], frozenset[str]], dict[str, Any]]


class Trainer:
    """Train `student` on `dataset` (batches as dicts of tensors) with `loss`, optionally distilling from `teacher`;
    `forward(model, batch, outputs)` runs a model on a batch (a family's `forward`), `is_backbone` names the
    parameters trained at the backbone learning rate."""

    def __init__(
        self,
        name: str,
        student: nn.Module,
        teacher: Optional[nn.Module],
        loss: StageLoss,
        dataset: Any,
        settings: TrainSettings,
        work_dir: str,
        dist: Dist,
        log: RunLog,
        pruner: Any = None,
        inherited: Optional[set[str]] = None,
        *,
        forward: Forward,
        is_backbone: Callable[[str], bool] = _in_backbone,
    ):
        self.name = name
        self.precision = MixedPrecision(settings.amp, dist.device)
        self.student = student.to(dist.device)
        self.teacher = teacher.to(dist.device) if teacher is not None else None
        self.loss = loss
        self.forward = forward
        self.dataset = dataset
        self.s = settings
        self.dist = dist
        self.log = log
        self.pruner = pruner
        self.checkpoint_path = os.path.join(work_dir, CHECKPOINT)
        self.sampler = DistributedSampler(
            dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=settings.seed, drop_last=True
        )
        self.steps_per_epoch = len(self.sampler) // settings.batch_size
        if self.steps_per_epoch < 1:
            raise DistilkitError(
                f"stage {name!r}: {len(dataset)} samples per epoch over {dist.world_size} process(es) is less than "
                f"one batch of {settings.batch_size}; raise samples_per_epoch or lower batch_size"
            )
        self.total_steps = self.steps_per_epoch * settings.epochs
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.student, settings.lr, settings.backbone_lr_scale, settings.weight_decay, inherited,
                          is_backbone),
            lr=settings.lr
        )
        self.model: nn.Module = self.student
        if dist.enabled:
            ids = [dist.local_rank] if dist.device.startswith("cuda") else None
            self.model = nn.parallel.DistributedDataParallel(self.student, device_ids=ids)
        # the frozen teacher runs (under no_grad, in eval mode) only for stages whose loss reads it
        self.distiller = Distiller(self.model, self.teacher if loss.needs_teacher else None, loss.parts(), loss.weights,
                                   forward_fn=self._student_forward, teacher_forward_fn=self._teacher_forward)
        self.epoch = 0
        self.step_in_epoch = 0
        self.elapsed = 0.0
        self.last_losses: dict[str, float] = {}  # loss parts of the latest step (unweighted) and the total

    # -- checkpoints --------------------------------------------------------------------------
    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step_in_epoch

    def save_checkpoint(self) -> None:
        """All ranks contribute their RNG state; rank 0 writes the file atomically and tells the others
        whether that worked (a failed write stops every rank with its error)."""
        rngs = self.dist.gather(rng_state())
        self.dist.on_main(lambda: save_state(self.checkpoint_path, {
            "stage": self.name,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.dist.world_size,
            "sampler_epoch": self.epoch,
            "elapsed": self.elapsed,
            "model": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "pruner": self.pruner.state_dict() if self.pruner is not None else None,
            "grad_scaler": self.precision.state_dict(),
            "rng": rngs,
        }))

    def _read_checkpoint(self) -> Optional[dict[str, Any]]:
        """Rank 0: this stage's checkpoint state, or None when there is none or it cannot be read (the stage
        then starts over: a damaged file must not block the run)."""
        if not os.path.lexists(self.checkpoint_path):
            return None
        try:
            state = load_state(self.checkpoint_path)
        except DistilkitError as err:
            self.log.info(f"[{self.name}] {err}: training the stage from its start")
            return None
        missing = sorted(_STATE_KEYS - set(state)) if isinstance(state, dict) else ["everything"]
        if missing:
            self.log.info(f"[{self.name}] checkpoint {self.checkpoint_path} lacks {', '.join(missing)}: "
                          "training the stage from its start")
            return None
        if state.get("stage") != self.name or state.get("steps_per_epoch") != self.steps_per_epoch:
            raise DistilkitError(
                f"checkpoint {self.checkpoint_path} does not match stage {self.name!r} with {self.steps_per_epoch} "
                f"steps per epoch (was it written with another budget or world size?); use --force to restart"
            )
        return state

    def maybe_resume(self) -> bool:
        """Continue from this stage's checkpoint if there is a readable one; returns whether it did. Rank 0
        reads it and hands the state to every rank (the file may be on rank 0's disk only)."""
        state = self.dist.on_main(self._read_checkpoint)
        if state is None:
            return False
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.pruner is not None and state["pruner"] is not None:
            self.pruner.load_state_dict(state["pruner"])
        self.precision.load_state_dict(state.get("grad_scaler"))  # absent from checkpoints of fp32 stages before amp
        self.epoch, self.step_in_epoch, self.elapsed = state["epoch"], state["step_in_epoch"], state["elapsed"]
        rngs = state["rng"]
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        else:
            self.log.info(f"[{self.name}] checkpoint came from {len(rngs)} process(es), now {self.dist.world_size}: RNG streams "
                          "restart")
        self.log.info(f"[{self.name}] resuming at epoch {self.epoch} step {self.step_in_epoch}/{self.steps_per_epoch}")
        return True

    # -- training -----------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        self.sampler.set_epoch(self.epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        skip = self.step_in_epoch * self.s.batch_size
        return DataLoader(
            self.dataset,
            batch_size=self.s.batch_size,
            sampler=_ResumeSampler(self.sampler, skip),
            num_workers=self.s.workers,
            drop_last=True,
            pin_memory=self.dist.device.startswith("cuda"),
        )

    def _set_lr(self) -> float:
        factor = lr_factor(self.global_step, self.total_steps, self.s)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        return self.s.lr * factor

    def _agree_finite(self, error: Optional[NonFiniteLossError]) -> None:
        """Every process stops together when any one's loss is NaN/inf (a lone raise would leave the others
        waiting in DDP's gradient all-reduce), naming the part and step where this process saw it."""
        flag = torch.tensor([0.0 if error is not None else 1.0], device=self.dist.device)
        if self.dist.enabled:
            tdist.all_reduce(flag, op=tdist.ReduceOp.MIN)
        if flag.item() < 1.0:
            if error is None:
                where = "on another process"
            elif error.part is None:
                where = f"in the weighted total = {error.value}"
            else:
                where = f"part '{error.part}' = {error.value}"
            kept = (f"the last good checkpoint {self.checkpoint_path} is kept" if os.path.exists(self.checkpoint_path)
                    else "no checkpoint was written yet")
            raise NonFiniteLossError(
                f"stage {self.name!r}: non-finite loss {where} at step {self.global_step + 1} "
                f"(epoch {self.epoch}); stopped, {kept}"
            )

    def _student_forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return self.forward(model, batch, self.loss.student_outputs)

    def _teacher_forward(self, teacher: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return self.forward(teacher, batch, self.loss.teacher_outputs)

    def _step_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The Distiller's (total, parts) for this batch, after every process agreed that they are finite."""
        try:
            total, parts = self.distiller(batch)
            error = None
        except NonFiniteLossError as err:
            total, parts, error = None, {}, err
        self._agree_finite(error)
        return total, parts

    def fit(self) -> None:
        """Run the remaining epochs, checkpointing every epoch (and every `checkpoint_every` steps)."""
        self.student.train()
        progress = StageProgress(self.log, self.name, self.total_steps, self.global_step)
        if self.s.workers > 0 and self.epoch < self.s.epochs and hasattr(self.dataset, "warm_up"):
            self.dataset.warm_up()  # once: the workers of every epoch fork with the sequences already built
        try:
            while self.epoch < self.s.epochs:
                t0 = time.perf_counter()
                for batch in self._loader():
                    batch = {k: v.to(self.dist.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
                    gamma = None
                    if self.pruner is not None:
                        gamma = self.pruner.set_progress(self.epoch + self.step_in_epoch / self.steps_per_epoch)
                    lr = self._set_lr()
                    with self.precision.autocast():
                        total, parts = self._step_loss(batch)
                    self.optimizer.zero_grad(set_to_none=True)
                    params = [p for g in self.optimizer.param_groups for p in g["params"]]
                    self.precision.step(total, self.optimizer, params, self.s.grad_clip)
                    self.step_in_epoch += 1
                    now = time.perf_counter()
                    self.elapsed += now - t0
                    t0 = now
                    shown = {k: float(v.detach()) for k, v in parts.items()}
                    shown["loss"] = float(total.detach())
                    self.last_losses = shown
                    progress.update(self.global_step, self.epoch, self.s.batch_size * self.dist.world_size,
                                    shown, lr, gamma)
                    if self.s.checkpoint_every and self.global_step % self.s.checkpoint_every == 0 \
                            and self.step_in_epoch < self.steps_per_epoch:
                        self.save_checkpoint()
                self.epoch += 1
                self.step_in_epoch = 0
                self.save_checkpoint()
                self.log.info(f"[{self.name}] epoch {self.epoch}/{self.s.epochs} done", console=False)
        finally:
            progress.close()
        if self.dist.enabled:
            # DDP syncs buffers (BatchNorm statistics) from rank 0 at the start of each forward, so the
            # last step leaves them rank-local: make rank 0's the result everywhere.
            for buf in self.student.buffers():
                tdist.broadcast(buf, src=0)
