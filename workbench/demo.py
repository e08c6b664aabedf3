"""`make demo`: the head atlas of the shipped default model, all families, then the report.

Runs ``workbench atlas DEFAULT_MODEL`` into ``./wb-results`` (or $WORKBENCH_RESULTS) and
``workbench report`` on that run, then prints where the report is and how to open the
dashboard. If no organism is shipped yet it builds a tiny random Llama so the path runs end to end
(without the families that need the organism's own data, see `FALLBACK_SKIPS`).
Extra arguments are passed to ``workbench atlas`` (e.g. ``--families sinks``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from workbench.cli.main import main as cli_main
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
    extra = list(sys.argv[1:] if argv is None else argv)
    results = default_results()
    spec = default_model_spec(results)
    t0 = time.perf_counter()
    families = [] if "--families" in extra or "-f" in extra else ["--families", ",".join(demo_families(spec))]
    # A demo-sized run (8 prompts or probes per family) so `make demo` stays within minutes on 2 CPU
    # cores; `workbench atlas` without this option uses each family's full default.
    size = [] if "--n-prompts" in extra else ["--n-prompts", str(DEMO_PROMPTS)]
    code = cli_main(["atlas", spec, "--results", str(results), *families, *size, *extra])
    if code != 0:
        return code
    from workbench.store import Store

    with Store.open(results) as store:
        run_id = store.runs()[0].run_id
    code = cli_main(["report", run_id, "--results", str(results)])
    if code != 0:
        return code
    report = (results / "runs" / run_id / "report.html").resolve()
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")
    print(f"report:  {report}")
    print(f"         open it in any browser (no server needed): file://{report}")
    print(f"open the dashboard with: workbench app --results {results}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
