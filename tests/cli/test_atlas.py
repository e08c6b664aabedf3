"""`workbench atlas`: runs, config files, bad input, interrupts and resume.

The countdown test family (tests/atlas_helpers.py) has five parts that can be slowed down or
interrupted, so a kill lands mid-run; the sinks family runs on a tiny random Llama.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from atlas_helpers import (
    INTERRUPT_ENV,
    MARKERS_ENV,
    PLUGIN,
    SECONDS_ENV,
    family_results,
    normalised_rows,
    store_snapshot,
    subprocess_env,
)

from workbench.cli.main import main
from workbench.store import Store

FAMILIES = "sinks,countdown"


def atlas_args(model, results, *extra):
    # sinks.act=false keeps the sinks family to one part, so the part counts below stay simple
    return [
        "atlas",
        str(model),
        "--results",
        str(results),
        "--families",
        FAMILIES,
        "--max-tokens",
        "24",
        "--n-prompts",
        "2",
        "--set",
        "sinks.act=false",
        "--quiet",
        *extra,
    ]


@pytest.fixture
def plugin(monkeypatch):
    monkeypatch.setenv("WORKBENCH_FAMILY_PLUGINS", PLUGIN)
    monkeypatch.delenv(INTERRUPT_ENV, raising=False)
    monkeypatch.delenv(SECONDS_ENV, raising=False)
    monkeypatch.delenv(MARKERS_ENV, raising=False)


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    """One uninterrupted run (the yardstick for resumed ones)."""
    results = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_FAMILY_PLUGINS", PLUGIN)
        for key in (INTERRUPT_ENV, SECONDS_ENV, MARKERS_ENV):
            mp.delenv(key, raising=False)
        assert main(atlas_args(tiny_model_dir("llama"), results)) == 0
    with Store.open(results) as store:
        (run,) = store.runs()
        return results, run.run_id, normalised_rows(store, run.run_id), family_results(store, run.run_id)


def only_run(results):
    with Store.open(results) as store:
        runs = store.runs()
        assert len(runs) == 1
        return runs[0]


def test_atlas_writes_a_complete_run(reference, capsys, plugin):
    results, run_id, rows, fams = reference
    with Store.open(results) as store:
        run = store.run(run_id)
        assert run.status == "complete" and run.parts_done == run.parts_total == 6
        assert run.families == ["sinks", "countdown"] and run.model_kind == "folder" and run.model_hash
        assert run.config["seed"] == 0 and run.config["max_tokens"] == 24 and run.config["n_prompts"] == 2
        assert {"torch", "transformers", "workbench"} <= set(run.versions)
        scores = store.scores(run_id)
    assert set(scores) == {"sinks", "countdown"}
    assert set(scores["sinks"].metrics) >= {"first_token_mass", "sink_head", "removal_loss_delta"}
    assert len(rows) == sum(len(s.metrics) for s in scores.values()) * 2 * 4
    assert fams["sinks"]["summary"]["prompt_source"].startswith("random-tokens")  # the tiny vocabulary cannot read the prose
    assert fams["sinks"]["summary"]["prompt_tokens"] == [24, 24]
    assert main(["runs", "--results", str(results), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed] == [run_id] and listed[0]["status"] == "complete"


def test_same_options_give_identical_results(reference, tiny_model_dir, tmp_path, plugin):
    _, _, rows, fams = reference
    assert main(atlas_args(tiny_model_dir("llama"), tmp_path)) == 0
    run = only_run(tmp_path)
    with Store.open(tmp_path) as store:
        assert normalised_rows(store, run.run_id) == rows
        assert family_results(store, run.run_id) == fams


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_config_file_holds_every_option(tiny_model_dir, tmp_path, suffix, plugin):
    results = tmp_path / "res"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("w1 w2 w3 w4 w5 w6 w7 w8\nw9 w10 w11 w12 w13 w14\n")
    values = {
        "model": str(tiny_model_dir("llama")),
        "families": "sinks",
        "results": str(results),
        "prompts": str(prompts),
        "n_prompts": 2,
        "max_tokens": 16,
        "seed": 3,
        "device": "cpu",
        "dtype": "float32",
        "quiet": True,
    }
    if suffix == ".yaml":
        text = "".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()) + "sinks:\n  eps: 0.25\n  evidence_heads: 2\n"
    else:
        text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()) + "[sinks]\neps = 0.25\nevidence_heads = 2\n"
    cfg = tmp_path / f"run{suffix}"
    cfg.write_text(text)
    assert main(["atlas", "--config", str(cfg), "--seed", "4"]) == 0  # the command line wins over the file
    run = only_run(results)
    assert run.families == ["sinks"] and run.status == "complete"
    assert run.config["seed"] == 4 and run.config["max_tokens"] == 16 and run.config["dtype"] == "float32"
    assert run.config["prompts"] == str(prompts.resolve()) and run.config["family_options"]["sinks"]["eps"] == 0.25
    with Store.open(results) as store:
        (fam,) = store.families(run.run_id)
        assert fam.summary["prompt_source"] == "file" and fam.summary["n_prompts"] == 2
        assert fam.options["evidence_heads"] == 2
        delta = store.scores(run.run_id)["sinks"]["removal_loss_delta"]
        assert int((delta == delta).sum()) == 2  # two heads checked


# -- bad input: a clear message, a non-zero exit, existing runs untouched -----------------------------


def _one_run(model, results):
    assert (
        main(
            [
                "atlas",
                str(model),
                "--results",
                str(results),
                "--families",
                "sinks",
                "--max-tokens",
                "16",
                "--n-prompts",
                "1",
                "-q",
            ]
        )
        == 0
    )
    return results


@pytest.fixture(scope="module")
def existing_shared(tiny_model_dir, tmp_path_factory):
    """A results folder that already holds one finished run (shared: no bad input may change it)."""
    return _one_run(tiny_model_dir("llama"), tmp_path_factory.mktemp("existing") / "res")


@pytest.fixture
def existing(tiny_model_dir, tmp_path):
    return _one_run(tiny_model_dir("llama"), tmp_path / "res")


def _bad_cases(tmp_path: Path, model: str, results: Path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: x\nbogus_key: 1\n")
    bad_section = tmp_path / "bad-section.toml"
    bad_section.write_text("[sinks]\nepsilon = 0.2\n")
    not_utf8 = tmp_path / "prompts.bin"
    not_utf8.write_bytes(b"\xff\xfe\x00bad")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("these words are not in the tiny vocabulary at all\nnor are these ones here\n")
    table = tmp_path / "table.csv"
    table.write_text("id,question\n1,w1 w2 w3\n")
    r = ["--results", str(results)]
    return {
        "unknown model": (["atlas", "/definitely/not/a/model", *r], "model path '/definitely/not/a/model' does not exist"),
        "uncached hub id": (["atlas", "nobody/uncached-model", *r], "'nobody/uncached-model' is not a shipped model"),
        "bad config key": (["atlas", model, "--config", str(bad_yaml), *r], "unknown key 'bogus_key'"),
        "bad family option": (["atlas", model, "--config", str(bad_section), *r], "unknown option 'epsilon' for family 'sinks'"),
        "bad --set": (["atlas", model, "--set", "sinks.nope=1", *r], "unknown option 'nope' for family 'sinks'"),
        "missing config": (["atlas", model, "--config", str(tmp_path / "none.yaml"), *r], "does not exist"),
        "unknown family": (["atlas", model, "--families", "sinks,nope", *r], "unknown family 'nope'"),
        "missing prompt file": (["atlas", model, "--prompts", str(tmp_path / "missing.txt"), *r], "does not exist"),
        "prompt file is a folder": (["atlas", model, "--prompts", str(tmp_path), *r], "is a folder"),
        "prompt file not text": (["atlas", model, "--prompts", str(not_utf8), *r], "is not UTF-8"),
        "empty prompt file": (["atlas", model, "--prompts", str(empty), *r], "holds no prompts"),
        # preflight: every family's inputs are resolved and checked before any work
        "prompts of unknown tokens": (
            ["atlas", model, "--prompts", str(foreign), "-f", "sinks", *r],
            "the prompts are 100% unknown tokens",
        ),
        "csv without a prompt column": (
            ["atlas", model, "--prompts", str(table), *r],
            "name the field holding the prompt with --prompt-field",
        ),
        "wrong --prompt-field": (["atlas", model, "--prompts", str(table), "--prompt-field", "nope", *r], "has no field 'nope'"),
        "context too long": (
            ["atlas", model, "--max-tokens", "100000", "-f", "sinks", *r],
            "max_tokens 100000 is longer than the model's context of 256",
        ),
        "missing safety set": (
            ["atlas", model, "-f", "safety", "--set", "safety.harmful_file=/no/such.jsonl", *r],
            "'/no/such.jsonl' is neither a registered set nor an existing file",
        ),
        "safety set unreadable by the tokenizer": (
            ["atlas", model, "-f", "safety", *r],
            "the harmful requests shipped:harmful-requests are 100% unknown tokens",
        ),
        "chat template missing": (
            [
                "atlas",
                model,
                "-f",
                "safety",
                "--set",
                f"safety.harmful_file={table}",
                "--set",
                "safety.prompt_field=question",
                "--set",
                "safety.template=chat",
                *r,
            ],
            "has no chat template",
        ),
        "answers longer than the context": (
            [
                "atlas",
                model,
                "-f",
                "safety",
                "--set",
                f"safety.harmful_file={table}",
                "--set",
                "safety.prompt_field=question",
                "--set",
                "safety.max_new_tokens=300",
                *r,
            ],
            "+ 300 new tokens exceed the model's context of 256",
        ),
        "every problem at once": (
            ["atlas", model, "--max-tokens", "100000", "-f", "sinks,safety", *r],
            "3 problems with the run's inputs",
        ),
        "bad dtype": (["atlas", model, "--dtype", "float8", *r], "unknown dtype 'float8'"),
        "bad max tokens": (["atlas", model, "--max-tokens", "1", *r], "must be at least 2"),
        "resume without a run": (["atlas", "no-such-run", "--resume", *r], "no interrupted run of 'no-such-run'"),
        "report of unknown run": (["report", "no-such-run", *r], "no run 'no-such-run'"),
        "unknown export format": (["export", "latest", "--format", "xlsx", *r], "unknown export format 'xlsx'"),
    }


CASES = list(_bad_cases(Path("/tmp"), "m", Path("/tmp")))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_a_clear_error_and_leaves_runs_untouched(case, existing_shared, tiny_model_dir, tmp_path, capsys, plugin):
    args, message = _bad_cases(tmp_path, str(tiny_model_dir("llama")), existing_shared)[case]
    before = store_snapshot(existing_shared)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error:" in err and message in " ".join(err.split()), err
    assert "Traceback" not in err
    assert store_snapshot(existing_shared) == before


def _make_unwritable(folder: Path) -> bool:
    """chmod for ordinary users; root ignores modes, so use the immutable attribute there."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return True
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


