"""Issue 26's acceptance: the atlas (all families, default sizes) on tiny random Llama and Qwen2 models
confirms no head and says why in its headlines; on organism-4l the planted heads are confirmed.

    python benchmarks/verdicts.py [--models llama,qwen2,organism-4l] [--out benchmarks/results/verdicts.md]

The tiny models are `build_tiny_model(folder, arch, seed=0)`; their safety family reads 40 harmful
requests of 6-10 random words of the tiny vocabulary (seed 26), since the shipped requests are unknown
tokens there. Prints and writes each run's headlines, its confirmed heads and every tested head's
check with n and p-values; for retrieval and safety also what the tests alone say (the baseline
refusals switched off).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from workbench.analysis.verdicts import correct, per_trial_test
from workbench.atlas import Atlas
from workbench.models.tiny import build_tiny_model
from workbench.report.findings import CONFIRMED, build_findings
from workbench.store import Store


def tiny_requests(path: Path, n: int = 40, seed: int = 26) -> Path:
    rng = random.Random(seed)
    lines = [" ".join(f"w{rng.randrange(4, 60)}" for _ in range(rng.randrange(6, 11))) for _ in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(name: str, work: Path) -> list[str]:
    if name == "organism-4l":
        spec, options = name, {}
    else:
        spec = str(build_tiny_model(work / f"model-{name}", name, seed=0))  # type: ignore[arg-type]
        options = {"safety": {"harmful_file": str(tiny_requests(work / "harmful.txt"))}}
    start = time.time()
    result = Atlas(spec, store=work / f"store-{name}", options=options).run()
    seconds = time.time() - start
    out = [
        f"## {name if name == 'organism-4l' else f'tiny random {name}'}",
        "",
        f"atlas, all families, defaults: {seconds:.0f} s",
        "",
    ]
    with Store.open(work / f"store-{name}") as store:
        found = build_findings(store, result.run_id)
        out += [f"- {line}" for line in found.headlines]
        confirmed = [f"{h.head} ({e.role})" for h in found.heads for e in h.evidence if e.verdict == CONFIRMED]
        out += ["", f"confirmed heads: {len(confirmed)} {', '.join(confirmed)}", ""]
        out += ["| head | role | check | n, p (corrected) | verdict |", "|---|---|---|---|---|"]
        for h in found.heads:
            for e in h.evidence:
                if e.p_value is not None:
                    out.append(
                        f"| {h.head} | {e.role} | {e.text()} | {e.statistics()} | {e.verdict}{f': {e.reason}' if e.reason else ''} |"
                    )
        out.append("")
        for fam in ("retrieval", "safety"):
            arts = store.artefacts(result.run_id, fam)
            checks = arts.get("head_checks") or arts.get("group/head_checks")
            if not checks:
                continue
            base, controls = checks["base"], checks["controls"]
            tests = correct(
                [per_trial_test(h, base, ok, [c for k, c in controls.items() if k != h]) for h, ok in checks["heads"].items()]
            )
            smallest = min((t.p_corrected for t in tests if t.p_corrected is not None), default=float("nan"))
            out.append(
                f"- {fam}, the tests alone (no baseline refusal): success at baseline {sum(base) / len(base):.3g} of "
                f"{len(base)} trials; {sum(t.confirmed for t in tests)} of {len(tests)} tested heads confirmed; "
                f"smallest corrected p {smallest:.2g}"
            )
    return [*out, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="llama,qwen2,organism-4l")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = ["# Verdicts on random and planted models (`python benchmarks/verdicts.py`)", ""]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            block = run(name, Path(tmp))
            print("\n".join(block), flush=True)
            lines += block
    if args.out:
        Path(args.out).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
