"""Background jobs: progress, results, readable errors, and one job per key at a time."""

from __future__ import annotations

import threading
import time

from workbench.app.jobs import JobManager
from workbench.errors import WorkbenchError


def wait(jobs: JobManager, job_id: str):
    end = time.time() + 10
    while time.time() < end:
        job = jobs.get(job_id)
        if job.state in ("done", "error"):
            return job
        time.sleep(0.01)
    raise AssertionError("job did not finish")


def test_progress_result_errors_and_dedupe():
    jobs = JobManager(workers=2)
    gate = threading.Event()

    def slow(progress):
        progress(0.5, "half way")
        gate.wait(5)
        return 42

    first = jobs.submit("k", "same", slow)
    assert jobs.submit("k", "same", slow) == first  # still running: reused
    end = time.time() + 5
    while jobs.get(first).message != "half way" and time.time() < end:
        time.sleep(0.01)
    job = jobs.get(first)
    assert job.state == "running" and job.fraction == 0.5 and jobs.busy()
    assert job.public()["message"] == "half way"
    gate.set()
    assert wait(jobs, first).result == 42 and not jobs.busy()
    assert jobs.submit("k", "same", slow) != first  # finished: a new job

    def user_error(progress):
        raise WorkbenchError("the prompt is empty", "type some text")

    def bug(progress):
        raise ZeroDivisionError("boom")

    e1, e2 = wait(jobs, jobs.submit("k", "a", user_error)), wait(jobs, jobs.submit("k", "b", bug))
    assert (e1.state, e1.error, e1.hint) == ("error", "the prompt is empty", "type some text")
    assert e2.state == "error" and e2.error == "ZeroDivisionError: boom" and "terminal" in e2.hint
    assert jobs.get("nope") is None and jobs.get(None) is None
    jobs.shutdown()
