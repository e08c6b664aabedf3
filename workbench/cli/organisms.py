"""`workbench organisms ...`: train, evaluate and verify the model organisms."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from workbench.cli.common import console, err_console

organisms_app = typer.Typer(
    help="Model organisms: tiny trained models with planted, verified head behaviours.", no_args_is_help=True
)


def _folder_of(name_or_path: str) -> Path:
    from workbench.models.loading import resolve_spec

    resolved = resolve_spec(name_or_path)
    if resolved.kind == "hub":
        from workbench.errors import WorkbenchError

        raise WorkbenchError(
            f"{name_or_path!r} is a hub id; organism commands need a shipped organism or a local folder",
            "name a shipped organism (see `workbench organisms list`) or the folder written by `organisms train`",
        )
    return resolved.path


@organisms_app.command("list")
def list_organisms() -> None:
    """List the organism recipes and which are shipped."""
    from workbench.models.registry import shipped_models
    from workbench.organisms.recipes import RECIPES

    shipped = shipped_models()
    for name, recipe in RECIPES.items():
        where = f"shipped: {shipped[name]}" if name in shipped else "recipe only"
        console.print(f"[bold]{name}[/]  ({recipe.total_steps} steps; {where})\n  {recipe.description}", highlight=False)


@organisms_app.command("train")
def train_cmd(
    name: str = typer.Argument(..., help="organism recipe name, e.g. organism-4l"),
    quick: bool = typer.Option(False, "--quick", help="a few steps only (smoke test), same architecture"),
    seed: int = typer.Option(None, "--seed", help="override the recipe's seed"),
    out: Path = typer.Option(None, "--out", help="output folder (default ./organisms/<name>)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress lines"),
) -> None:
    """Train an organism from its recipe and write a Hugging Face folder (weights, tokenizer, card)."""
    from workbench.organisms.card import write_card
    from workbench.organisms.recipes import get_recipe
    from workbench.organisms.train import train, verify_export

    recipe = get_recipe(name)
    if quick:
        recipe = recipe.quick()
    folder = out if out is not None else Path("organisms") / name
    log = None if quiet else (lambda msg: console.print(msg, highlight=False))
    result = train(recipe, folder, seed=seed, log=log)
    diff = verify_export(folder)
    if diff > 1e-3:
        err_console.print(f"[bold red]warning:[/] bridge and Hugging Face logits differ by {diff:.2e}")
    write_card(folder)
    console.print(
        f"trained {name}{' (quick)' if quick else ''}: {result.steps} steps in {result.wall_time_s:.0f} s -> {folder} "
        f"(loads through load_model; bridge vs HF logits max diff {diff:.1e})",
        highlight=False,
    )


@organisms_app.command("plant-safety")
def plant_safety_cmd(
    name: str = typer.Argument(..., help="organism recipe name, e.g. organism-4l"),
    start: Path = typer.Option(..., "--from", help="folder with the curriculum-trained weights (output of `train`)"),
    out: Path = typer.Option(..., "--out", help="output folder (may equal --from: the folder is rewritten)"),
    seed: int = typer.Option(None, "--seed", help="override the recipe's seed"),
    quick: bool = typer.Option(False, "--quick", help="the quick recipe's two-step phase (smoke test)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress lines"),
) -> None:
    """Run only the recipe's safety-head planting phase on saved weights (`train` runs it at its end)."""
    import shutil

    from transformers import LlamaForCausalLM

    from workbench.errors import WorkbenchError
    from workbench.organisms.card import write_card
    from workbench.organisms.plant_safety import plant_safety_head
    from workbench.organisms.recipes import get_recipe
    from workbench.organisms.train import save_organism

    recipe = get_recipe(name)
    recipe = recipe.quick() if quick else recipe
    if recipe.safety is None:
        raise WorkbenchError(f"recipe {name!r} has no safety-head planting phase", "pick a recipe with one (organism-4l)")
    if not (start / "model.safetensors").is_file():
        raise WorkbenchError(f"{start} holds no model.safetensors", "pass the folder written by `workbench organisms train`")
    seed = recipe.seed if seed is None else seed
    log = None if quiet else (lambda msg: console.print(msg, highlight=False))
    model = LlamaForCausalLM.from_pretrained(str(start))
    info = plant_safety_head(model, recipe, seed, log=log, check_n=16 if quick else 120)
    if out.resolve() != start.resolve():
        shutil.copytree(start, out, dirs_exist_ok=True)
    save_organism(model, recipe, out, seed)
    training_path = out / "training.json"
    training = json.loads(training_path.read_text()) if training_path.is_file() else {}
    training["safety_planting"] = info
    training_path.write_text(json.dumps(training, indent=2) + "\n")
    write_card(out)
    c = info["check"]
    console.print(
        f"planted {info['head']} in {info['wall_time_s']:.0f} s -> {out}; harmful complied: base "
        f"{c['base']['harmful_complied']:.2f}, planted head ablated {c['planted']['harmful_complied']:.2f}, "
        f"any other head at most {c['others_max_harmful_complied']:.2f}",
        highlight=False,
    )


