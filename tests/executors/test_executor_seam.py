"""The executor seam without Ray: options, the missing-extra error, ordering-agnostic commits,
guards against a misbehaving executor, and what travels to workers (pickling, ModelRef)."""

from __future__ import annotations

import dataclasses
import pickle
import sys

import numpy as np
import pytest
from atlas_helpers import FakeModel, family_results, normalised_rows
from executor_helpers import PidConfig, PidCountdown, same_tree

from workbench.atlas.options import resolve_options
from workbench.atlas.runner import run_families, start_run
from workbench.cli.main import main
from workbench.errors import WorkbenchError
from workbench.executors import LocalExecutor, ModelRef, PartOutcome, make_executor
from workbench.executors.base import ModelMismatchError
from workbench.families.context import RunContext
from workbench.store import Store


class ReversedExecutor:
    """Computes every part in this process, last part first (as a parallel executor may finish them)."""

    name = "reversed"

    def __init__(self, stop_after: int | None = None, extra: tuple[str, str] | None = None) -> None:
        self.stop_after, self.extra, self.order = stop_after, extra, []

    def run(self, model, families, ctx, jobs, started):
        for i, job in enumerate(reversed(jobs)):
            if self.stop_after is not None and i == self.stop_after:
                return
            started(job)
            self.order.append((job.family, job.part))
            yield PartOutcome(job.family, job.part, families[job.family].run_part(model, ctx, job.part), 0.1, "test")
        if self.extra:
            fam, part = self.extra
            yield PartOutcome(fam, part, families[fam].run_part(model, ctx, "p0"), 0.1, "test")

    def close(self):
        pass


def _run(results, executor=None, **kw):
    model, ctx = FakeModel(), RunContext(seed=11)
    fams = {"pidcountdown": PidCountdown(PidConfig(n_parts=4, **kw))}
    with Store.open(results, write=True) as store:
        writer = start_run(store, model, fams, ctx, {})
        calls = []
        try:
            run_families(writer, model, fams, ctx, on_part=lambda *a: calls.append(a), executor=executor)
        finally:
            run = store.run(writer.run_id)
            rows, fams_out = normalised_rows(store, writer.run_id), family_results(store, writer.run_id)
    return run, rows, fams_out, calls


def test_parts_committed_in_any_order_store_the_same_run(tmp_path):
    run_l, rows_l, fams_l, calls_l = _run(tmp_path / "local")
    ex = ReversedExecutor()
    run_r, rows_r, fams_r, calls_r = _run(tmp_path / "rev", ex)
    assert ex.order == [("pidcountdown", p) for p in ("p3", "p2", "p1", "p0")]
    assert run_r.status == run_l.status == "complete"
    assert rows_r == rows_l and same_tree(fams_r, fams_l) == []
    assert [c[2] for c in calls_l] == [0, 1, 2, 3] and [c[3] for c in calls_l] == [4] * 4  # parts done so far, total
    assert [c[2] for c in calls_r] == [0, 1, 2, 3]


def test_an_executor_that_stops_early_or_invents_parts_fails_the_run(tmp_path):
    with pytest.raises(RuntimeError, match="parts not computed: pidcountdown/p0"):
        _run(tmp_path / "a", ReversedExecutor(stop_after=3))
    with Store.open(tmp_path / "a") as store:
        (run,) = store.runs()
        assert run.status == "failed" and run.parts_done == 3
    with pytest.raises(RuntimeError, match="not pending"):
        _run(tmp_path / "b", ReversedExecutor(extra=("pidcountdown", "p9")))


def test_make_executor_and_missing_ray(monkeypatch, tmp_path, capsys):
    assert isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(WorkbenchError, match="unknown executor 'dask'"):
        make_executor("dask")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the [ray] extra were not installed
    with pytest.raises(WorkbenchError) as info:
        make_executor("ray")
    assert "attention-workbench[ray]" in info.value.hint
    code = main(["atlas", "some-model", "--executor", "ray", "--results", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "needs the optional dependency 'ray'" in err and "attention-workbench[ray]" in err
    assert not (tmp_path / "workbench.sqlite").exists()  # nothing was started


def test_executor_options_from_command_line_and_config_file(tmp_path):
    opts = resolve_options({"model": "m"})
    assert (opts.executor, opts.ray_address, opts.ray_workers) == ("local", None, None)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: m\nexecutor: ray\nray_address: auto\nray_workers: 3\n")
    opts = resolve_options({"model": None}, cfg)
    assert (opts.executor, opts.ray_address, opts.ray_workers) == ("ray", "auto", 3)
    opts = resolve_options({"model": None, "executor": "local", "ray_workers": 5}, cfg)  # command line wins
    assert (opts.executor, opts.ray_workers) == ("local", 5)
    toml = tmp_path / "run.toml"
    toml.write_text('executor = "ray"\nray_workers = 2\n')
    assert resolve_options({}, toml).ray_workers == 2
    with pytest.raises(WorkbenchError, match="option 'executor' must be one of local, ray, got 'dask'"):
        resolve_options({"executor": "dask"})
    with pytest.raises(WorkbenchError, match="'ray_workers' must be at least 1, got 0"):
        resolve_options({"ray_workers": 0})
    assert main(["atlas", "m", "--executor", "spark", "--quiet"]) == 2


def test_part_results_pickle_exactly():
    model, ctx = FakeModel(), RunContext(seed=2)
    result = PidCountdown(PidConfig()).run_part(model, ctx, "p1")
    back = pickle.loads(pickle.dumps(PartOutcome("pidcountdown", "p1", result, 1.0)))
    for metric, values in result.scores.metrics.items():
        assert np.array_equal(back.result.scores[metric], values, equal_nan=True)
        assert back.result.scores[metric].dtype == np.float64
    assert np.array_equal(back.result.artefacts["trace"], result.artefacts["trace"])
    assert same_tree(back.result.artefacts["rows"], result.artefacts["rows"]) == [] and back.result.summary == result.summary


def test_model_ref_loads_the_recorded_model_and_checks_its_fingerprint(tiny_llama):
    ref = ModelRef.from_model(tiny_llama, "float32")
    assert ref.spec == str(tiny_llama.source.path) and ref.fingerprint and ref.revision is None
    ref = pickle.loads(pickle.dumps(ref))
    copy = ref("cpu")
    assert (copy.geometry.n_layers, copy.geometry.n_heads) == (tiny_llama.geometry.n_layers, tiny_llama.geometry.n_heads)
    with pytest.raises(ModelMismatchError, match="the run recorded 000000000000"):
        dataclasses.replace(ref, fingerprint="0" * 64)("cpu")
