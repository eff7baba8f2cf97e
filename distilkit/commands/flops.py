"""`distilkit flops MODEL`: params, exact MACs per module, optional latency, fvcore side by side, head costs."""

from __future__ import annotations

import json
import warnings
from typing import Any, Optional

import typer

from distilkit.errors import DistilkitError
from distilkit.limits import MAX_CROP, MAX_IMAGE_INPUT, MAX_ITERS, MAX_THREADS

COMPARE_WITH = ("fvcore",)


def _is_mixformerv2(net: Any) -> bool:
    from distilkit.trackers.mixformerv2 import MixFormerV2

    return isinstance(net, MixFormerV2)


def _strict_failures(model: Any, inputs: Any, prof: Any, heads: Any) -> tuple[int, list[str]]:
    """(number of checks, every measured figure that differs from its analytic expectation)."""
    from distilkit.profile.analytic import layer_macs

    failures = []
    layers = layer_macs(model, inputs)
    checks = len(layers)
    for name, expected in layers.items():
        measured = prof.modules[name].macs
        if measured != expected:
            failures.append(f"layer {name}: measured {measured:,} MACs, expected {expected:,} from its shapes")
    if _is_mixformerv2(model):
        from distilkit.commands.head_costs import mixformerv2_expected_macs

        expected = mixformerv2_expected_macs(model)
        checks += 1
        if prof.macs != expected:
            failures.append(f"model total: measured {prof.macs:,} MACs, closed form {expected:,}")
    for row in heads.rows if heads is not None else ():
        checks += row.measured is not None
        if not row.ok:
            failures.append(f"{row.name.strip()}: measured {row.measured:,} MACs, expected {row.expected:,}")
    return checks, failures


def _heads_table(report: Any) -> Any:
    from rich.table import Table

    d = report.dims
    table = Table(title=f"Head cost check at D={d['dim']}, {d['feat']}x{d['feat']} search features, corner channel "
                        f"{d['channel']} (MACs)")
    with_fvcore = any(r.fvcore is not None for r in report.rows)
    columns = (["head", "measured", "expected (layer shapes)", "seed"] + (["fvcore (incl. norms)"] if with_fvcore else [])
               + ["note"])
    for col in columns:
        table.add_column(col, justify="left" if col in ("head", "note") else "right")
    fmt = lambda v: "-" if v is None else f"{v:,}"  # noqa: E731
    for r in report.rows:
        cells = [r.name, fmt(r.measured), fmt(r.expected), fmt(r.seed)] + ([fmt(r.fvcore)] if with_fvcore else [])
        table.add_row(*cells, r.note + ("" if r.ok else "  MISMATCH"))
    return table


