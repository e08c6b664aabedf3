"""Background jobs: progress, results, readable errors, and one job per key at a time."""

from __future__ import annotations

import threading
import time

import pytest

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


def test_the_dashboard_runs_a_new_atlas_through_the_api(tiny_model_dir, tmp_path):
    """The runs page's "Run a new atlas" job: a `workbench.Atlas` run into the app's folder, with progress."""
    from workbench.app import create_app
    from workbench.errors import InputDataError
    from workbench.store import Store

    state = create_app(tmp_path).workbench
    with pytest.raises(InputDataError, match="no family chosen"):
        state.start_atlas("organism-4l", [], None, None)
    job_id = state.start_atlas(str(tiny_model_dir("llama")), ["sinks"], 2, 32)
    seen = set()
    deadline = time.time() + 300
    while (job := state.jobs.get(job_id)).state in ("queued", "running") and time.time() < deadline:
        seen.add(job.message.split(":")[0])
        time.sleep(0.05)
    assert job.state == "done", (job.error, job.hint)
    with Store.open(tmp_path) as store:
        (run,) = store.runs()
    assert job.result == run.run_id and run.status == "complete" and run.families == ["sinks"]
    assert run.config["n_prompts"] == 2 and run.config["max_tokens"] == 32
    assert any(m.startswith("sinks part") for m in seen)  # the parts showed in the job's progress
