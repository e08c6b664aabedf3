"""The Ray executor against the local one: same stored results, a killed worker's part retried,
finished parts not recomputed on resume, family errors reported as themselves.

Every test here uses the session's local Ray instance (2 CPUs, see conftest.py). The Ray
workers run torch with one thread each; where a test compares real-model scores bitwise it
runs the local reference with one thread too (CPU float32 reductions are split by thread
count, so the last bits depend on it; `test_atlas_cli_ray_equals_local` measures that gap).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from atlas_helpers import INTERRUPT_ENV, PLUGIN, FakeModel, family_results, normalised_rows
from executor_helpers import FakeLoader, PidConfig, PidCountdown, read_markers, same_tree, torch_threads

from workbench.atlas.runner import run_families, start_run
from workbench.cli.main import main
from workbench.errors import InputDataError, WorkbenchError
from workbench.executors import LocalExecutor
from workbench.executors.ray_executor import RayExecutor
from workbench.families.context import RunContext
from workbench.families.registry import build_family
from workbench.store import Store
from workbench.store.runs import RunWriter

#: (rtol, atol) between runs with different torch thread counts (see test_atlas_cli_ray_equals_local).
# Sahara's angle is an arccos of a cosine near 1 for these nearly parallel subspaces: a float32 rounding
# of the cosine (1.2e-7) moves the angle by up to sqrt(2 x 1.2e-7) rad = 0.028 degrees.
TOLERANCE = {"*": (1e-4, 1e-6), "sahara_angle": (0.0, 0.03)}

# requests in the tiny model's own vocabulary (w0..w59): English would be unknown tokens, which the
# preflight refuses (a real model gets the shipped requests)
HARMFUL = ["w3 w7 w11 w2 w9", "w14 w5 w8 w21", "w30 w4 w17 w6 w12 w40"]


def stored(results, run_id=None):
    with Store.open(results) as store:
        run = store.run(run_id) if run_id else store.runs()[0]
        return run, normalised_rows(store, run.run_id), family_results(store, run.run_id)


def timed_atlas(model: str, results, *args) -> float:
    """Seconds of one quiet `workbench atlas MODEL --results RESULTS ARGS` that must exit 0."""
    t0 = time.perf_counter()
    assert main(["atlas", model, "--results", str(results), "--quiet", *args]) == 0
    return time.perf_counter() - t0


def part_seconds(results, run_id):
    with Store.open(results) as store:
        return store.conn.execute(
            "SELECT family, part, status FROM parts WHERE run_id = ? ORDER BY family, idx", (run_id,)
        ).fetchall()


# -- acceptance 1: the atlas CLI, Ray vs local ----------------------------------------------------------


@pytest.mark.slow
def test_atlas_cli_ray_equals_local(ray_session, tiny_model_dir, tmp_path, monkeypatch):
    """sinks + temporal + safety (3 head-block parts) on a tiny Llama, seed 7: local and Ray runs
    store the same scores, summaries, members and artefacts (bitwise with equal torch threads)."""
    monkeypatch.setenv("WORKBENCH_FAMILY_PLUGINS", PLUGIN)
    harmful = tmp_path / "harmful.txt"
    harmful.write_text("\n".join(HARMFUL) + "\n")
    model = tiny_model_dir("llama")

    def atlas(results, *extra):
        return timed_atlas(
            str(model),
            results,
            "--families",
            "sinks,temporal,safety",
            "--max-tokens",
            "24",
            "--n-prompts",
            "2",
            "--seed",
            "7",
            "--set",
            f"safety.harmful_file={harmful}",
            "--set",
            "safety.heads_per_part=3",
            "--set",
            "safety.max_new_tokens=4",
            *extra,
        )

    t_ray = atlas(tmp_path / "ray", "--executor", "ray", "--ray-workers", "2")
    with torch_threads(1):
        t_local1 = atlas(tmp_path / "local1")
    t_local = atlas(tmp_path / "local")
    run_r, rows_r, fams_r = stored(tmp_path / "ray")
    run_1, rows_1, fams_1 = stored(tmp_path / "local1")
    run_l, rows_l, fams_l = stored(tmp_path / "local")
    assert run_r.status == run_1.status == "complete" and run_r.parts_done == run_r.parts_total == run_1.parts_total
    safety_parts = [p for f, p, _ in part_seconds(tmp_path / "ray", run_r.run_id) if f == "safety"]
    assert safety_parts == ["group"]  # Ships is one batched sweep that Sahara and ASR reuse: one part
    assert run_r.config["device"] == run_1.config["device"] == "cpu"
    # Same thread count: identical rows, summaries, members, artefacts.
    assert rows_r == rows_1 and len(rows_r) > 100
    assert same_tree(fams_r, fams_1) == []
    # Against the default local run (torch's own thread count, 2 here) the float metrics agree within
    # TOLERANCE; Sahara's angles get an absolute one (see TOLERANCE).
    assert [r[:4] for r in rows_r] == [r[:4] for r in rows_l]
    worst: dict[str, float] = {}
    for r, l in zip(rows_r, rows_l):
        x, y = (np.nan if v is None else v for v in (r[4], l[4]))
        rtol, atol = TOLERANCE.get(r[1], TOLERANCE["*"])
        assert np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True), (r, l)
        if not (np.isnan(x) and np.isnan(y)):
            worst[f"{r[0]}.{r[1]}"] = max(worst.get(f"{r[0]}.{r[1]}", 0.0), abs(x - y))
    n_diff = sum(1 for r, l in zip(rows_r, rows_l) if r != l)
    print(
        f"\nray {t_ray:.1f} s, local (1 thread) {t_local1:.1f} s, local (default threads) {t_local:.1f} s; "
        f"{len(rows_r)} score rows identical to the 1-thread local run; {n_diff} differ from the default one, "
        f"max |diff| by metric: { ({k: float(f'{v:.3g}') for k, v in worst.items() if v > 0}) }"
    )


@pytest.mark.slow
def test_atlas_on_the_organism_ray_equals_local(ray_session, tmp_path):
    """Every family on the shipped organism (small sizes), seed 3: the Ray run (2 workers, one torch
    thread each) stores exactly the scores, summaries and artefacts of a one-thread local run."""

    def atlas(results, *extra):
        return timed_atlas(
            "organism-4l",
            results,
            "--n-prompts",
            "2",
            "--max-tokens",
            "128",
            "--seed",
            "3",
            "--set",
            "safety.max_new_tokens=4",
            *extra,
        )

    t_ray = atlas(tmp_path / "ray", "--executor", "ray", "--ray-workers", "2")
    with torch_threads(1):
        t_local = atlas(tmp_path / "local")
    run_r, rows_r, fams_r = stored(tmp_path / "ray")
    run_l, rows_l, fams_l = stored(tmp_path / "local")
    assert run_r.status == run_l.status == "complete" and run_r.parts_done == run_r.parts_total == run_l.parts_total
    assert run_r.families == run_l.families and len(run_r.families) == 4
    assert rows_r == rows_l and len(rows_r) > 300
    assert same_tree(fams_r, fams_l) == []
    print(f"\norganism: ray {t_ray:.1f} s, local (1 thread) {t_local:.1f} s, {len(rows_r)} identical score rows")


# -- acceptance 2: a worker killed mid-run ----------------------------------------------------------------


@pytest.mark.slow
def test_killed_worker_part_is_retried(ray_session, tiny_llama, tmp_path):
    """SIGKILL the Ray worker computing the first part: Ray restarts the actor (reloading the model)
    and retries the part; the run completes with the same results as a local run."""
    markers = tmp_path / "markers.txt"
    cfg = PidConfig(n_parts=4, seconds=3.0, markers=str(markers))
    ctx = RunContext(seed=3, max_tokens=24, n_prompts=2)

    def families():
        return {"sinks": build_family("sinks"), "pidcountdown": PidCountdown(cfg)}

    killed: list[tuple[str, int]] = []
    with Store.open(tmp_path / "ray", write=True) as store:
        writer = start_run(store, tiny_llama, families(), ctx, {"executor": "test"})
        killer = _kill_first_worker(markers, killed)
        with RayExecutor(workers=2) as ex:
            run_families(writer, tiny_llama, families(), ctx, executor=ex)
        killer.join(timeout=5)
        run_id = writer.run_id
    assert killed, "no part started on a Ray worker"
    part, pid = killed[0]
    starts = read_markers(markers)
    again = [p for p in starts if p[0] == part]
    assert len(again) == 2 and again[1][1] != pid  # computed again, by the restarted worker process
    assert sorted({p for p, _ in starts}) == ["p0", "p1", "p2", "p3"]
    assert all(sum(1 for q, _ in starts if q == p) == 1 for p in {"p0", "p1", "p2", "p3"} - {part})

    markers.unlink()
    with torch_threads(1), Store.open(tmp_path / "local", write=True) as store:
        writer = start_run(store, tiny_llama, families(), ctx, {"executor": "test"})
        run_families(writer, tiny_llama, families(), ctx, executor=LocalExecutor())
        local_id = writer.run_id
    run_r, rows_r, fams_r = stored(tmp_path / "ray", run_id)
    run_l, rows_l, fams_l = stored(tmp_path / "local", local_id)
    assert run_r.status == "complete" and run_r.parts_done == run_r.parts_total == run_l.parts_total >= 5
    assert rows_r == rows_l and same_tree(fams_r, fams_l) == []


# -- resume, errors, resources (fake model: no weights) -----------------------------------------------------


def test_resume_on_ray_skips_finished_parts(ray_session, tmp_path, monkeypatch):
    """A local run interrupted at p2, resumed on Ray: only p2 and p3 are computed, and the run equals
    an uninterrupted local one."""
    markers = tmp_path / "markers.txt"
    cfg = PidConfig(n_parts=4, markers=str(markers))
    model, ctx = FakeModel(), RunContext(seed=5)
    with Store.open(tmp_path / "r", write=True) as store:
        writer = start_run(store, model, {"pidcountdown": PidCountdown(cfg)}, ctx, {})
        monkeypatch.setenv(INTERRUPT_ENV, "p2")
        with pytest.raises(KeyboardInterrupt):
            run_families(writer, model, {"pidcountdown": PidCountdown(cfg)}, ctx)
        monkeypatch.delenv(INTERRUPT_ENV)
        run_id = writer.run_id
        assert [s for _, s in writer.parts("pidcountdown")] == ["done", "done", "pending", "pending"]
        before = read_markers(markers)
        writer = RunWriter.claim(store, run_id)
        with RayExecutor(workers=2, loader=FakeLoader()) as ex:
            run_families(writer, model, {"pidcountdown": PidCountdown(cfg)}, ctx, executor=ex)
    resumed = read_markers(markers)[len(before) :]
    assert sorted(p for p, _ in resumed) == ["p2", "p3"]
    assert all(pid != os.getpid() for _, pid in resumed)  # computed by Ray workers
    with Store.open(tmp_path / "l", write=True) as store:
        writer = start_run(store, model, {"pidcountdown": PidCountdown(PidConfig(n_parts=4))}, ctx, {})
        run_families(writer, model, {"pidcountdown": PidCountdown(PidConfig(n_parts=4))}, ctx)
        local_id = writer.run_id
    run_r, rows_r, fams_r = stored(tmp_path / "r", run_id)
    _, rows_l, fams_l = stored(tmp_path / "l", local_id)
    assert run_r.status == "complete" and rows_r == rows_l
    assert same_tree(fams_r, fams_l) == []


def test_family_error_on_a_worker_fails_the_run_and_keeps_other_parts(ray_session, tmp_path):
    cfg = PidConfig(n_parts=3, fail_part="p1", seconds=0.5)
    model, ctx = FakeModel(), RunContext(seed=1)
    fams = {"pidcountdown": PidCountdown(cfg)}
    with Store.open(tmp_path, write=True) as store:
        writer = start_run(store, model, fams, ctx, {})
        with RayExecutor(workers=2, loader=FakeLoader()) as ex, pytest.raises(InputDataError, match="part p1 cannot be computed"):
            run_families(writer, model, fams, ctx, executor=ex)
        parts = dict(writer.parts("pidcountdown"))
        run = store.run(writer.run_id)
    assert run.status == "failed" and "part p1 cannot be computed" in run.error
    assert parts["p0"] == "done" and parts["p1"] == "pending"  # p0 ran beside p1 and was kept


def test_workers_and_resources(ray_session, monkeypatch):
    ex = RayExecutor(loader=FakeLoader())
    assert not ex.use_gpus() and ex.worker_device() == "cpu"  # the test instance has no GPU
    assert ex.n_workers(False, 10) == 2 and ex.n_workers(False, 1) == 1  # one per CPU, at most one per part
    assert ex.actor_options(False)["num_gpus"] == 0 and ex.worker_threads(False) == 1
    monkeypatch.setattr(ray_session, "cluster_resources", lambda: {"CPU": 32.0, "GPU": 4.0})
    assert ex.use_gpus() and ex.worker_device() == "cuda" and ex.n_workers(True, 10) == 4
    assert ex.actor_options(True)["num_gpus"] == 1 and ex.worker_threads(True) is None
    assert not RayExecutor(device="cpu").use_gpus()  # --device cpu keeps the run off the GPUs
    monkeypatch.setattr(ray_session, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(WorkbenchError, match="--device cuda was given, but the Ray cluster has no GPU"):
        RayExecutor(device="cuda").use_gpus()
    assert RayExecutor(workers=3).n_workers(True, 10) == 3
    ex.close()
    assert ray_session.is_initialized()  # an instance the executor did not start is left running


# -- the CLI: SIGTERM with Ray, then resume on Ray --------------------------------------------------------


@pytest.mark.slow
def test_cli_interrupt_and_resume_on_ray(ray_session, tiny_model_dir, tiny_llama, tmp_path):
    """`workbench atlas --executor ray` stopped by SIGTERM after a part is stored: exit 130, run
    interrupted; `--resume --executor ray` computes only the parts not stored and completes with
    the numbers of an uninterrupted local run."""
    import sqlite3
    import subprocess
    import sys

    from atlas_helpers import subprocess_env

    markers = tmp_path / "markers.txt"
    results = tmp_path / "results"
    address = ray_session.get_runtime_context().gcs_address  # the session's instance: no second Ray start-up
    env = subprocess_env(WORKBENCH_FAMILY_PLUGINS="executor_helpers:PidCountdown")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env["PYTHONPATH"]])
    common = ["--results", str(results), "--executor", "ray", "--ray-address", address, "--ray-workers", "2", "--quiet"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workbench",
            "atlas",
            str(tiny_model_dir("llama")),
            "--families",
            "pidcountdown",
            "--set",
            "pidcountdown.n_parts=4",
            "--set",
            "pidcountdown.seconds=2",
            "--set",
            f"pidcountdown.markers={markers}",
            "--seed",
            "4",
            *common,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if (results / "workbench.sqlite").exists():
                conn = sqlite3.connect(f"file:{results / 'workbench.sqlite'}?mode=ro", uri=True)
                try:
                    n_done = conn.execute("SELECT count(*) FROM parts WHERE status = 'done'").fetchone()[0]
                except sqlite3.OperationalError:
                    n_done = 0
                finally:
                    conn.close()
                if n_done:
                    break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    run, _, _ = stored(results)
    assert run.status == "interrupted" and 1 <= run.parts_done < 4
    done_before = {p for _, p, s in part_seconds(results, run.run_id) if s == "done"}
    n_lines = len(read_markers(markers))

    resumed = subprocess.run(
        [sys.executable, "-m", "workbench", "atlas", "--resume", run.run_id, *common],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    again = {p for p, _ in read_markers(markers)[n_lines:]}
    assert again == {f"p{i}" for i in range(4)} - done_before  # finished parts were not recomputed
    run, rows, fams = stored(results)
    assert run.status == "complete" and run.resumes == 1

    with Store.open(tmp_path / "local", write=True) as store:
        fam = {"pidcountdown": PidCountdown(PidConfig(n_parts=4))}
        ctx = RunContext(seed=4, max_tokens=256)
        writer = start_run(store, tiny_llama, fam, ctx, {})
        run_families(writer, tiny_llama, fam, ctx)
        local_id = writer.run_id
    _, rows_l, fams_l = stored(tmp_path / "local", local_id)
    assert rows == rows_l
    assert same_tree(fams["pidcountdown"]["artefacts"], fams_l["pidcountdown"]["artefacts"]) == []


def _kill_first_worker(markers, killed: list, wait: float = 0.5) -> threading.Thread:
    """A thread that SIGKILLs the Ray worker process that logs the first part start (once)."""

    def run() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lines = [m for m in read_markers(markers) if m[1] != os.getpid()]
            if lines:
                time.sleep(wait)  # well inside the part
                os.kill(lines[0][1], signal.SIGKILL)  # a Ray worker process this test started
                killed.append(lines[0])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_part_of_a_worker_gone_for_good_goes_to_another_worker(ray_session, tmp_path):
    """Without Ray restarts (max_restarts=0), a killed worker's part is put back in the queue and
    computed by the other worker; the run equals a local one."""
    markers = tmp_path / "markers.txt"
    cfg = PidConfig(n_parts=3, seconds=2.0, markers=str(markers))
    model, ctx = FakeModel(), RunContext(seed=9)
    killed: list = []
    with Store.open(tmp_path / "r", write=True) as store:
        writer = start_run(store, model, {"pidcountdown": PidCountdown(cfg)}, ctx, {})
        killer = _kill_first_worker(markers, killed)
        with RayExecutor(workers=2, loader=FakeLoader(), max_restarts=0, max_task_retries=0) as ex:
            run_families(writer, model, {"pidcountdown": PidCountdown(cfg)}, ctx, executor=ex)
            retried = list(ex.retried)
        killer.join(timeout=5)
        run_id = writer.run_id
    ((part, pid),) = killed
    assert [(j.family, j.part) for j in retried] == [("pidcountdown", part)]
    runs_of_part = [p for p in read_markers(markers) if p[0] == part]
    assert len(runs_of_part) == 2 and runs_of_part[1][1] != pid
    with Store.open(tmp_path / "l", write=True) as store:
        writer = start_run(store, model, {"pidcountdown": PidCountdown(PidConfig(n_parts=3))}, ctx, {})
        run_families(writer, model, {"pidcountdown": PidCountdown(PidConfig(n_parts=3))}, ctx)
        local_id = writer.run_id
    run_r, rows_r, fams_r = stored(tmp_path / "r", run_id)
    _, rows_l, fams_l = stored(tmp_path / "l", local_id)
    assert run_r.status == "complete" and rows_r == rows_l and same_tree(fams_r, fams_l) == []