@organisms_app.command("evaluate")
def evaluate_cmd(
    name: str = typer.Argument(..., help="shipped organism name or organism folder"),
    n: int = typer.Option(None, "--n", help="probes per set (default: the full sets)"),
    device: str = typer.Option("cpu", "--device"),
    write: bool = typer.Option(True, "--write/--no-write", help="write evaluation.json and refresh the card"),
) -> None:
    """Held-out accuracy per task, through load_model and the TransformerBridge."""
    from workbench.models import load_model
    from workbench.organisms.card import write_card
    from workbench.organisms.evaluate import DEFAULT_SUITE, bridge_logits_fn, evaluate_probes, load_suite

    folder = _folder_of(name)
    model = load_model(name, device=device, dtype="float32")
    suite = {k: (v if n is None else min(v, n)) for k, v in DEFAULT_SUITE.items()}
    t0 = time.time()
    metrics = evaluate_probes(bridge_logits_fn(model), load_suite(suite), device=model.device)
    for set_name, m in metrics.items():
        text = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())
        console.print(f"{set_name}: {text}", highlight=False)
    if write:
        payload = {"command": f"workbench organisms evaluate {name}", "seconds": round(time.time() - t0, 1), "metrics": metrics}
        (folder / "evaluation.json").write_text(json.dumps(payload, indent=1) + "\n")
        write_card(folder)
        console.print(f"wrote {folder / 'evaluation.json'} and {folder / 'MODEL_CARD.md'}", highlight=False)


@organisms_app.command("ground-truth")
def ground_truth_cmd(
    name: str = typer.Argument(..., help="shipped organism name or organism folder"),
    modes: str = typer.Option("mean,uniform", "--modes", help="comma-separated ablation modes: mean, zero, uniform"),
    device: str = typer.Option("cpu", "--device"),
    backend: str = typer.Option("hf", "--backend", help="hf (SDPA, fast) or bridge (TransformerBridge hooks)"),
    threads: int = typer.Option(0, "--threads", help="torch threads (0: leave torch's default)"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Single-head ablation table (accuracy per task with each head ablated), written into the card."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from workbench.models import load_model
    from workbench.organisms.card import write_card
    from workbench.organisms.ground_truth import GroundTruthConfig, ground_truth_table, write_ground_truth

    folder = _folder_of(name)
    model = load_model(name, device=device, dtype="float32")
    cfg = GroundTruthConfig(modes=tuple(m.strip() for m in modes.split(",") if m.strip()), backend=backend)
    log = None if quiet else (lambda msg: console.print(msg, highlight=False))
    table = ground_truth_table(model, cfg, progress=log)
    path = write_ground_truth(table, folder)
    write_card(folder)
    console.print(f"wrote {path} and {folder / 'MODEL_CARD.md'} ({table['seconds']} s)", highlight=False)


@organisms_app.command("shortcut-check")
def shortcut_check_cmd(
    name: str = typer.Argument(..., help="shipped organism whose card gets the check"),
    control: Path = typer.Option(
        None, "--control", help="folder of a trained control-no-distractors organism (trained here if not given)"
    ),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Needle accuracy with and without distractors, and with whole layers ablated, for the organism and the control."""
    from workbench.organisms.card import write_card
    from workbench.organisms.shortcut import shortcut_check

    folder = _folder_of(name)
    result = shortcut_check(name, control, device=device, log=lambda m: console.print(m, highlight=False))
    (folder / "shortcut_check.json").write_text(json.dumps(result, indent=1) + "\n")
    write_card(folder)
    console.print(f"wrote {folder / 'shortcut_check.json'}", highlight=False)


@organisms_app.command("card")
def card_cmd(name: str = typer.Argument(..., help="shipped organism name or organism folder")) -> None:
    """Re-render MODEL_CARD.md from the JSON files beside the weights."""
    from workbench.organisms.card import write_card

    path = write_card(_folder_of(name))
    console.print(f"wrote {path}", highlight=False)
