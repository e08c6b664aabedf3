"""The terminal: tables fit 80 columns without splitting a run id or a model name, piped runs
log their progress as they go, step bars never go stale, and ACT's head search reports progress."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import pytest
from atlas_helpers import synthetic_run
from rich.console import Console

from workbench.cli.progress import RunProgress
from workbench.store import Store

LONG_HUB_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _workbench(*args: str, columns: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, env=env, timeout=timeout)


def _assert_whole_and_narrow(out: str, run_ids: list[str], models: list[str], width: int) -> None:
    lines = out.splitlines()
    for run_id in run_ids:
        assert any(run_id in line for line in lines), f"{run_id!r} is split across lines:\n{out}"
    # a model name also shows inside its run id: look for it outside the run ids
    without_ids = [re.sub("|".join(map(re.escape, run_ids)), " ", line) for line in lines]
    for model in models:
        assert any(model in line for line in without_ids), f"model {model!r} is split across lines:\n{out}"
    # the resume hint is a command to copy: it is printed on one (soft-wrapped) line on purpose
    too_long = [line for line in lines if len(line.rstrip()) > width and not line.startswith("resume with:")]
    assert not too_long, f"lines over {width} columns:\n{out}"


@pytest.mark.parametrize("long_hub_name", [False, True], ids=["shipped+folder", "with-hub-id"])
def test_runs_table_fits_80_columns_without_splitting_names(tmp_path, tiny_model_dir, long_hub_name):
    folder = str(tiny_model_dir("llama"))
    models = ["organism-4l", folder] + ([LONG_HUB_MODEL] if long_hub_name else [])
    results = tmp_path / "results"
    with Store.open(results, write=True) as store:
        run_ids = [synthetic_run(store, name=m, n_parts=2) for m in models]
        run_ids.append(synthetic_run(store, name="organism-4l", n_parts=3, interrupt_at="p1"))
    proc = _workbench("runs", "--results", str(results), columns=80)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    names = ["organism-4l", os.path.basename(folder), *([LONG_HUB_MODEL] if long_hub_name else [])]
    _assert_whole_and_narrow(out, run_ids, names, 80)
    assert "interrupted" in out and "complete" in out
    # wider terminals get more columns (the start time)
    wide = _workbench("runs", "--results", str(results), columns=160)
    assert "started" in wide.stdout and "started" not in out
    _assert_whole_and_narrow(wide.stdout, run_ids, names, 160)


def test_runs_on_a_very_narrow_console_keeps_names_whole(tmp_path):
    results = tmp_path / "results"
    with Store.open(results, write=True) as store:
        run_ids = [synthetic_run(store, name="organism-4l", n_parts=2) for _ in range(2)]
    proc = _workbench("runs", "--results", str(results), columns=40)
    assert proc.returncode == 0, proc.stderr
    _assert_whole_and_narrow(proc.stdout, run_ids, ["organism-4l"], 40)


def test_piped_atlas_prints_progress_lines_as_it_goes(tmp_path, tiny_model_dir):
    """stderr is a pipe (not a terminal): timestamped lines as parts start, never bars."""
    results = tmp_path / "results"
    args = ["atlas", str(tiny_model_dir("llama")), "--families", "sinks", "--n-prompts", "2", "--max-tokens", "32"]
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", *args, "--results", str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    seen: list[tuple[str, bool]] = []  # (line, the process was still running when it arrived)
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    for line in proc.stderr:
        seen.append((line.rstrip("\n"), proc.poll() is None))
        assert time.monotonic() < deadline
    out = proc.stdout.read() if proc.stdout is not None else ""
    assert proc.wait(timeout=60) == 0, "\n".join(line for line, _ in seen)
    err = "\n".join(line for line, _ in seen)
    stamp = r"^\[\d\d:\d\d:\d\d\] "
    started = [(line, live) for line, live in seen if re.match(stamp + r"sinks part \w+ \(\d/2\) started$", line)]
    assert [line.split("] ", 1)[1] for line, _ in started] == ["sinks part all (1/2) started", "sinks part act (2/2) started"]
    assert started[0][1], "the first part's line came only when the run had ended"
    assert any(re.match(stamp + r"  sinks: recording 2/2 \(\d+\.\d s\)$", line) for line, _ in seen), err
    assert any(re.match(stamp + r"all 2 parts done$", line) for line, _ in seen), err
    assert any(re.match(stamp + r"run \S+ complete in", line) for line, _ in seen), err
    # no bars, no cursor movement, no redraws
    for bar in ("━", "\r", "\x1b[", "0:00:"):
        assert bar not in err, f"{bar!r} in piped stderr:\n{err}"
    assert "report: workbench report" in out


def test_quiet_prints_only_the_run_id(tmp_path, tiny_model_dir):
    results = tmp_path / "results"
    proc = _workbench(
        "atlas", str(tiny_model_dir("llama")), "--families", "sinks", "--n-prompts", "2", "--max-tokens", "24",
        "--set", "sinks.act=false", "--results", str(results), "-q",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"\d{8}-\d{6}-\S+-[0-9a-f]{4}\n", proc.stdout)
    assert "sinks part" not in proc.stderr and "━" not in proc.stderr


def _bars() -> RunProgress:
    return RunProgress(console=Console(file=io.StringIO(), force_terminal=True, width=80), live=True)


def _descriptions(bars: RunProgress) -> list[str]:
    assert bars._progress is not None
    return [task.description for task in bars._progress.tasks]


def test_step_bars_go_when_done_or_superseded_and_the_parts_bar_stays():
    with _bars() as bars:
        bars.on_part("temporal", "all", 0, 2)
        bars.step("temporal: text", 1, 2)
        assert _descriptions(bars) == ["[bold]temporal[/] part all", "  temporal: text"]
        bars.step("temporal: periodic", 1, 2)  # the next step: the unfinished one goes
        assert _descriptions(bars) == ["[bold]temporal[/] part all", "  temporal: periodic"]
        bars.step("temporal: periodic", 2, 2)  # done: its bar goes
        assert _descriptions(bars) == ["[bold]temporal[/] part all"]
        bars.on_part("sinks", "all", 1, 2)
        bars.step("sinks: recording", 1, 4)
        bars.on_part("sinks", "act", 1, 2)  # a new part: the previous part's steps go
        assert _descriptions(bars) == ["[bold]sinks[/] part act"]
        bars.step("sinks: ACT head search", 3, 8)
        bars.finish_parts(2)
        assert _descriptions(bars) == ["[bold]all parts"]


def test_stopping_mid_step_leaves_no_step_bar_on_screen():
    buf = io.StringIO()  # not a terminal: the bars draw one frame, the last, when they stop
    bars = RunProgress(console=Console(file=buf, width=80), live=True)
    with bars:
        bars.on_part("temporal", "all", 0, 1)
        bars.step("temporal: text", 1, 2)
        bars.stop()  # what an interrupt does on the way out
        assert bars._progress is None
    final = buf.getvalue()
    assert "temporal part all" in final and "temporal: text" not in final


def test_log_lines_are_throttled_per_step():
    buf = io.StringIO()
    bars = RunProgress(console=Console(file=buf, width=80), live=False, log_interval=3600)
    with bars:
        bars.on_part("sinks", "act", 1, 4)
        for i in range(1, 101):
            bars.step("sinks: ACT head search", i, 100)
        bars.finish_parts(4)
    lines = [line.split("] ", 1)[1] for line in buf.getvalue().splitlines()]
    assert lines[0] == "sinks part act (2/4) started"
    assert lines[1] == "  sinks: ACT head search 1/100"
    assert re.fullmatch(r"  sinks: ACT head search 100/100 \(\d+\.\d s\)", lines[2])
    assert lines[3:] == ["all 4 parts done"]


def test_act_head_search_reports_each_head(tiny_llama):
    from workbench.analysis.sinks import act_head_search

    calls: list[tuple[int, int]] = []
    result = act_head_search(
        tiny_llama, lambda: 0.0, lambda: 0.0, skip_first_layers=0, skip_last_layers=0, progress=lambda i, n: calls.append((i, n))
    )
    n = len(result.candidates)
    assert n == 8 and calls == [(i, n) for i in range(1, n + 1)]


def test_sinks_act_part_reports_its_head_search(tiny_llama):
    from workbench.families import RunContext
    from workbench.families.sinks import SinksFamily, SinksFamilyConfig

    calls: list[tuple[str, int, int]] = []
    fam = SinksFamily(SinksFamilyConfig(act_skip_first_layers=0, act_skip_last_layers=0))
    ctx = RunContext(seed=0, max_tokens=16, n_prompts=2, progress=lambda label, i, n: calls.append((label, i, n)))
    fam.run_part(tiny_llama, ctx, "act")
    assert calls == [("sinks: ACT head search", i, 8) for i in range(1, 9)]
