"""The local executor: every part in this process, one after another, on the model already loaded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from workbench.executors.base import PartJob, PartOutcome, StartedFn
from workbench.families.base import Family
from workbench.families.context import RunContext

if TYPE_CHECKING:
    from workbench.models.model import Model


class LocalExecutor:
    """Runs the jobs in order. Lazy: the next part starts only after the runner has committed the
    previous one, so an interrupt loses at most the part in flight (as before the seam existed)."""

    name = "local"

    def run(
        self,
        model: Model,
        families: dict[str, Family],
        ctx: RunContext,
        jobs: list[PartJob],
        started: StartedFn,
    ) -> Iterator[PartOutcome]:
        for job in jobs:
            started(job)
            t0 = time.perf_counter()
            result = families[job.family].run_part(model, ctx, job.part)
            yield PartOutcome(job.family, job.part, result, time.perf_counter() - t0)

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