def _make_writable(folder: Path) -> None:
    if os.geteuid() != 0:
        folder.chmod(0o755)
    else:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)


def test_unwritable_results_folder(existing, tiny_model_dir, capsys):
    before = store_snapshot(existing)
    # Root ignores file modes; the test then needs chattr +i. Where neither works the refusal to write
    # cannot be provoked, which is a property of the machine, not a missing feature (CI runs it).
    if not _make_unwritable(existing):
        pytest.skip("cannot make a folder unwritable here (root without chattr)")
    try:
        probe = existing / "probe"
        try:
            probe.write_text("x")
            probe.unlink()
            pytest.skip("the folder stayed writable")
        except OSError:
            pass
        code = main(["atlas", str(tiny_model_dir("llama")), "--results", str(existing), "--families", "sinks", "-q"])
        err = capsys.readouterr().err
        assert code == 2 and f"results folder '{existing}' is not writable" in " ".join(err.split()), err
        # Readers still work on a folder they cannot write.
        assert main(["runs", "--results", str(existing), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["status"] == "complete"
    finally:
        _make_writable(existing)
    assert store_snapshot(existing) == before


def test_results_path_that_is_a_file(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "file"
    path.write_text("not a folder")
    assert main(["atlas", str(tiny_model_dir("llama")), "--results", str(path), "-q"]) == 2
    assert "exists and is not a folder" in " ".join(capsys.readouterr().err.split())


# -- interrupts and resume ------------------------------------------------------------------------------


def test_interrupt_then_resume_equals_uninterrupted(reference, tiny_model_dir, tmp_path, monkeypatch, capsys, plugin):
    _, _, ref_rows, ref_fams = reference
    markers = tmp_path / "markers.txt"
    monkeypatch.setenv(MARKERS_ENV, str(markers))
    monkeypatch.setenv(INTERRUPT_ENV, "p2")
    results = tmp_path / "res"
    assert main(atlas_args(tiny_model_dir("llama"), results)) == 130
    assert "resume with: workbench atlas --resume" in capsys.readouterr().err
    run = only_run(results)
    assert run.status == run.stored_status == "interrupted" and run.parts_done == 3  # sinks + p0 + p1
    with Store.open(results) as store:
        assert {f.family: f.status for f in store.families(run.run_id)} == {"sinks": "done", "countdown": "pending"}
        assert store.scores(run.run_id).keys() == {"sinks"}  # the unfinished family has no scores yet

    monkeypatch.delenv(INTERRUPT_ENV)
    assert main(["atlas", "--resume", run.run_id, "--results", str(results), "-q"]) == 0
    assert markers.read_text().split() == ["p0", "p1", "p2", "p2", "p3", "p4"]  # finished parts never recomputed
    done = only_run(results)
    assert done.status == "complete" and done.resumes == 1 and done.parts_done == 6
    with Store.open(results) as store:
        assert normalised_rows(store, run.run_id) == ref_rows
        assert family_results(store, run.run_id) == ref_fams


def test_resume_by_model_picks_its_latest_interrupted_run(tiny_model_dir, tmp_path, monkeypatch, plugin):
    monkeypatch.setenv(INTERRUPT_ENV, "p0")
    model = str(tiny_model_dir("llama"))
    assert main(atlas_args(model, tmp_path)) == 130
    monkeypatch.delenv(INTERRUPT_ENV)
    assert main(["atlas", model, "--resume", "--results", str(tmp_path), "-q"]) == 0
    assert only_run(tmp_path).status == "complete"


def test_resume_refuses_changed_options_and_complete_runs(tiny_model_dir, tmp_path, monkeypatch, capsys, plugin):
    monkeypatch.setenv(INTERRUPT_ENV, "p1")
    assert main(atlas_args(tiny_model_dir("llama"), tmp_path)) == 130
    run = only_run(tmp_path)
    before = store_snapshot(tmp_path)
    assert main(["atlas", "--resume", run.run_id, "--results", str(tmp_path), "--seed", "7", "-q"]) == 2
    assert "seed = 7 differs from run" in capsys.readouterr().err
    assert store_snapshot(tmp_path) == before
    monkeypatch.delenv(INTERRUPT_ENV)
    assert main(["atlas", "--resume", run.run_id, "--results", str(tmp_path), "-q"]) == 0
    assert main(["atlas", "--resume", run.run_id, "--results", str(tmp_path), "-q"]) == 2
    assert "already complete" in capsys.readouterr().err


def _wait_for_markers(path: Path, n: int, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and len(path.read_text().split()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"atlas exited early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.1)
    raise AssertionError("the run did not get far enough")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_subprocess_is_resumable(sig, reference, tiny_model_dir, tmp_path):
    """A real `workbench atlas` process killed mid-part; the store stays consistent; --resume finishes it."""
    _, _, ref_rows, ref_fams = reference
    markers = tmp_path / "markers.txt"
    results = tmp_path / "res"
    # 4 s per part: the signal must land while p2 is in flight even when a loaded machine delays
    # this process's wake-up by several seconds (at 1.5 s a starved test once saw the run finish).
    env = subprocess_env(**{MARKERS_ENV: str(markers), SECONDS_ENV: "4"})
    # A shell without job control starts background jobs with SIGINT ignored, children inherit that,
    # and Python then installs no KeyboardInterrupt handler: restore the default in the child.
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", *atlas_args(tiny_model_dir("llama"), results)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _wait_for_markers(markers, 3, proc)  # p0 and p1 finished, p2 in flight
        time.sleep(0.5)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    if sig == signal.SIGINT:
        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr
    else:
        assert proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(results / "workbench.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    run = only_run(results)
    assert run.status == "interrupted"
    assert run.stored_status == ("interrupted" if sig == signal.SIGINT else "running")
    assert run.parts_done == 3  # sinks, p0, p1: nothing finished is lost, the part in flight is not recorded

    result = subprocess.run(
        [sys.executable, "-m", "workbench", "runs", "--results", str(results)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and f"resume with: workbench atlas --resume {run.run_id}" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "workbench", "runs", "--results", str(results), "--json"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(result.stdout)[0]["status"] == "interrupted"

    result = subprocess.run(
        [sys.executable, "-m", "workbench", "atlas", "--resume", run.run_id, "--results", str(results), "-q"],
        env=subprocess_env(**{MARKERS_ENV: str(markers)}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    computed = markers.read_text().split()
    assert computed[:2] == ["p0", "p1"] and computed.count("p0") == 1 and computed.count("p1") == 1
    with Store.open(results) as store:
        assert store.run(run.run_id).status == "complete"
        assert normalised_rows(store, run.run_id) == ref_rows
        assert family_results(store, run.run_id) == ref_fams
    assert [p for p in (results / "runs").rglob("*") if ".tmp-" in p.name] == []
