"""Run families against a model into the store: new runs and resumed ones.

`start_run` records the plan (families, their options and parts, the model's identity, the
config, versions) and `execute` hands the parts that are not done to an executor (this
process by default, or Ray actors: `workbench.executors`), commits each as it comes back,
then merges each family from the parts read back from the store (so a resumed run, or one
whose parts were computed elsewhere, merges exactly what an uninterrupted local one would).
`run_families` does both and marks the run interrupted (KeyboardInterrupt, SIGTERM) or failed
(any other error).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.families.base import Family, PartResult, config_to_dict
from workbench.families.context import RunContext
from workbench.store.runs import RunWriter, collect_versions, model_identity, new_run_id
from workbench.store.store import Store

if TYPE_CHECKING:
    from workbench.executors.base import Executor
    from workbench.models.model import Model

#: ``on_part(family, part, done, total)`` before each part runs (done: parts of the run finished so far).
PartHook = Callable[[str, str, int, int], None]


def _check_parts(name: str, parts: list[str]) -> list[str]:
    if not parts or len(set(parts)) != len(parts) or not all(isinstance(p, str) and p for p in parts):
        raise ValueError(f"family {name!r} must name one or more distinct, non-empty parts; got {parts!r}")
    return parts


def start_run(
    store: Store,
    model: Model,
    families: dict[str, Family],
    ctx: RunContext,
    config: dict[str, Any],
    run_id: str | None = None,
) -> RunWriter:
    specs = [
        {
            "name": name,
            "description": fam.description,
            "primary_metric": fam.primary_metric,
            "evidence_metric": fam.evidence_metric,
            "options": config_to_dict(fam.config),
            "parts": _check_parts(name, fam.parts(model, ctx)),
        }
        for name, fam in families.items()
    ]
    rid = run_id or new_run_id(model.name)
    writer = RunWriter.create(store, rid, model_identity(model), specs, config, collect_versions())
    if ctx.prompts is not None:
        from workbench.store.artefacts import atomic_write_text, dumps

        try:
            atomic_write_text(writer.run_dir / "prompts.json", dumps(ctx.prompts))
        except BaseException as exc:
            writer.mark_failed(f"could not save the prompts: {exc}")
            raise
    return writer


def _check_result(name: str, part: str, result: PartResult, model: Model) -> None:
    if not isinstance(result, PartResult):
        raise TypeError(f"family {name!r} part {part!r} returned {type(result).__name__}, not PartResult")
    geo = model.geometry
    if (result.scores.n_layers, result.scores.n_heads) != (geo.n_layers, geo.n_heads):
        raise ValueError(
            f"family {name!r} returned scores for {result.scores.n_layers}x{result.scores.n_heads} heads, "
            f"the model has {geo.n_layers}x{geo.n_heads}"
        )
    if result.scores.family != name:
        raise ValueError(f"family {name!r} returned scores labelled {result.scores.family!r}")


def _merge(writer: RunWriter, name: str, fam: Family) -> None:
    merged = fam.merge({p: writer.read_part(name, p) for p, _ in writer.parts(name)})
    for metric, values in merged.scores.metrics.items():
        if not np.issubdtype(np.asarray(values).dtype, np.floating):
            raise TypeError(f"family {name!r} metric {metric!r} is not float")
    writer.commit_family(name, merged)


def execute(
    writer: RunWriter,
    model: Model,
    families: dict[str, Family],
    ctx: RunContext,
    on_part: PartHook | None = None,
    executor: Executor | None = None,
) -> None:
    """Run every part that is not done, merge every family that is not done, finish the run.

    The executor (default: `LocalExecutor`, every part in this process, in order) computes the
    pending parts; this function alone writes the store: it commits each part as it comes back
    and merges a family as soon as all of its parts are done. ``on_part`` gets the number of
    parts of the run finished before that part starts.
    """
    from workbench.executors.base import PartJob
    from workbench.executors.local import LocalExecutor

    executor = executor if executor is not None else LocalExecutor()
    total = sum(len(writer.parts(name)) for name in families)
    pending: dict[str, set[str]] = {}
    jobs: list[PartJob] = []
    for name, fam in families.items():
        if writer.family_done(name):
            continue
        plan = writer.parts(name)
        expected = _check_parts(name, fam.parts(model, ctx))
        if [p for p, _ in plan] != expected:
            raise WorkbenchError(
                f"family {name!r} now splits into parts {expected}, but run {writer.run_id} recorded {[p for p, _ in plan]}",
                "resume with the workbench version that started the run, or start a new run",
            )
        pending[name] = {p for p, status in plan if status != "done"}
        jobs += [PartJob(name, p) for p, status in plan if status != "done"]
    done = total - len(jobs)

    def started(job: PartJob) -> None:
        if on_part is not None:
            on_part(job.family, job.part, done, total)

    for name in [n for n, left in pending.items() if not left]:  # parts all done, merge missing (killed in between)
        _merge(writer, name, families[name])
    for outcome in executor.run(model, families, ctx, jobs, started):
        name, part = outcome.family, outcome.part
        if part not in pending.get(name, ()):
            raise RuntimeError(f"executor {executor.name!r} returned {name}/{part}, which is not pending")
        _check_result(name, part, outcome.result, model)
        writer.commit_part(name, part, outcome.result, outcome.seconds)
        pending[name].discard(part)
        done += 1
        if not pending[name]:
            _merge(writer, name, families[name])
    left = sorted(f"{n}/{p}" for n, parts in pending.items() for p in parts)
    if left:
        raise RuntimeError(f"executor {executor.name!r} stopped with parts not computed: {', '.join(left)}")
    writer.finish()


def run_families(
    writer: RunWriter,
    model: Model,
    families: dict[str, Family],
    ctx: RunContext,
    on_part: PartHook | None = None,
    executor: Executor | None = None,
) -> str:
    """`execute` with the run marked interrupted or failed when it stops early. Returns the run id.

    The executor is used as given and not closed here (its owner closes it)."""
    try:
        execute(writer, model, families, ctx, on_part, executor)
    except KeyboardInterrupt:
        writer.mark_interrupted("interrupted (SIGINT/SIGTERM)")
        raise
    except BaseException as exc:
        writer.mark_failed(f"{type(exc).__name__}: {exc}")
        raise
    return writer.run_id
