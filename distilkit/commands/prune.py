"""`distilkit prune --recipe NAME|PATH`: run a compression recipe end to end (resumable, torchrun-aware)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from distilkit.limits import MAX_SEED


def _plan_table(rows: list[dict], title: str, family):
    from rich.table import Table

    table = Table(title=title)
    for col in ("stage", "kind", "depth", "MLP r", "model", "params", "MMACs", "epochs"):
        table.add_column(col, justify="left" if col in ("stage", "kind", "model") else "right", no_wrap=True)
    for r in rows:
        table.add_row(r["name"], r["kind"], str(r["depth"]), f"{r['mlp_ratio']:g}", family.architecture(r), f"{r['params']:,}",
                      f"{r['macs'] / 1e6:,.1f}", str(r["epochs"]))
    return table


def _loss_lines(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        text = ", ".join(f"{k} ×{v:g}" for k, v in r["losses"].items())
        if r.get("remove"):
            text += f"; removes layers {r['remove']}"
        lines.append(f"  {r['name']}: {text}")
    return lines


def prune(
    recipe: str = typer.Option("mixformerv2-s", "--recipe",
                               help="Shipped recipe name (see `distilkit recipes`) or path to a YAML recipe."),
    budget: Optional[str] = typer.Option(None, "--budget",
                                         help="Budget from the recipe: demo (default with synthetic data) or paper (default with "
                                              "real data)."),
    data: str = typer.Option("synthetic", "--data",
                             help="Training data, comma-separated to mix: synthetic[:N] (the family's built-in data); "
                                  "tracking recipes also got10k:DIR, lasot:DIR, trackingnet:DIR, coco:DIR; "
                                  "vit-classifier imagefolder:DIR."),
    eval_data: Optional[str] = typer.Option(None, "--eval-data",
                                            help="Evaluation data (same syntax, test splits; not coco, training data only); "
                                                 "default: the held-out split of the family's built-in data."),
    teacher: Optional[str] = typer.Option(None, "--teacher",
                                          help="Teacher checkpoint (distilkit model dir or official .pth.tar), or none to train "
                                               "it here. Default: the budget's shipped teacher (the demo has one), else trained "
                                               "here."),
    init_backbone: Optional[str] = typer.Option(None, "--init-backbone",
                                                help="Backbone checkpoint that the teacher (when trained here) and the first "
                                                     "distilled student start from; tracking recipes: MAE ViT-B (e.g. "
                                                     "mae_pretrain_vit_base.pth), as in the official route."),
    out: Optional[str] = typer.Option(None, "--out", help="Output directory (default runs/<recipe>)."),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED, help=f"Random seed (models, sampling), 0 to {MAX_SEED}."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out; finished stages are skipped."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run in --out."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Print the plan: each stage's architecture, params and MACs; train nothing."),
    device: Optional[str] = typer.Option(None, "--device",
                                         help="cpu or cuda (default: cuda when available; torchrun picks cuda:LOCAL_RANK)."),
    until: Optional[str] = typer.Option(None, "--until",
                                        help="Stop after this stage (e.g. teacher); a later --resume without it runs the rest."),
) -> None:
    """Run a compression recipe end to end: teacher, distillation and pruning stages, evaluation, report."""
    from rich.console import Console

    from distilkit.errors import DistilkitError
    from distilkit.recipes.runner import PruneOptions, RecipeRun

    if resume and force:
        raise DistilkitError("--resume and --force contradict each other: pick one")
    opts = PruneOptions(recipe=recipe, budget=budget, data=data, eval_data=eval_data, teacher=teacher,
                        init_backbone=init_backbone, out=out,
                        seed=seed, resume=resume, force=force, dry_run=dry_run, device=device, until=until)
    run = RecipeRun(opts, Console(stderr=True))
    if not dry_run:
        from distilkit.heap import retain_freed_memory

        retain_freed_memory()  # the reports track frames in this process: no per-frame page faults for freed buffers
    result = run.run()
    if dry_run:
        console = Console(width=None if sys.stdout.isatty() else 120)
        b = run.budget
        console.print(f"recipe {run.recipe.name} ({run.recipe.source}), budget {run.budget_name}: "
                      f"{' '.join(b.description.split())}")
        console.print(f"family {run.family.name}; data {data}; {'; '.join(run.family.budget_lines(b))}; MACs per full "
                      "forward at batch 1", markup=False, highlight=False)
        console.print(_plan_table(result["plan"], f"{run.recipe.name}: plan ({run.budget_name} budget)", run.family))
        console.print("losses (weights) per stage:")
        for line in _loss_lines(result["plan"]):
            console.print(line, markup=False, highlight=False)
