"""Process-group setup for `torchrun`: NCCL on GPUs, gloo on CPU; rank 0 reads and writes the run folder and
hands what it found (or its failure) to the other ranks, which never read run files themselves."""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, TypeVar

import torch
import torch.distributed as dist

from distilkit.errors import DistilkitError

T = TypeVar("T")


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

    def on_main(self, work: Callable[[], T]) -> T:
        """Run `work` on rank 0 only and return its result on every rank. If it fails there, every rank raises
        the same one-line DistilkitError at once (an OSError becomes one naming its file) instead of waiting at
        the next collective for a rank 0 that has gone; rank 0 re-raises a DistilkitError or a bug as it was."""
        result: Any = None
        problem: Optional[str] = None
        if self.is_main:
            try:
                result = work()
            except DistilkitError as err:
                if self.enabled:
                    self.broadcast((str(err), None))
                raise
            except OSError as err:
                problem = os_error_line(err)
            except Exception as err:  # a bug: the other ranks stop with one line, rank 0 keeps the traceback
                if self.enabled:
                    self.broadcast((f"rank 0 failed: {type(err).__name__}: {err}", None))
                raise
        problem, result = self.broadcast((problem, result))
        if problem is not None:
            raise DistilkitError(problem)
        return result

    def agree(self, facts: dict[str, str], problem: Optional[str] = None) -> None:
        """Every rank tells what it was asked to run (`facts`, e.g. digests of code, recipe, data) and whether
        its checks failed (`problem`); any failure or any fact that differs from rank 0's is the same one-line
        DistilkitError on every rank, before anything is trained or written."""
        if not self.enabled:
            if problem is not None:
                raise DistilkitError(problem)
            return
        everyone = self.gather((problem, facts))
        for rank, (failed, _) in enumerate(everyone):
            if failed is not None:
                raise DistilkitError(failed if rank == 0 else f"rank {rank}: {failed}")
        first = everyone[0][1]
        for rank, (_, theirs) in enumerate(everyone[1:], 1):
            differ = sorted(k for k in first.keys() | theirs.keys() if first.get(k) != theirs.get(k))
            if differ:
                raise DistilkitError(f"rank {rank} was started differently from rank 0 ({', '.join(differ)} differ); "
                                     "every process of the job must run the same distilkit code with the same "
                                     "recipe, budget, data, seed and flags")

    def all_mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average scalar logs over ranks (for progress display only)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}


def os_error_line(err: OSError) -> str:
    """One line for a failed file operation: where and why (e.g. 'No space left on device')."""
    why = err.strerror or str(err)
    if err.filename is None:
        return why
    return f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 else "") + f": {why}"


@lru_cache(maxsize=1)
def code_version() -> str:
    """distilkit's version plus a digest of its package source, so ranks running different code tell apart."""
    import distilkit

    root = Path(distilkit.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo", ".so", ".pyd"):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return f"{distilkit.__version__}+{h.hexdigest()[:12]}"


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
