"""`workbench atlas MODEL`: run the analysis families on a model and write a run to the store.

Resuming: ``workbench atlas --resume RUN_ID`` continues that run; ``workbench atlas MODEL
--resume`` continues the latest interrupted (or failed) run of MODEL. A resumed run keeps its
recorded options; only --results, --device, --quiet and the executor options may be given,
and any other option given must equal the recorded one. Exit codes: 0 done, 2 bad input,
130 interrupted.

Executors: ``--executor local`` (default) computes every part in this process; ``--executor
ray`` hands the parts to Ray actors (``--ray-address``, ``--ray-workers``), each loading the
model once. Either way this process alone writes the store, so the stored run is the same.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from pathlib import Path
from typing import Any

import typer

from workbench.cli.common import console, err_console
from workbench.errors import InputDataError, WorkbenchError

_EXIT_INTERRUPTED = 130


def atlas(
    model: str = typer.Argument(None, help="shipped model name, local Hugging Face folder or cached hub id (with --resume: a run id or a model)"),
    families: str = typer.Option(None, "--families", "-f", help="comma-separated families, or 'all' (default)"),
    config: Path = typer.Option(None, "--config", "-c", help="YAML or TOML file holding any of these options"),
    results: Path = typer.Option(None, "--results", "-r", help="results folder (default ./wb-results or $WORKBENCH_RESULTS)"),
    prompts: Path = typer.Option(None, "--prompts", help="prompt file: one prompt per line, a .json list or .jsonl"),
    n_prompts: int = typer.Option(None, "--n-prompts", help="prompts per family (default: the family's own default)"),
    max_tokens: int = typer.Option(None, "--max-tokens", help="longest prompt in tokens (default 256)"),
    seed: int = typer.Option(None, "--seed", help="random seed (default 0)"),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto (default)"),
    dtype: str = typer.Option(None, "--dtype", help="float32 (default), float16 or bfloat16"),
    set_options: list[str] = typer.Option([], "--set", "--option", help="family option FAMILY.KEY=VALUE, e.g. sinks.eps=0.2 (repeatable)"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run: --resume RUN_ID, or MODEL --resume for its latest"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or messages"),
    executor: str = typer.Option(None, "--executor", help="local (default: this process) or ray (Ray actors; needs the optional ray extra)"),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster address, e.g. auto or HOST:6379 (default: $RAY_ADDRESS, else a local Ray)"),
    ray_workers: int = typer.Option(None, "--ray-workers", help="Ray actors, each with one model copy (default: one per GPU, else one per CPU)"),
) -> None:
    """Run the head atlas (all families by default) on MODEL and store the run."""
    from workbench.families.options import resolve_options

    cli = {
        "model": None if resume else model, "families": families, "results": results, "prompts": prompts,
        "n_prompts": n_prompts, "max_tokens": max_tokens, "seed": seed, "device": device, "dtype": dtype,
        "quiet": True if quiet else None, "executor": executor, "ray_address": ray_address, "ray_workers": ray_workers,
    }
    opts = resolve_options(cli, config, set_options)
    from workbench.executors import make_executor

    runner = make_executor(opts.executor, opts.ray_address, opts.ray_workers, opts.device, opts.quiet)
    try:
        if resume:
            run_id = _resume(opts, model, set_options, runner)
        else:
            run_id = _new_run(opts, runner)
    finally:
        runner.close()
    if not opts.quiet:
        console.print(f"report: workbench report {run_id} --results {opts.results}", highlight=False, soft_wrap=True)


# -- a new run ---------------------------------------------------------------------------------------


def _driver_device(opts: Any, device: str) -> str:
    """With Ray the workers compute; this process only plans (geometry, tokenizer): CPU is enough."""
    return "cpu" if opts.executor == "ray" else device


def _new_run(opts: Any, runner: Any) -> str:
    from workbench.families.context import RunContext
    from workbench.families.prompts import read_prompt_file
    from workbench.families.registry import build_family
    from workbench.families.runner import start_run
    from workbench.store.store import Store, ensure_writable

    if opts.model is None:
        raise WorkbenchError("no model given", "name one: workbench atlas MODEL (or set `model:` in the config file)")
    texts = read_prompt_file(opts.prompts) if opts.prompts is not None else None
    fams = {name: build_family(name, opts.family_options.get(name)) for name in opts.families}
    ensure_writable(opts.results)
    loaded = _load(opts.model, _driver_device(opts, opts.device), opts.dtype, opts.quiet)
    if texts is not None:
        _check_prompts(loaded, texts)
    store = Store.open(opts.results, write=True)
    ctx = RunContext(
        seed=opts.seed, max_tokens=opts.max_tokens, n_prompts=opts.n_prompts, device=opts.device, dtype=opts.dtype,
        prompts=texts, prompt_file=opts.prompts, family_options=opts.family_options, quiet=opts.quiet,
    )
    config = {
        "model": opts.model, "families": opts.families, "results": str(opts.results.resolve()),
        "prompts": None if opts.prompts is None else str(opts.prompts.resolve()),
        "prompts_sha256": None if texts is None else hashlib.sha256(json.dumps(texts).encode()).hexdigest(),
        "n_prompts": opts.n_prompts, "max_tokens": opts.max_tokens, "seed": opts.seed,
        "device": runner.worker_device() if opts.executor == "ray" else str(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "family_options": {n: _asdict(f.config) for n, f in fams.items()},
    }
    with store:
        writer = start_run(store, loaded, fams, ctx, config)
        if not opts.quiet:
            where = f"Ray workers ({config['device']})" if opts.executor == "ray" else str(loaded.device)
            err_console.print(f"run [bold]{writer.run_id}[/]: {loaded.name} on {where}, families {', '.join(fams)}", highlight=False)
        _execute(writer, loaded, fams, ctx, opts, runner)
    return writer.run_id


def _asdict(config: Any) -> dict[str, Any]:
    from workbench.families.base import config_to_dict

    return config_to_dict(config)


def _load(spec: str, device: str, dtype: str, quiet: bool) -> Any:
    from workbench.models import load_model

    if not quiet:
        with err_console.status(f"loading {spec} ..."):
            return load_model(spec, device=device, dtype=dtype)
    return load_model(spec, device=device, dtype=dtype)


def _check_prompts(model: Any, texts: list[str]) -> None:
    for i, text in enumerate(texts):
        n = int(model.to_tokens(text).shape[1])
        if n < 2:
            raise InputDataError(f"prompt {i} of the prompt file ({text[:40]!r}) has {n} token(s)", "give prompts of at least 2 tokens")


# -- running, with interrupts --------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _execute(writer: Any, model: Any, fams: dict, ctx: Any, opts: Any, runner: Any) -> None:
    from workbench.cli.progress import RunProgress
    from workbench.families.runner import run_families

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    t0 = time.perf_counter()
    try:
        with RunProgress(enabled=not opts.quiet) as progress:
            ctx.progress = progress.step
            run_families(writer, model, fams, ctx, on_part=progress.on_part, executor=runner)
            progress.finish_parts(sum(len(writer.parts(n)) for n in fams))
    except KeyboardInterrupt:
        err_console.print(
            f"[bold yellow]interrupted:[/] run {writer.run_id} is marked interrupted; finished parts are kept.\n"
            f"  resume with: workbench atlas --resume {writer.run_id} --results {opts.results}",
            highlight=False, soft_wrap=True,
        )
        raise typer.Exit(_EXIT_INTERRUPTED) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not opts.quiet:
        err_console.print(f"run [bold]{writer.run_id}[/] complete in {time.perf_counter() - t0:.1f} s", highlight=False)


# -- resuming ------------------------------------------------------------------------------------------


def _pick_run(store: Any, ref: str | None) -> Any:
    resumable = ("interrupted", "failed")
    runs = store.runs()
    if ref is not None:
        exact = [r for r in runs if r.run_id == ref] or [r for r in runs if r.run_id.startswith(ref)]
        if len(exact) == 1:
            return exact[0]
        if len(exact) > 1:
            raise WorkbenchError(f"run id prefix {ref!r} matches {len(exact)} runs", "give more of the run id")
        as_path = Path(ref).expanduser()
        folder = str(as_path.resolve()) if as_path.exists() else None
        by_model = [r for r in runs if r.model in (ref, folder) and r.status in resumable]
        if not by_model:
            raise WorkbenchError(
                f"no interrupted run of {ref!r} (and no run with that id) in {str(store.root)!r}",
                "list runs with `workbench runs`; start a new run without --resume",
            )
        return by_model[0]
    pending = [r for r in runs if r.status in resumable]
    if not pending:
        raise WorkbenchError(f"no interrupted run in {str(store.root)!r}", "start a new run without --resume")
    return pending[0]


def _resume(opts: Any, ref: str | None, set_options: list[str], runner: Any) -> str:
    from workbench.families.base import make_config
    from workbench.families.context import RunContext
    from workbench.families.options import RESULT_KEYS
    from workbench.families.registry import family_class
    from workbench.store.store import Store

    store = Store.open(opts.results, write=True)
    with store:
        info = _pick_run(store, ref if ref is not None else opts.model)
        if info.status == "complete":
            raise WorkbenchError(f"run {info.run_id} is already complete", "start a new run instead of --resume")
        if info.status == "running":
            raise WorkbenchError(f"run {info.run_id} is still running (process {info.pid} on {info.host})", "wait for it or stop it first")
        recorded = info.config
        if set_options:
            raise WorkbenchError("--set cannot change a resumed run", f"run {info.run_id} keeps the options it was started with")
        for key in RESULT_KEYS:
            if key in opts.given:
                mine = getattr(opts, key)
                theirs = recorded.get(key)
                if mine != theirs:
                    raise WorkbenchError(
                        f"{key} = {mine!r} differs from run {info.run_id}, which was started with {key} = {theirs!r}",
                        "drop the option to resume with the recorded one, or start a new run",
                    )
        device = opts.device if "device" in opts.given else "auto"
        loaded = _load(info.model, _driver_device(opts, device), recorded.get("dtype", "float32"), opts.quiet)
        from workbench.families.runner import model_identity

        now = model_identity(loaded)
        if info.model_hash and now["hash"] != info.model_hash:
            raise WorkbenchError(
                f"model {info.model!r} changed since run {info.run_id} started (fingerprint {now['hash'][:12]} vs {info.model_hash[:12]})",
                "resume with the same weights, or start a new run",
            )
        texts = None
        prompts_file = store.run_dir(info.run_id) / "prompts.json"
        if prompts_file.is_file():
            texts = json.loads(prompts_file.read_text(encoding="utf-8"))
        options = {f.family: f.options for f in store.families(info.run_id)}
        fams = {}
        for name in info.families:
            cls = family_class(name)
            fams[name] = cls(make_config(cls.config_class, options.get(name, {}), name))
        ctx = RunContext(
            seed=recorded.get("seed", 0), max_tokens=recorded.get("max_tokens", 256), n_prompts=recorded.get("n_prompts"),
            device=str(loaded.device), dtype=recorded.get("dtype", "float32"), prompts=texts,
            family_options=options, quiet=opts.quiet,
        )
        from workbench.store.runs import RunWriter

        writer = RunWriter.claim(store, info.run_id)
        if not opts.quiet:
            err_console.print(
                f"resuming run [bold]{info.run_id}[/]: {info.parts_done}/{info.parts_total} parts already done", highlight=False
            )
        _execute(writer, loaded, fams, ctx, opts, runner)
    return info.run_id
