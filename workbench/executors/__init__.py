"""Executors: who computes the parts of an atlas run (this process, or Ray actors).

See `workbench.executors.base` for the seam; `LocalExecutor` is the default and needs nothing
beyond the workbench; `RayExecutor` needs ``pip install 'attention-workbench[ray]'``.
"""

from workbench.executors.base import EXECUTORS, Executor, ModelRef, PartJob, PartOutcome, make_executor
from workbench.executors.local import LocalExecutor

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "ModelRef", "PartJob", "PartOutcome", "make_executor"]
