"""The results store: WAL and schema version, exact round trips, liveness, claiming, concurrent readers."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from atlas_helpers import TESTS_DIR, CountdownConfig, CountdownFamily, FakeModel, synthetic_run

from workbench.analysis.scores import HeadScores
from workbench.errors import WorkbenchError
from workbench.families.base import PartResult
from workbench.store import SCHEMA_VERSION, Store, StoreError
from workbench.store import artefacts as art
from workbench.store.liveness import STALE_S
from workbench.store.runs import RunClaimError, RunWriter


def test_store_is_wal_and_versioned(tmp_path):
    with Store.open(tmp_path / "res", write=True) as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "parts", "families", "metrics", "head_scores", "artefacts"} <= tables


def test_newer_schema_is_refused(tmp_path):
    Store.open(tmp_path, write=True).close()
    conn = sqlite3.connect(tmp_path / "workbench.sqlite")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        Store.open(tmp_path)


def test_reader_needs_an_existing_store(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no results store"):
        Store.open(tmp_path / "empty")


def test_part_round_trip_is_exact(tmp_path):
    scores = HeadScores("fam", 2, 3)
    scores.add("a", np.array([[0.1, np.nan, 1e-300], [np.pi, -0.0, 7.0]]), "first")
    scores.add("b", np.arange(6, dtype=float).reshape(2, 3))
    result = PartResult(
        scores,
        {
            "arr": np.arange(5, dtype=np.int32),
            "f16": np.ones((2, 2), np.float16),
            "table": [{"x": 1.5, "y": "tok", "z": float("nan")}],
            "blob": {"nested": [1, 2, {"k": np.float32(0.5)}]},
        },
        {"note": "hello", "value": np.float64(2.5)},
    )
    records = art.write_part(tmp_path, "fam", "p/0", result)
    back = art.read_part(tmp_path, "fam", "p/0")
    assert list(back.scores.metrics) == ["a", "b"] and back.scores.descriptions == {"a": "first"}
    np.testing.assert_array_equal(back.scores["a"], scores["a"])  # NaN in place, bits exact
    assert back.scores["a"].dtype == np.float64
    np.testing.assert_array_equal(back.artefacts["arr"], result.artefacts["arr"])
    assert back.artefacts["arr"].dtype == np.int32 and back.artefacts["f16"].dtype == np.float16
    assert back.artefacts["table"] == [{"x": 1.5, "y": "tok", "z": None}]  # JSON has no NaN
    assert back.artefacts["blob"] == {"nested": [1, 2, {"k": 0.5}]}
    assert back.summary == {"note": "hello", "value": 2.5}
    assert {r.name: r.kind for r in records} == {"arr": "array", "f16": "array", "table": "table", "blob": "json"}
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_a_synthetic_run_round_trips_through_the_store(tmp_path):
    with Store.open(tmp_path, write=True) as store:
        run_id = synthetic_run(store)
    with Store.open(tmp_path) as store:
        run = store.run(run_id)
        assert run.status == "complete" and (run.parts_done, run.parts_total) == (5, 5)
        (fam,) = store.families(run_id)
        assert fam.status == "done" and fam.primary_metric == "value" and fam.evidence_metric == "noise"
        scores = store.scores(run_id)["countdown"]
        assert np.isfinite(scores["value"]).all()  # the five parts cover every head
        assert fam.members == [tuple(m) for m in zip(*np.nonzero(scores["value"] > 0.8))]
        arts = store.artefacts(run_id, "countdown")
        assert sorted(arts) == sorted(f"p{i}/{k}" for i in range(5) for k in ("trace", "rows"))
        assert fam.summary["parts"]["p3"]["part"] == "p3"
        assert store.run(run_id[:12]).run_id == run_id and store.run("latest").run_id == run_id
    # Recomputing the parts by hand gives exactly the stored numbers.
    from workbench.families.context import RunContext

    family, model, ctx = CountdownFamily(CountdownConfig()), FakeModel(), RunContext(seed=0)
    merged = family.merge({p: family.run_part(model, ctx, p) for p in family.parts(model, ctx)})
    np.testing.assert_array_equal(merged.scores["value"], scores["value"])
    np.testing.assert_array_equal(merged.scores["noise"], scores["noise"])


def test_unknown_or_ambiguous_run_ids(tmp_path):
    with Store.open(tmp_path, write=True) as store:
        with pytest.raises(WorkbenchError, match="no runs in"):
            store.run("latest")
        synthetic_run(store)
        synthetic_run(store)
        with pytest.raises(WorkbenchError, match="no run 'zzz'"):
            store.run("zzz")
        with pytest.raises(WorkbenchError, match="matches 2 runs"):
            store.run("2")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_interrupted_run_keeps_finished_parts_and_is_claimed_once(tmp_path):
    with Store.open(tmp_path, write=True) as store:
        run_id = synthetic_run(store, interrupt_at="p3")
        run = store.run(run_id)
        assert run.status == run.stored_status == "interrupted" and run.parts_done == 3
        assert store.scores(run_id) == {}  # no merged scores before the family is done
        writer = RunWriter.claim(store, run_id)
        try:
            assert store.run(run_id).status == "running"
            with pytest.raises(RunClaimError, match="still being written"):
                RunWriter.claim(store, run_id)  # a second resumer loses
        finally:
            writer.mark_interrupted()
        assert store.run(run_id).resumes == 1


def test_a_dead_writer_reads_as_interrupted(tmp_path):
    with Store.open(tmp_path, write=True) as store:
        run_id = synthetic_run(store, interrupt_at="p1")
        # Pretend the writer was SIGKILLed: status still 'running', pid gone.
        store.conn.execute(
            "UPDATE runs SET status = 'running', pid = ?, heartbeat_at = ? WHERE run_id = ?", (_dead_pid(), time.time(), run_id)
        )
        run = store.run(run_id)
        assert run.stored_status == "running" and run.status == "interrupted"
        # A live pid with a stale heartbeat (e.g. the pid was reused) is dead too.
        store.conn.execute(
            "UPDATE runs SET pid = ?, heartbeat_at = ? WHERE run_id = ?", (os.getpid(), time.time() - STALE_S - 1, run_id)
        )
        assert store.run(run_id).status == "interrupted"
        store.conn.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id = ?", (time.time(), run_id))
        assert store.run(run_id).status == "running"  # this process is alive and beating
        store.conn.execute("UPDATE runs SET status = 'complete' WHERE run_id = ?", (run_id,))
        with pytest.raises(RunClaimError, match="already complete"):
            RunWriter.claim(store, run_id)


WRITER = """
import os, sys
sys.path.insert(0, {tests!r})
os.environ["WB_TEST_PART_SECONDS"] = "0.05"
from atlas_helpers import synthetic_run
from workbench.store import Store
with Store.open({results!r}, write=True) as store:
    for seed in range(2):
        print(synthetic_run(store, n_layers=6, n_heads=8, seed=seed, n_parts=24), flush=True)
