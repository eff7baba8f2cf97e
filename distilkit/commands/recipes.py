"""`distilkit recipes`: the shipped recipes with their stages and budgets."""

from __future__ import annotations


def recipes() -> None:
    """List the shipped recipes (name, model family, stages, budgets, description); use one with
    `distilkit prune --recipe NAME`."""
    from rich.console import Console
    from rich.table import Table

    from distilkit.recipes import load_recipe, shipped_recipes

    table = Table(title="shipped recipes (distilkit prune --recipe NAME)")
    for col in ("name", "family", "stages", "budgets", "description"):
        table.add_column(col, overflow="fold")
    for name in shipped_recipes():
        r = load_recipe(name)
        table.add_row(r.name, r.model_family.name, " → ".join(s.name for s in r.stages), ", ".join(r.budgets), r.description)
    Console().print(table)
