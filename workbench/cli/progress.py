"""Rich progress bars for long CLI steps: one bar for the run's parts, one per inner step."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from workbench.cli.common import err_console


class RunProgress:
    """Context manager; ``on_part`` and ``step`` are the hooks the runner and families call."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._parts: Any = None
        self._steps: dict[str, Any] = {}

    def __enter__(self) -> RunProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def on_part(self, family: str, part: str, index: int, total: int) -> None:
        if self._progress is None:
            return
        label = f"[bold]{family}[/] part {part}"
        if self._parts is None:
            self._parts = self._progress.add_task(label, total=total, completed=index)
        else:
            self._progress.update(self._parts, description=label, completed=index)
        for task in self._steps.values():
            self._progress.remove_task(task)
        self._steps.clear()

    def finish_parts(self, total: int) -> None:
        if self._progress is not None and self._parts is not None:
            self._progress.update(self._parts, description="[bold]all parts", completed=total)

    def step(self, label: str, done: int, total: int) -> None:
        if self._progress is None:
            return
        if label not in self._steps:
            self._steps[label] = self._progress.add_task(f"  {label}", total=total)
        self._progress.update(self._steps[label], completed=done, total=total)
