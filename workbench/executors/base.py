"""The executor seam: who computes the parts of a run, and where.

The runner (`workbench.atlas.runner.execute`) owns the store: it plans the run, hands the
parts that are not done to an executor as `PartJob`s, commits each `PartOutcome` as it comes
back (in one transaction per part) and merges a family once all its parts are done. An
executor only computes; it never writes to the store. That keeps one writer per run whatever
runs the parts, so the stored rows have the same schema and values for every executor.

An executor implements::

    class MyExecutor:
        name = "mine"

        def run(self, model, families, ctx, jobs, started) -> Iterator[PartOutcome]:
            ...  # call started(job) when a job begins; yield outcomes in any order

        def close(self) -> None:
            ...  # release workers; called once, also after errors and interrupts

`run` must yield each job at most once, with the `PartResult` that ``families[job.family]
.run_part(model_or_a_copy, ctx, job.part)`` returns. A part is deterministic given the model,
the context and the family config (see `workbench.families.base`), so it does not matter which
process or machine computes it. If a family raises, `run` raises that exception (after yielding
any other outcome it already has, so those are kept).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from workbench.errors import WorkbenchError
from workbench.families.base import Family, PartResult
from workbench.families.context import RunContext

if TYPE_CHECKING:
    from workbench.models.model import Model

EXECUTORS = ("local", "ray")
RAY_INSTALL_HINT = "pip install 'attention-workbench[ray]'  (or: pip install 'ray[default]>=2.40')"


@dataclass(frozen=True)
class PartJob:
    """One shard of a run: a part of a family."""

    family: str
    part: str


@dataclass
class PartOutcome:
    """A computed part, as an executor hands it back to the runner."""

    family: str
    part: str
    result: PartResult
    seconds: float  # compute time of run_part (where it ran), recorded in the store
    worker: str = "local"  # who computed it (e.g. "ray:<host>:<pid>"); not stored, for logs and tests


#: ``started(job)``: called by an executor when a job begins computing (progress).
StartedFn = Callable[[PartJob], None]


@runtime_checkable
class Executor(Protocol):
    name: str

    def run(
        self,
        model: Model,
        families: dict[str, Family],
        ctx: RunContext,
        jobs: list[PartJob],
        started: StartedFn,
    ) -> Iterator[PartOutcome]: ...

    def close(self) -> None: ...


class ModelMismatchError(WorkbenchError):
    """A worker loaded different weights from the ones the run recorded."""


@dataclass(frozen=True)
class ModelRef:
    """How a worker process loads the run's model: the recorded spec, revision, fingerprint and dtype.

    Picklable and small, so it travels to every worker; each worker loads its own copy once and
    checks the fingerprint (config, tokenizer and weight files) against the run's, so a machine
    with other weights under the same name fails loudly instead of giving other numbers.
    """

    spec: str
    revision: str | None
    fingerprint: str | None
    dtype: str

    @classmethod
    def from_model(cls, model: Model, dtype: str) -> ModelRef:
        from workbench.store.runs import model_identity

        ident = model_identity(model)
        revision = ident["revision"] if ident["kind"] == "hub" else None
        return cls(ident["spec"], revision, ident["hash"], dtype)

    def __call__(self, device: str) -> Any:
        from workbench.models import load_model
        from workbench.store.runs import model_fingerprint

        model = load_model(self.spec, device=device, dtype=self.dtype, revision=self.revision)
        path = getattr(model.source, "path", None)
        if self.fingerprint is not None:
            here = model_fingerprint(path)
            if here != self.fingerprint:
                import socket

                raise ModelMismatchError(
                    f"worker on {socket.gethostname()} loaded {self.spec!r} from {path} with fingerprint "
                    f"{(here or 'none')[:12]}, the run recorded {self.fingerprint[:12]}",
                    "give every machine the same model files (same path or the same hub snapshot in its cache)",
                )
        return model
