"""User-facing errors.

Every error a user can cause (bad model spec, bad head index, bad prompt file ...) is a
``WorkbenchError``: it names the offending value and says what to do. The CLI prints it in
one line and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """An error caused by the user's input, with a hint on how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  fix: {hint}")


class ModelNotFoundError(WorkbenchError):
    """The model spec names neither a folder, a cached hub id, nor a shipped model."""


class UnsupportedModelError(WorkbenchError):
    """The model exists but its architecture cannot be bridged or recorded."""


class HeadIndexError(WorkbenchError):
    """A head address is malformed or out of range for the model."""


class InputDataError(WorkbenchError):
    """A prompt file, dataset or config is malformed or empty."""
