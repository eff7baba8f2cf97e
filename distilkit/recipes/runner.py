"""Run a recipe end to end: check inputs, plan, train each stage (resumable), evaluate, report.

The output directory (`--out`, default `runs/<recipe>`), what marks it as distilkit's and what `--force`
may delete: see `distilkit.recipes.outdir`. In a torchrun job every rank checks its inputs and the ranks
compare what they were started with; rank 0 alone reads and writes the run folder and tells the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch

import distilkit
import distilkit.io as dio
from distilkit.errors import DistilkitError
from distilkit.recipes.amp import check_amp
from distilkit.recipes.distributed import Dist, code_version, setup, teardown
from distilkit.recipes.datasets import Concat
from distilkit.recipes.measure import measure
from distilkit.recipes.models import model_name
from distilkit.recipes.outdir import CHECKPOINT, METRICS, MODEL_DIR, Prepared, finished_row, prepare_out_dir, write_record
from distilkit.recipes.planning import plan
from distilkit.recipes.progress import RunLog
from distilkit.recipes.report import build_report, print_summary, write_json_atomic, write_report
from distilkit.recipes.schema import Recipe, Stage, load_recipe
from distilkit.recipes.stage_training import stage_trainer
from distilkit.recipes.stages import finish_stage, setup_stage
from distilkit.recipes.state import seed_everything
from distilkit.recipes.teachers import resolve_teacher



@dataclass
class PruneOptions:
    """What `distilkit prune` was asked to do (CLI flags one to one)."""

    recipe: str = "mixformerv2-s"
    budget: Optional[str] = None
    data: str = "synthetic"
    eval_data: Optional[str] = None
    teacher: Optional[str] = None
    init_backbone: Optional[str] = None
    out: Optional[str] = None
    seed: int = 0
    resume: bool = False
    force: bool = False
    dry_run: bool = False
    device: Optional[str] = None
    until: Optional[str] = None


# -- output directory ------------------------------------------------------------------------------
def _identity(recipe: Recipe, budget: str, opts: PruneOptions, teacher_label: Optional[str]) -> dict[str, Any]:
    with open(recipe.source, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    return {"recipe": recipe.name, "recipe_sha256": digest, "budget": budget, "data": opts.data,
            "eval_data": opts.eval_data or recipe.model_family.default_eval_label, "teacher": teacher_label,
            "init_backbone": opts.init_backbone, "seed": opts.seed}


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the state dict (names, shapes, bytes): equal digests mean identical weights."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# -- run -------------------------------------------------------------------------------------------
class RecipeRun:
    """One `distilkit prune` invocation (every process of a torchrun job builds one)."""

    def __init__(self, opts: PruneOptions, log_console: Any = None):
        self.opts = opts
        self.recipe = load_recipe(opts.recipe)
        self.family = self.recipe.model_family
        self.budget_name = opts.budget or self.family.default_budget(self.recipe, opts.data)
        self.budget = self.recipe.budget(self.budget_name)
        self.out = opts.out or os.path.join("runs", self.recipe.name)
        self.route = self._route(opts.until)
        self.teacher_source = resolve_teacher(opts.teacher, self.budget.teacher)
        self.console = log_console

    def _route(self, until: Optional[str]) -> list[Stage]:
        """The stages this invocation runs: the whole recipe, or its stages up to and including `--until`."""
        names = [s.name for s in self.recipe.stages]
        if until is None:
            return list(self.recipe.stages)
        if until not in names:
            raise DistilkitError(f"--until {until!r}: recipe {self.recipe.name} has no such stage; its stages are "
                                 f"{', '.join(names)}")
        return list(self.recipe.stages[: names.index(until) + 1])

    def start(self, dist: Dist) -> None:
        """Everything that can fail without training: data paths and ground truth, the teacher checkpoint,
        the whole route (planned on untrained models; with MACs only for --dry-run, which prints them)."""
        opts, budget = self.opts, self.budget
        if not opts.dry_run:  # a plan needs no GPU
            try:
                check_amp(budget.amp, dist.device)
            except DistilkitError as err:
                raise self.recipe.fail(("budgets", self.budget_name, "amp"), str(err)) from None
        family = self.family
        self.train_sets = family.datasets(opts.data, budget, "train")
        family.check_training_data(self.train_sets, budget, self.route)
        eval_parts = family.datasets(opts.eval_data, budget, "test") if opts.eval_data else [family.default_eval_set(budget)]
        self.eval_set = eval_parts[0] if len(eval_parts) == 1 else Concat(eval_parts)
        src = self.teacher_source
        self.teacher = family.load_teacher(src.path, self.recipe.stages[0], budget, src.label) if src.path else None
        self.plan_rows = plan(self.recipe, self.budget_name, self.teacher, macs=opts.dry_run)[: len(self.route)]
        self.mae_stages = self._mae_stages() if opts.init_backbone else []
        if self.mae_stages:  # the file's layout and widths are checked before anything trains
            family.load_backbone(family.build(self.recipe.stages[self.mae_stages[0]], budget), opts.init_backbone)
        self.dist = dist

    def _mae_stages(self) -> list[int]:
        """Stages whose backbone starts from --init-backbone, as in the official route: the teacher when it is
        trained here, and the first distilled student (instead of a copy of its teacher's backbone)."""
        stages = self.recipe.stages
        first = [i for i, s in enumerate(stages) if s.kind == "teacher" and self.teacher is None][:1]
        first += [i for i, s in enumerate(stages) if s.kind == "distill"][:1]
        if not first:
            raise DistilkitError("--init-backbone: this recipe trains no teacher (--teacher given) and has no distill stage "
                                 "to start from it")
        return first

    def _start_from_mae(self, name: str, setup: Any, log: RunLog) -> None:
        """Load --init-backbone into the stage's student; its backbone then trains at the backbone learning rate."""
        loaded, missing, unexpected = self.family.load_backbone(setup.student, self.opts.init_backbone)
        setup.inherited = loaded if setup.inherited is None else setup.inherited | loaded
        log.info(f"[{name}] backbone from --init-backbone {self.opts.init_backbone}: {len(loaded)} tensors; "
                 f"missing {', '.join(missing) or 'none'}; unexpected {', '.join(unexpected) or 'none'}")

    def run(self) -> dict[str, Any]:
        dist = setup(self.opts.device)
        try:
            self._start_agreed(dist)
            if self.opts.dry_run:
                return {"plan": self.plan_rows}
            return self._run()
        finally:
            teardown(dist)

    def _start_agreed(self, dist: Dist) -> None:
        """`start` on every rank; in a torchrun job the ranks then compare their inputs (`facts`), so a rank
        that failed its checks or was started differently stops every rank with one line before anything runs."""
        if not dist.enabled:
            self.start(dist)
            return
        try:
            self.start(dist)
        except DistilkitError as err:
            dist.agree({}, str(err))
        except Exception as err:  # a bug on this rank: the others stop with one line, this one keeps the traceback
            dist.gather((f"failed: {type(err).__name__}: {err}", {}))
            raise
        dist.agree(self.facts())

    def facts(self) -> dict[str, str]:
        """What every rank of a job must agree on, as short digests: the code, recipe file, budget, data (spec
        and the sequences found), evaluation data, teacher (path and weights), seed, output folder and flags."""
        o = self.opts

        def digest(value: Any) -> str:
            return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]

        def sequences(parts: list[Any]) -> list[Any]:
            return [[len(p), getattr(p, "names", None)] for p in parts]

        eval_parts = self.eval_set.parts if isinstance(self.eval_set, Concat) else [self.eval_set]
        ident = _identity(self.recipe, self.budget_name, o, self.teacher_source.label)
        facts = {"distilkit code": code_version(), "--recipe": digest([ident["recipe"], ident["recipe_sha256"]]),
                 "--budget": digest(ident["budget"]), "--data": digest([o.data, sequences(self.train_sets)]),
                 "--eval-data": digest([o.eval_data, sequences(eval_parts)]), "--teacher": digest(self.teacher_source.label),
                 "--init-backbone": digest(o.init_backbone),
                 "--seed": digest(o.seed), "--out": digest(self.out),
                 "--resume/--force/--dry-run": digest([o.resume, o.force, o.dry_run])}
        if self.teacher is not None:
            facts["--teacher weights"] = weights_digest(self.teacher)
        return facts

    def _announce(self, log: RunLog, resumed: bool) -> None:
        b, o = self.budget, self.opts
        log.info(f"distilkit {distilkit.__version__} prune: recipe {self.recipe.name} ({self.recipe.source})")
        log.info(f"  budget  {self.budget_name}: {' '.join(b.description.split())}")
        noun = self.family.item_noun
        log.info(f"  family  {self.family.name}")
        log.info(f"  data    train {o.data} ({sum(len(d) for d in self.train_sets)} {noun}); "
                 f"eval {o.eval_data or self.family.default_eval_label} ({len(self.eval_set)} {noun})")
        log.info(f"  batch   {b.batch_size}/process × {self.dist.world_size} process(es) on {self.dist.device}")
        for line in self.family.budget_lines(b):
            label, _, rest = line.partition(" ")
            log.info(f"  {label:<7} {rest}")
        log.info(f"  teacher {self.teacher_source.label or 'trained here (stage ' + repr(self.recipe.stages[0].name) + ')'}")
        log.info(f"  out     {self.out}{' (resuming)' if resumed else ''}; seed {o.seed}")
        given = self.teacher is not None and self.route[0].kind == "teacher"
        log.info("  route   " + " -> ".join(f"{s.name} [{'given' if given and i == 0 else f'{b.stage(s.name).epochs} ep'}]"
                                            for i, s in enumerate(self.route)))

    def _claim(self, identity: dict[str, Any]) -> Prepared:
        """Rank 0: check/prepare `--out` and, for a new run, write run.json (before anything else goes there)."""
        prepared = prepare_out_dir(self.out, self.recipe, identity, self.opts.resume, self.opts.force)
        if not prepared.resumed:
            write_record(self.out, {**identity, "stages": [s.name for s in self.recipe.stages],
                                    "world_size": self.dist.world_size, "version": distilkit.__version__})
        return prepared

    def _run(self) -> dict[str, Any]:
        dist, opts = self.dist, self.opts
        identity = _identity(self.recipe, self.budget_name, opts, self.teacher_source.label)
        prepared = dist.on_main(lambda: self._claim(identity))
        log = RunLog(self.out, enabled=dist.is_main, console=self.console)
        if opts.resume and not prepared.resumed:  # one command for the first start and every restart (e.g. preemptible jobs)
            log.info(f"--resume: nothing to resume in {self.out} (no earlier run there); starting a fresh run")
        for note in prepared.notes:
            log.info(note)
        threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        if self.budget.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if self.budget.threads and not dist.enabled:
            torch.set_num_threads(self.budget.threads)
        try:
            self._announce(log, prepared.resumed)
            t_start = time.perf_counter()
            rows: list[dict[str, Any]] = []
            previous = None
            for index, stage in enumerate(self.route):
                row, previous = self._stage(index, stage, previous, log)
                rows.append(row)
            return dist.on_main(lambda: self._report(rows, log, time.perf_counter() - t_start))
        except DistilkitError as err:
            log.info(f"error: {err}", console=False)
            raise
        except KeyboardInterrupt:
            log.info(f"interrupted: continue with the same command plus --resume (output {self.out})")
            raise
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)
            log.close()

    def _report(self, rows: list[dict[str, Any]], log: RunLog, wall_seconds: float) -> dict[str, Any]:
        """Rank 0: the baseline, report.json/.md and the plot; prints the summary table."""
        opts = self.opts
        refs = self.family.baselines(self.out, self.eval_set, log)
        total = sum(r.get("seconds", 0.0) + r.get("eval_seconds", 0.0) for r in rows)
        model_dir = os.path.join(self.out, rows[-1]["name"], MODEL_DIR)
        command = self.family.eval_command(self.opts.recipe, self.budget_name, opts.eval_data, model_dir)
        report = build_report(self.recipe.name, self.budget_name, opts.data,
                              opts.eval_data or self.family.default_eval_label, refs,
                              rows, {"family": self.family.name, "eval_command": command, "seed": opts.seed,
                                     "world_size": self.dist.world_size, "device": self.dist.device,
                                     "total_seconds": total, "wall_seconds_this_invocation": wall_seconds})
        write_report(self.out, report, self.family)
        print_summary(log.console, report, self.family)
        log.info(f"report: {os.path.join(self.out, 'report.md')}")
        return report

    def _finished(self, stage: Stage, stage_dir: str, log: RunLog) -> Optional[tuple[dict[str, Any], Any]]:
        """Rank 0: (metrics row, model) of a stage an earlier invocation finished, or None to run it. A damaged
        metrics.json or model folder (e.g. after a power loss) is removed and the stage runs again."""
        row, why = finished_row(stage_dir, stage.name)
        if row is not None:
            try:
                model = dio.load(os.path.join(stage_dir, MODEL_DIR))
            except DistilkitError as err:
                row, why = None, f"its model is unreadable ({err})"
            except OSError as err:
                row, why = None, f"its model is unreadable ({err.strerror or err})"
        if row is None:
            if why:
                log.info(f"[{stage.name}] {why}: running the stage again")
                os.remove(os.path.join(stage_dir, METRICS))
            return None
        checkpoint = os.path.join(stage_dir, CHECKPOINT)
        if os.path.lexists(checkpoint):  # its removal did not reach the disk before a crash
            os.remove(checkpoint)
        log.info(f"[{stage.name}] finished earlier: skipped")
        return row, model

    def _record(self, stage: Stage, stage_dir: str, result: Any, seconds: float, info: dict[str, Any],
                log: RunLog) -> dict[str, Any]:
        """Rank 0: save the stage's model, measure it, write metrics.json (last: it marks the stage finished)."""
        budget = self.budget
        dio.save(result, os.path.join(stage_dir, MODEL_DIR))
        row = {"name": stage.name, "kind": stage.kind,
               "model": model_name(stage, budget) if stage.model else None, "seconds": seconds,
               **measure(self.family, result, budget, self.eval_set, stage_dir, stage.name, log, self.dist.device), **info}
        write_json_atomic(os.path.join(stage_dir, METRICS), row)
        checkpoint = os.path.join(stage_dir, CHECKPOINT)
        if os.path.exists(checkpoint):
            os.remove(checkpoint)
        accuracy = " ".join(f"{label} {row[key]:.3f}" for key, label in self.family.metrics)
        log.info(f"[{stage.name}] done in {seconds:.0f} s: depth {row['depth']}, MLP ratio {row['mlp_ratio']:g}, "
                 f"{row['params']:,} params, {row['macs'] / 1e6:,.1f} MMACs, {row['fps']:.1f} FPS, {accuracy}")
        return row

    def _stage(self, index: int, stage: Stage, previous: Any, log: RunLog) -> tuple[dict[str, Any], Any]:
        """Run (or skip, when rank 0 finds it finished) one stage; returns its metrics row and its model."""
        dist, budget = self.dist, self.budget
        stage_dir = os.path.join(self.out, stage.name)
        done = dist.on_main(lambda: self._finished(stage, stage_dir, log))
        if done is not None:
            return done
        log.info(f"[{stage.name}] {stage.kind} stage" + (f": {stage.description}" if stage.description else ""))
        seed_everything(self.opts.seed * 1000 + index)
        info: dict[str, Any] = {}
        seconds = 0.0
        if stage.kind == "teacher" and self.teacher is not None:
            result = self.teacher
            info["source"] = self.teacher_source.label
            log.info(f"[{stage.name}] using teacher {self.teacher_source.label}: not trained")
        else:
            setup = setup_stage(self.family, stage, budget, previous, device=dist.device)
            for note in setup.notes:
                log.info(f"[{stage.name}] {note}")
            if index in self.mae_stages:
                self._start_from_mae(stage.name, setup, log)
            trainer = stage_trainer(self.family, stage, budget, setup, self.train_sets, self.opts.seed * 1000 + index,
                                    stage_dir, dist, log)
            trainer.maybe_resume()
            trainer.fit()
            info = finish_stage(stage, setup, float(budget.stage(stage.name).epochs))
            info["final_losses"] = trainer.last_losses
            result = setup.student.cpu()
            seconds = trainer.elapsed
            if dist.enabled:
                info["rank_digests"] = self._check_ranks_agree(stage, result)
        return dist.on_main(lambda: self._record(stage, stage_dir, result, seconds, info, log)), result

    def _check_ranks_agree(self, stage: Stage, model: torch.nn.Module) -> list[str]:
        """Every process must end a stage with identical weights (DDP keeps them in lock-step)."""
        digests = self.dist.gather(weights_digest(model))
        if len(set(digests)) != 1:
            raise DistilkitError(f"stage {stage.name!r}: processes ended with different weights ({digests}); "
                                 "check that every rank runs the same recipe, data and seed")
        return digests

def run_recipe(opts: PruneOptions, console: Any = None) -> dict[str, Any]:
    """Library entry point of `distilkit prune`: returns the report (or {"plan": ...} for a dry run)."""
    return RecipeRun(opts, console).run()
