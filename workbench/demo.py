"""`make demo`: the head atlas of the shipped default model, all families, then the report.

Runs the atlas of DEFAULT_MODEL through `workbench.Atlas` into ``./wb-results`` (or
$WORKBENCH_RESULTS) and writes that run's report, then prints where the report is and how to open
the dashboard. If no organism is shipped yet it builds a tiny random Llama so the path runs end to end
(without the families that need the organism's own data, see `FALLBACK_SKIPS`).
Options: ``--families sinks,temporal`` and ``--n-prompts N``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from workbench.models.registry import DEFAULT_MODEL, shipped_models
from workbench.store.store import default_results

# Families that need an organism's data (safety needs its harmful/benign requests): left out
# of the demo only when it falls back to a tiny random model.
FALLBACK_SKIPS = ("safety",)
DEMO_PROMPTS = 8


def demo_families(spec: str) -> list[str]:
    from workbench.families.registry import family_names

    names = family_names()
    return names if spec == DEFAULT_MODEL else [n for n in names if n not in FALLBACK_SKIPS]


def default_model_spec(results: Path = Path("wb-results")) -> str:
    if DEFAULT_MODEL in shipped_models():
        return DEFAULT_MODEL
    from workbench.models.tiny import build_tiny_model

    folder = results / "tiny-demo-model"
    if not (folder / "config.json").is_file():
        build_tiny_model(folder, "llama", seed=0)
    print(f"(no shipped organism yet: using a tiny random Llama built in {folder})")
    return str(folder)


def run(argv: list[str] | None = None) -> int:
    """The demo through the same Python API as every other path (`workbench.Atlas`), then the report."""
    import argparse

    from workbench.atlas import Atlas
    from workbench.cli.atlas import CliProgress
    from workbench.cli.progress import RunProgress
    from workbench.errors import WorkbenchError
    from workbench.report.html import write_report
    from workbench.store import Store

    parser = argparse.ArgumentParser(prog="python -m workbench.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--families", "-f", default=None, help="comma-separated families (default: every family that applies)")
    parser.add_argument("--n-prompts", type=int, default=DEMO_PROMPTS, help=f"prompts per family (default {DEMO_PROMPTS})")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    results = default_results()
    spec = default_model_spec(results)
    t0 = time.perf_counter()
    # A demo-sized run (8 prompts or probes per family) so `make demo` stays within minutes on 2 CPU
    # cores; `workbench atlas` without --n-prompts uses each family's full default.
    try:
        with RunProgress() as bars:
            atlas = Atlas(
                spec,
                args.families or demo_families(spec),
                results,
                n_prompts=args.n_prompts,
                progress=CliProgress(bars, quiet=False),
            )
            result = atlas.run()
        with Store.open(results) as store:
            html_path, _ = write_report(store, result.run_id, None)
        from workbench.cli.findings import load_findings, print_findings

        print_findings(load_findings(results, result.run_id))
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    report = html_path.resolve()
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")
    print(f"report:  {report}")
    print(f"         open it in any browser (no server needed): file://{report}")
    print(f"open the dashboard with: workbench app --results {results}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
