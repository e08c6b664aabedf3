"""`workbench atlas MODEL`: run the analysis families on a model and write a run to the store.

Resuming: ``workbench atlas --resume RUN_ID`` continues that run; ``workbench atlas MODEL
--resume`` continues the latest interrupted (or failed) run of MODEL. A resumed run keeps its
recorded options; only --results, --device, --quiet and the executor options may be given,
any other option given must equal the recorded one, and ``--set`` may give a family an input it
was missing (e.g. ``safety.harmful_file``) if none of its parts ran. All of a run's inputs are
checked before any work starts (one message per problem). Exit codes: 0 done, 2 bad input,
130 interrupted.

Lengths: ``--max-tokens N`` caps every prompt and is the needle context (cut to what the model can
hold with the answer, said in the retrieval summary); ``--context N`` runs every family at N tokens
(``--max-tokens N`` plus the families' own lengths, `workbench.atlas.options.CONTEXT_OPTIONS`) and is
refused when the model cannot hold N tokens. An explicit ``--set retrieval.context=M`` still wins.

Executors: ``--executor local`` (default) computes every part in this process; ``--executor
ray`` hands the parts to Ray actors (``--ray-address``, ``--ray-workers``), each loading the
model once. Either way this process alone writes the store, so the stored run is the same.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from workbench.cli.common import console, err_console

if TYPE_CHECKING:
    from workbench.atlas.api import AtlasResult

_EXIT_INTERRUPTED = 130


def atlas(
    model: str = typer.Argument(
        None, help="shipped model name, local Hugging Face folder or cached hub id (with --resume: a run id or a model)"
    ),
    families: str = typer.Option(None, "--families", "-f", help="comma-separated families, or 'all' (default)"),
    config: Path = typer.Option(None, "--config", "-c", help="YAML or TOML file holding any of these options"),
    results: Path = typer.Option(None, "--results", "-r", help="results folder (default ./wb-results or $WORKBENCH_RESULTS)"),
    prompts: Path = typer.Option(None, "--prompts", help="prompt file: .txt (one per line), .json list, .jsonl or .csv"),
    prompt_field: str = typer.Option(None, "--prompt-field", help="field holding the prompt in a .jsonl/.json/.csv file"),
    n_prompts: int = typer.Option(None, "--n-prompts", help="prompts per family (default: the family's own default)"),
    max_tokens: int = typer.Option(
        None, "--max-tokens", help="longest prompt in tokens, also the needle context (default 256; capped by the model)"
    ),
    context: int = typer.Option(
        None,
        "--context",
        help=(
            "every family's length in tokens: sets --max-tokens N, the needle context (retrieval.context) and "
            "temporal's periodic prompts (temporal.periodic_tokens) to N; an explicit --set FAMILY.KEY wins; "
            "refused when the model cannot hold N tokens (plus the needle's answer)"
        ),
    ),
    seed: int = typer.Option(None, "--seed", help="random seed (default 0)"),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto (default)"),
    dtype: str = typer.Option(None, "--dtype", help="float32 (default), float16 or bfloat16"),
    set_options: list[str] = typer.Option(
        [], "--set", "--option", help="family option FAMILY.KEY=VALUE, e.g. sinks.eps=0.2 (repeatable)"
    ),
    resume: bool = typer.Option(
        False, "--resume", help="continue an interrupted run: --resume RUN_ID, or MODEL --resume for its latest"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or messages (the run id is still printed)"),
    executor: str = typer.Option(
        None, "--executor", help="local (default: this process) or ray (Ray actors; needs the optional ray extra)"
    ),
    ray_address: str = typer.Option(
        None, "--ray-address", help="Ray cluster address, e.g. auto or HOST:6379 (default: $RAY_ADDRESS, else a local Ray)"
    ),
    ray_workers: int = typer.Option(
        None, "--ray-workers", help="Ray actors, each with one model copy (default: one per GPU, else one per CPU)"
    ),
    budget: float = typer.Option(
        None,
        "--budget",
        help="minutes the run may take: the plan (measured on the model's device) is checked first and a warning says when it is over",
    ),
) -> None:
    """Run the head atlas (all families by default) on MODEL and store the run."""
    from workbench.atlas.api import Atlas
    from workbench.atlas.options import apply_context, context_set_options
    from workbench.cli.progress import RunProgress

    if budget is not None and not budget > 0:
        raise typer.BadParameter(f"the budget must be > 0 minutes, got {budget:g}", param_hint="--budget")
    if context is not None:  # --context N is --max-tokens N plus the families' own lengths (CONTEXT_OPTIONS)
        _, max_tokens = apply_context(context, max_tokens, max_tokens is not None)
        if not resume:  # a resumed run keeps its recorded family options; max_tokens is checked against it
            set_options = [*context_set_options(context, config, list(set_options)), *set_options]

    with RunProgress(enabled=not quiet) as bars:
        progress = CliProgress(bars, quiet)
        runner = Atlas(
            None if resume else model,
            families,
            results,
            executor,
            prompts=prompts,
            prompt_field=prompt_field,
            n_prompts=n_prompts,
            max_tokens=max_tokens,
            seed=seed,
            device=device,
            dtype=dtype,
            ray_address=ray_address,
            ray_workers=ray_workers,
            config=config,
            set_options=set_options,
            progress=progress,
            budget_minutes=budget,
        )
        progress.results = runner.opts.results
        result = _with_interrupts(lambda: runner.resume(model) if resume else runner.run(), progress)
    if quiet:
        console.print(result.run_id, highlight=False, soft_wrap=True)
    else:
        from workbench.cli.findings import load_findings, print_findings

        print_findings(load_findings(runner.opts.results, result.run_id))  # its warnings include the run's
        console.print(
            f"report: workbench report {result.run_id} --results {runner.opts.results}", highlight=False, soft_wrap=True
        )


class CliProgress:
    """The atlas's progress hooks (`workbench.atlas.AtlasProgress`) drawn by a `RunProgress`: rich bars on a
    terminal, timestamped log lines when stderr is piped, nothing with --quiet."""

    def __init__(self, bars: Any, quiet: bool) -> None:
        self.bars = bars
        self.quiet = quiet
        self.run_id: str | None = None
        self.results: Path | None = None
        self.t0 = time.perf_counter()
        self.total = 0

    def started(self, run_id: str, message: str) -> None:
        self.run_id = run_id
        self.t0 = time.perf_counter()
        if not self.quiet:
            self.bars.log(f"run [bold]{escape(run_id)}[/]: {escape(message)}")

    def on_part(self, family: str, part: str, done: int, total: int) -> None:
        self.total = total
        self.bars.on_part(family, part, done, total)

    def step(self, label: str, done: int, total: int) -> None:
        self.bars.step(label, done, total)

    def finished(self, result: AtlasResult) -> None:
        self.bars.finish_parts(self.total)
        self.bars.stop()  # the parts bar stays above the closing line
        if not self.quiet:
            self.bars.log(f"run [bold]{escape(result.run_id)}[/] complete in {time.perf_counter() - self.t0:.1f} s")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _with_interrupts(work: Any, progress: CliProgress) -> AtlasResult:
    """SIGTERM stops the run like Ctrl-C: the run is marked interrupted and can be resumed."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return work()
    except KeyboardInterrupt:
        if progress.run_id is None:
            raise
        err_console.print(
            f"[bold yellow]interrupted:[/] run {progress.run_id} is marked interrupted; finished parts are kept.\n"
            f"  resume with: workbench atlas --resume {progress.run_id} --results {progress.results}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(_EXIT_INTERRUPTED) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
