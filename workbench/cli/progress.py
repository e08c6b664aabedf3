"""Progress of a CLI run: rich bars on a terminal, plain timestamped log lines otherwise.

On a terminal there is one bar for the run's parts (it stays on screen when the run ends) and
one bar for the current inner step of a part (it disappears as soon as the step is done, another
step starts, the part ends or the run stops: no stale bars). When stderr is not a terminal (piped
to a file or another program) bars would only show up at the end, so each event is a log line
instead, printed as it happens; the lines of a step are throttled to one per ``log_interval``
seconds, plus its last one.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from workbench.cli.common import err_console


def is_live_terminal(console: Console) -> bool:
    """Whether ``console`` can redraw bars in place (a real, not dumb, terminal)."""
    return console.is_terminal and not console.is_dumb_terminal


class RunProgress:
    """Context manager; ``on_part`` and ``step`` are the hooks the runner and families call.

    ``live``: draw bars (default: when the console is a terminal) or print log lines.
    """

    def __init__(
        self,
        enabled: bool = True,
        console: Console | None = None,
        live: bool | None = None,
        log_interval: float = 5.0,
    ) -> None:
        self.enabled = enabled
        self.console = console if console is not None else err_console
        self.live = is_live_terminal(self.console) if live is None else live
        self.log_interval = log_interval
        self._progress: Progress | None = None
        self._parts: Any = None
        self._steps: dict[str, Any] = {}
        # log mode: per step label, (first seen, last line printed at, done of that line)
        self._logged: dict[str, tuple[float, float, int]] = {}
        self._last_event = time.monotonic()  # log mode: a new step started at the previous event

    # -- lifetime ---------------------------------------------------------------------------

    def __enter__(self) -> RunProgress:
        if self.enabled and self.live:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Remove the step bars and stop drawing (the parts bar stays on screen). Idempotent."""
        if self._progress is not None:
            self._clear_steps()
            self._progress.stop()
            self._progress = None

    # -- messages ---------------------------------------------------------------------------

    def log(self, message: str) -> None:
        """Print a message (rich markup): above the bars on a terminal, as a timestamped line otherwise."""
        if not self.enabled:
            return
        if self.live:
            self.console.print(message, highlight=False, soft_wrap=True)
        else:
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {message}", highlight=False, soft_wrap=True, markup=True)

    # -- hooks ------------------------------------------------------------------------------

    def on_part(self, family: str, part: str, index: int, total: int) -> None:
        """A part starts; ``index`` parts of ``total`` are done."""
        if not self.enabled:
            return
        if not self.live:
            self._logged.clear()
            self._last_event = time.monotonic()
            self.log(f"{escape(family)} part {escape(part)} ({index + 1}/{total}) started")
            return
        if self._progress is None:
            return
        self._clear_steps()
        label = f"[bold]{escape(family)}[/] part {escape(part)}"
        if self._parts is None:
            self._parts = self._progress.add_task(label, total=total, completed=index)
        else:
            self._progress.update(self._parts, description=label, completed=index, total=total)

    def finish_parts(self, total: int) -> None:
        """Every part is done."""
        if not self.enabled:
            return
        if not self.live:
            self._logged.clear()
            self.log(f"all {total} parts done")
            return
        if self._progress is None:
            return
        self._clear_steps()
        if self._parts is not None:
            self._progress.update(self._parts, description="[bold]all parts", completed=total, total=total)

    def step(self, label: str, done: int, total: int) -> None:
        """A long step of the current part advanced to ``done`` of ``total``."""
        if not self.enabled:
            return
        if not self.live:
            self._log_step(label, done, total)
            return
        if self._progress is None:
            return
        for other in [name for name in self._steps if name != label]:  # a new step: the previous one is over
            self._progress.remove_task(self._steps.pop(other))
        if label not in self._steps:
            self._steps[label] = self._progress.add_task(f"  {escape(label)}", total=total)
        self._progress.update(self._steps[label], completed=done, total=total)
        if total > 0 and done >= total:  # done: the bar goes
            self._progress.remove_task(self._steps.pop(label))

    # -- internals --------------------------------------------------------------------------

    def _clear_steps(self) -> None:
        if self._progress is not None:
            for task in self._steps.values():
                self._progress.remove_task(task)
        self._steps.clear()

    def _log_step(self, label: str, done: int, total: int) -> None:
        now = time.monotonic()
        started, self._last_event = self._last_event, now
        final = total > 0 and done >= total
        seen = self._logged.get(label)
        if seen is None:
            first = started
        else:
            first, last, last_done = seen
            if done == last_done or not (final or now - last >= self.log_interval):
                return
        self._logged[label] = (first, now, done)
        took = f" ({now - first:.1f} s)" if final else ""
        self.log(f"  {escape(label)} {done}/{total}{took}")
