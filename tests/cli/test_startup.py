"""Issue 27: `workbench runs`, `info --help` and `export` start without torch, TransformerLens or
transformers (they took 5-20 s importing them just to print metadata). Deterministic: each command
runs in a fresh interpreter that then lists the heavy modules it imported; no timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformer_lens", "transformers")

#: Runs the CLI in-process (as the console script does), then prints which heavy modules got imported.
PROBE = """
import json, sys
from workbench.cli.main import main
code = main(sys.argv[1:])
print("HEAVY=" + json.dumps([m for m in {heavy!r} if m in sys.modules]))
print("CODE=" + str(code))
"""


def _heavy_after(*args: str) -> tuple[list[str], int, str]:
    result = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True, timeout=300)
    lines = result.stdout.splitlines()
    heavy = next((json.loads(x[6:]) for x in lines if x.startswith("HEAVY=")), None)
    code = next((int(x[5:]) for x in lines if x.startswith("CODE=")), None)
    assert heavy is not None and code is not None, result.stdout + result.stderr
    return heavy, code, " ".join((result.stdout + result.stderr).split())


def test_the_cli_app_assembles_without_heavy_imports():
    code = f"import sys; import workbench.cli.main; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("args", [["runs", "--help"], ["info", "--help"], ["export", "--help"], ["--help"]])
def test_help_imports_no_torch(args):
    heavy, code, out = _heavy_after(*args)
    assert code == 0, out
    assert heavy == [], f"`workbench {' '.join(args)}` imported {heavy}"


def test_runs_on_missing_and_empty_stores_import_no_torch(tmp_path: Path):
    heavy, code, out = _heavy_after("runs", "--results", str(tmp_path / "none"))
    assert code == 2 and "does not exist" in out and heavy == []
    from workbench.store import Store

    Store.open(tmp_path / "empty", write=True).close()
    heavy, code, out = _heavy_after("runs", "--results", str(tmp_path / "empty"))
    assert code == 0 and "no runs" in out and heavy == []


def test_table_export_imports_no_torch(tmp_path: Path, tiny_model_dir):
    sys.path.insert(0, str(Path(__file__).parents[1] / "app"))
    from app_helpers import write_run

    results = tmp_path / "results"
    rid = write_run(results, tiny_model_dir("llama"), 2, 4, run_id="run-x")
    heavy, code, out = _heavy_after("runs", "--results", str(results))
    assert code == 0 and "run-x" in out and heavy == []
    heavy, code, out = _heavy_after("export", rid, "--results", str(results), "--format", "csv", "--out", str(tmp_path / "x"))
    assert code == 0 and (tmp_path / "x" / "head_scores.csv").is_file() and heavy == [], out


def test_the_cli_lists_every_kv_export_format():
    from workbench.cli.export import LABEL_FORMATS
    from workbench.report.kv_export import FORMATS

    assert LABEL_FORMATS == FORMATS