"""


def test_readers_read_while_a_writer_writes(tmp_path):
    results = tmp_path / "res"
    Store.open(results, write=True).close()
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(tests=str(TESTS_DIR), results=str(results))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen_parts: dict[str, int] = {}
    reads = partial = 0
    try:
        with Store.open(results) as reader:
            while proc.poll() is None or reads == 0:
                for run in reader.runs():
                    assert run.parts_done >= seen_parts.get(run.run_id, 0)  # finished parts never vanish
                    seen_parts[run.run_id] = run.parts_done
                    fams = reader.families(run.run_id)
                    scores = reader.scores(run.run_id)
                    if fams and fams[0].status == "done":
                        assert scores["countdown"]["value"].shape == (6, 8) and np.isfinite(scores["countdown"]["value"]).all()
                    else:
                        assert scores == {}  # all or nothing: a family's scores appear in one transaction
                        partial += 0 < run.parts_done < run.parts_total
                reads += 1
                time.sleep(0.01)
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(out.split()) == 2 and reads > 5 and partial > 0, (reads, partial)
    with Store.open(results) as reader:
        assert [r.status for r in reader.runs()] == ["complete", "complete"]


def test_json_artefacts_never_contain_nan(tmp_path):
    rec = art.write_artefact(tmp_path, "fam", "t", [{"a": float("inf"), "b": np.nan}])
    text = (tmp_path / rec.path).read_text()
    assert "NaN" not in text and "Infinity" not in text and json.loads(text) == [{"a": None, "b": None}]


def test_one_store_shared_by_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with Store.open(tmp_path, write=True) as store:
        run_id = synthetic_run(store)
    with Store.open(tmp_path) as store:
        expected = store.scores(run_id)["countdown"]["value"]

        def read(_):
            return store.scores(run_id)["countdown"]["value"], store.families(run_id)[0].status, store.runs()[0].status

        with ThreadPoolExecutor(4) as pool:
            for values, fam_status, run_status in pool.map(read, range(200)):
                np.testing.assert_array_equal(values, expected)
                assert fam_status == "done" and run_status == "complete"
