"""Executors: who computes the parts of an atlas run (this process, or Ray actors).

See `workbench.executors.base` for the seam; `LocalExecutor` is the default and needs nothing
beyond the workbench; `RayExecutor` needs ``pip install 'attention-workbench[ray]'``.
"""

from workbench.errors import WorkbenchError
from workbench.executors.base import EXECUTORS, Executor, ModelRef, PartJob, PartOutcome
from workbench.executors.local import LocalExecutor

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "ModelRef", "PartJob", "PartOutcome", "make_executor"]


def make_executor(
    name: str,
    address: str | None = None,
    workers: int | None = None,
    device: str = "auto",
    quiet: bool = False,
) -> Executor:
    """An executor by name: ``local`` (in this process) or ``ray`` (Ray actors; needs the [ray] extra)."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        from workbench.executors.ray_executor import RayExecutor

        return RayExecutor(address=address, workers=workers, device=device, quiet=quiet)
    raise WorkbenchError(f"unknown executor {name!r}", f"choose from: {', '.join(EXECUTORS)}")
