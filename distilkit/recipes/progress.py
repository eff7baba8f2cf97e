"""What the user sees: a rich progress bar per stage (loss parts, γ, lr, samples/s, ETA) and `prune.log`."""

from __future__ import annotations

import logging
import os
import time
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RunLog:
    """Console + log-file messages; silent on ranks other than 0."""

    def __init__(self, out_dir: Optional[str], enabled: bool = True, console: Optional[Console] = None):
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self.logger = logging.getLogger(f"distilkit.prune.{id(self)}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self._handler: Optional[logging.Handler] = None
        if enabled and out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)
            self._handler = logging.FileHandler(os.path.join(out_dir, "prune.log"), encoding="utf-8")
            self._handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
            self.logger.addHandler(self._handler)

    def info(self, message: str, console: bool = True) -> None:
        """Log a line; also print it unless `console=False` (per-step detail goes to the file only)."""
        if not self.enabled:
            return
        self.logger.info(message)
        if console:
            self.console.print(message, markup=False, highlight=False)

    def close(self) -> None:
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None


class StageProgress:
    """One progress bar for a stage's optimisation steps; `update` shows loss parts, γ, lr and throughput."""

    def __init__(self, log: RunLog, stage: str, total_steps: int, done_steps: int, log_every: int = 20):
        self.log = log
        self.stage = stage
        self.log_every = max(1, log_every)
        self._progress: Optional[Progress] = None
        self._t0 = time.perf_counter()
        self._samples = 0
        if log.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=log.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(stage, total=total_steps, completed=done_steps, info="")

    def update(self, step: int, epoch: int, batch_size: int, parts: dict[str, float], lr: float, gamma: Optional[float]) -> None:
        """Record one finished step (`step` counts from 1 within the stage)."""
        self._samples += batch_size
        rate = self._samples / max(time.perf_counter() - self._t0, 1e-9)
        text = " ".join(f"{k} {v:.3f}" for k, v in parts.items())
        text += f" | lr {lr:.2e}" + (f" | γ {gamma:.3f}" if gamma is not None else "") + f" | {rate:.0f} samples/s"
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=text)
        if step % self.log_every == 0:
            self.log.info(f"[{self.stage}] epoch {epoch} step {step}: {text}", console=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
