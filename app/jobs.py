"""Long computations off the request threads: a small thread pool with progress.

A job is a function ``fn(progress)`` where ``progress(fraction, message)`` reports how far it
is. The page polls `JobManager.status` (a dcc.Interval) to draw a progress bar, so the request
that started the job returns at once and every other view keeps answering meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import WorkbenchError

log = logging.getLogger("workbench.app")

Progress = Callable[[float, str], None]


@dataclass
class Job:
    id: str
    kind: str
    key: str
    state: str = "queued"  # queued | running | done | error
    fraction: float = 0.0
    message: str = "waiting to start"
    result: Any = None
    error: str | None = None
    hint: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    @property
    def seconds(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "fraction": self.fraction,
            "message": self.message,
            "error": self.error,
            "hint": self.hint,
            "seconds": self.seconds,
        }


class JobManager:
    """Runs jobs on ``workers`` daemon threads (daemons, so that Ctrl+C on the server is not held
    up by a long recording in flight)."""

    def __init__(self, workers: int = 2, keep: int = 64) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._keep = keep
        self._threads = [threading.Thread(target=self._work, name=f"wb-job-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._run(*item)

    def submit(self, kind: str, key: str, fn: Callable[[Progress], Any]) -> str:
        """Start ``fn``; a job with the same key that is still queued or running is reused."""
        with self._lock:
            for job in self._jobs.values():
                if job.key == key and job.state in ("queued", "running"):
                    return job.id
            job = Job(uuid.uuid4().hex[:12], kind, key)
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].state in ("queued", "running"):
                    break
                self._jobs.popitem(last=False)
        self._queue.put((job, fn))
        return job.id

    def _run(self, job: Job, fn: Callable[[Progress], Any]) -> None:
        job.state, job.started, job.message = "running", time.time(), "starting"

        def progress(fraction: float, message: str) -> None:
            job.fraction = max(0.0, min(1.0, float(fraction)))
            job.message = message

        try:
            job.result = fn(progress)
            job.fraction, job.message, job.state = 1.0, "done", "done"
        except WorkbenchError as exc:
            job.error, job.hint, job.state = exc.message, exc.hint, "error"
        except Exception as exc:  # shown on the page, logged in full here
            log.error("job %s (%s) failed:\n%s", job.id, job.kind, traceback.format_exc())
            job.error, job.state = f"{type(exc).__name__}: {exc}", "error"
            job.hint = "see the terminal running `workbench app` for details"
        finally:
            job.finished = time.time()

    def get(self, job_id: str | None) -> Job | None:
        if not job_id:
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def busy(self) -> bool:
        with self._lock:
            return any(j.state in ("queued", "running") for j in self._jobs.values())

    def shutdown(self) -> None:
        """Stop the workers once the jobs already queued are done (returns at once)."""
        for _ in self._threads:
            self._queue.put(None)
