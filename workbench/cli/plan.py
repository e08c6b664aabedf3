"""`workbench plan MODEL`: the passes of every family and what they cost, before any work.

workbench plan organism-4l                       # measured on this machine
workbench plan llama-3.1-8b --max-tokens 131072  # the 8B geometry on an H200, from stated assumptions
"""

from __future__ import annotations

import typer

from workbench.cli.common import console

#: geometries the plan knows without weights (their costs come from stated device assumptions)
KNOWN_SHAPES = ("llama-3.1-8b", "qwen2-0.5b")


def plan(
    model: str = typer.Argument(
        ..., help=f"a model spec (measured on --device), or one of {', '.join(KNOWN_SHAPES)} (assumed H200)"
    ),
    families: str = typer.Option("all", "--families", "-f", help="comma-separated families, or 'all'"),
    max_tokens: int = typer.Option(256, "--max-tokens", min=2, help="prompt and needle context length"),
    n_prompts: int = typer.Option(
        None, "--n-prompts", min=1, help="prompts / trials / requests per family (default: each family's)"
    ),
    device: str = typer.Option("cpu", "--device", help="device the model is measured on"),
    budget: float = typer.Option(None, "--budget", help="warn (exit 3) when the plan exceeds this many minutes"),
) -> None:
    """Print each family's steps: passes, tokens per pass, decode steps and estimated time; then the total."""
    from workbench.atlas.plan import LLAMA_31_8B, QWEN2_05B, Workload, assumed_costs, geometry_of, measure_costs, plan_atlas
    from workbench.families.registry import resolve_families

    names = resolve_families(None if families == "all" else families.split(","))
    work = Workload(n_tokens=max_tokens, n_prompts=n_prompts)
    if model in KNOWN_SHAPES:
        geo = LLAMA_31_8B if model == "llama-3.1-8b" else QWEN2_05B
        cost, notes = assumed_costs(geo)
        label = f"{model} geometry (random weights), H200 (assumed)"
    else:
        from workbench.models import load_model

        loaded = load_model(model, device=device)
        geo = geometry_of(loaded)
        cost, notes = measure_costs(loaded, min(256, max_tokens))
        label = f"{model} on {device} (measured)"
    result = plan_atlas(geo, names, cost, notes, work=work, device=label)
    console.print(f"plan for {label}, {max_tokens} tokens")
    typer.echo(result.table())
    for family, seconds in result.by_family().items():
        console.print(f"  {family}: {seconds / 60:.1f} min", markup=False)
    console.print(f"peak memory of the longest pass: {result.peak_bytes / 2**30:.1f} GiB", markup=False)
    for note in result.assumptions:
        console.print(f"  assumption: {note}", markup=False, highlight=False)
    if budget is not None and result.seconds > budget * 60:
        console.print(f"over budget: {result.seconds / 60:.1f} min > {budget:g} min", markup=False)
        raise typer.Exit(3)
