"""Process-group setup for `torchrun`: NCCL on GPUs, gloo on CPU; rank 0 writes, everyone else waits."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from distilkit.errors import DistilkitError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (a one-element list without a process group)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average scalar logs over ranks (for progress display only)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}


def check_device(device: str) -> None:
    """A `--device` value must name cpu or an available cuda device: say so before any work."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise DistilkitError(f"--device {device!r} is not a device; use cpu or cuda") from None
    if kind not in ("cpu", "cuda"):
        raise DistilkitError(f"--device {device!r}: distilkit runs on cpu or cuda")
    if kind == "cuda" and not torch.cuda.is_available():
        raise DistilkitError(f"--device {device!r}: CUDA is not available on this machine")


def setup(device: str | None = None) -> Dist:
    """Join the `torchrun` process group when WORLD_SIZE > 1; pick the device (cuda:LOCAL_RANK or cpu)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device not in (None, "auto"):
        check_device(device)
    use_cuda = torch.cuda.is_available() if device in (None, "auto") else device.startswith("cuda")
    dev = f"cuda:{local}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
    if world > 1 and not dist.is_initialized():
        # Long timeout: rank 0 evaluates and writes reports while the others wait at a barrier.
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=3))
    if world > 1 and not use_cuda:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return Dist(rank=rank, world_size=world, local_rank=local, device=dev)


def teardown(ctx: Dist) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