def flops(
    model: str = typer.Argument(..., metavar="MODEL",
                                help="distilkit model name (e.g. mixformerv2-s), timm:<name>, or a saved model directory."),
    depth: int = typer.Option(2, "--depth", min=0, help="Module depth shown in the table (0 = model only)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables."),
    with_latency: bool = typer.Option(False, "--latency", help="Also time the forward on CPU (median, p90, FPS)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=MAX_THREADS,
                                          help="Intra-op threads for --latency (default: torch's)."),
    iters: Optional[int] = typer.Option(None, "--iters", min=1, max=MAX_ITERS, help="Timed forwards for --latency (default 20)."),
    compare: Optional[str] = typer.Option(None, "--compare", help="Show another counter's MACs beside ours: fvcore."),
    heads: bool = typer.Option(False, "--heads",
                               help="MixFormerV2: T4 / Py-Corner / corner head costs beside the figures stated in the paper's "
                                    "supplement (the 'seed' column)."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if a measured count deviates from its analytic expectation."),
    input_size: Optional[int] = typer.Option(None, "--input-size", min=1, max=MAX_IMAGE_INPUT,
                                             help="Image side for image models (timm:, saved)."),
    template_size: Optional[int] = typer.Option(None, "--template-size", min=1, max=MAX_CROP,
                                                help="Template side in px for trackers."),
    search_size: Optional[int] = typer.Option(None, "--search-size", min=1, max=MAX_CROP, help="Search side in px for trackers."),
    cached: bool = typer.Option(False, "--cached",
                                help="MixFormerV2: count the per-frame path a tracker runs (templates cached once, "
                                     "forward_search) instead of the full forward."),
) -> None:
    """Count params and exact MACs (linear, conv, matmul, attention incl. SDPA) of MODEL; FLOPs = 2 x MACs."""
    timing_only = [flag for flag, value in (("--threads", threads), ("--iters", iters)) if value is not None]
    if timing_only and not with_latency:
        raise DistilkitError(f"{' and '.join(timing_only)} only apply with --latency")
    if compare is not None and compare not in COMPARE_WITH:
        raise DistilkitError(f"unknown --compare {compare!r}; valid: {', '.join(COMPARE_WITH)}")
    from distilkit.commands.models import resolve_model
    from distilkit.profile import UncountedOpsWarning, latency, profile

    net, inputs = resolve_model(model, input_size=input_size, template_size=template_size, search_size=search_size)
    if cached:
        if not _is_mixformerv2(net):
            raise DistilkitError(f"--cached applies to MixFormerV2 models, not {model!r}")
        clash = [flag for flag, on in (("--strict", strict), ("--compare", compare is not None), ("--heads", heads)) if on]
        if clash:  # their references (closed forms, fvcore, head figures) are for the full forward
            raise DistilkitError(f"--cached cannot be combined with {', '.join(clash)}")
        from distilkit.trackers.mixformerv2 import CachedSearchStep

        net, inputs = CachedSearchStep(net, inputs["template"], inputs["online_template"]), {"search": inputs["search"]}
    report = None
    if heads:
        if not _is_mixformerv2(net):
            raise DistilkitError(f"--heads applies to MixFormerV2 models, not {model!r}")
        from distilkit.commands.head_costs import head_report

        cfg = net.config
        report = head_report(cfg.embed_dim, cfg.search_feat_size, cfg.corner_channel, with_fvcore=compare == "fvcore")
    with warnings.catch_warnings():  # reported below (table) or in the JSON, not twice
        warnings.simplefilter("ignore", UncountedOpsWarning)
        prof = profile(net, inputs)
    reference = None
    if compare == "fvcore":
        from distilkit.profile.reference import fvcore_macs

        reference = fvcore_macs(net, inputs)
    timing = latency(net, inputs, threads=threads, iters=20 if iters is None else iters) if with_latency else None

    if as_json:
        out: dict[str, Any] = {"spec": model, **prof.to_dict()}
        if reference is not None:
            out["compare"] = {"fvcore": {"macs": reference.get("", 0), "modules": reference, "unit": "fvcore flops (= MACs)"}}
        if timing is not None:
            out["latency"] = timing.to_dict() | {"unit": "ms"}
        if report is not None:
            out["heads"] = report.to_dict()
        typer.echo(json.dumps(out, indent=2))
    else:
        from rich.console import Console

        console = Console(width=max(Console().width, 160))
        console.print(prof.table(depth=depth, reference=reference))
        console.print(prof.summary())
        if prof.other_ops:
            console.print("other ops (output elements, not in MACs): "
                          + ", ".join(f"{k} {v:,}" for k, v in prof.other_ops.items()))
        if prof.uncounted_ops:
            console.print("[yellow]ops with no cost handle (not counted): "
                          + ", ".join(f"{k} x{v}" for k, v in prof.uncounted_ops.items()))
        if reference is not None:
            diff = prof.macs - reference.get("", 0)
            console.print(f"fvcore: {reference.get('', 0):,} MACs; ours - fvcore = {diff:+,} "
                          "(fvcore skips scaled_dot_product_attention and adds norms/upsampling)")
        if timing is not None:
            console.print(f"latency: {timing.summary()}")
        if report is not None:
            console.print(_heads_table(report))
            console.print(f"ratio Py-Corner / T4 (72 bins): {report.ratio:,.1f}")
            console.print(report.explanation)
    if strict:
        checks, failures = _strict_failures(net, inputs, prof, report)
        if failures:
            more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
            typer.secho(f"strict: {failures[0]}{more}", err=True, fg=typer.colors.RED)
            raise typer.Exit(code=1)
        if not as_json:
            typer.echo(f"strict: all {checks} counts match their analytic values (layer shapes"
                       + (", closed-form model total" if _is_mixformerv2(net) else "") + ")")
