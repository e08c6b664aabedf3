"""The worked-example notebooks in notebooks/.

Fast checks: the committed notebooks are exactly what ``notebooks/build_notebooks.py`` writes, and they
are stored without outputs (so diffs stay readable).

Slow checks (``pytest -m "slow or not slow" tests/notebooks``): every notebook is executed top to bottom
with nbclient on a ``python3`` kernel of this environment, on the shipped organism, on the CPU with one
torch thread, with ``WORKBENCH_RESULTS`` in a temporary folder and the kernel started there, so nothing
is written into the repository. A cell error fails the test, and that includes the assertions the
notebooks make on their key numbers.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
ALL_NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # per cell; each notebook takes well under 2 minutes on one CPU thread


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOK_DIR / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_notebooks():
    names = [p.stem for p in ALL_NOTEBOOKS]
    assert names == sorted(_builder().NOTEBOOKS), "notebooks/ and build_notebooks.py list different notebooks"
    assert not (NOTEBOOK_DIR / "drafts").exists()


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_builder(path):
    assert path.read_text() == _builder().render(path.stem), (
        f"{path.name} differs from notebooks/build_notebooks.py: edit the builder and run it"
    )


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path.name}: strip outputs"


def _kernel_is_this_python() -> bool:
    """The python3 kernelspec runs this interpreter (jupyter_client swaps a bare `python` for sys.executable)."""
    from jupyter_client.kernelspec import KernelSpecManager

    exe = KernelSpecManager().get_kernel_spec("python3").argv[0]
    bare = {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
    return exe in bare or Path(exe).resolve() == Path(sys.executable).resolve()


@pytest.mark.slow
@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    assert _kernel_is_this_python(), "the python3 kernel does not run this environment's interpreter"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("WORKBENCH_RESULTS", str(tmp_path / "wb-results"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("WB_REAL_MODEL", "WB_HARMFUL_PROMPTS"):  # the "other model" cells use their built-in fallback
        monkeypatch.delenv(var, raising=False)
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        nbformat.write(nb, tmp_path / path.name)  # the executed copy, outputs included, for a look
        pytest.fail(f"{path.name} failed in a cell (executed copy: {tmp_path / path.name})\n{exc}", pytrace=False)
    seconds = time.perf_counter() - t0
    print(f"{path.name}: executed in {seconds:.1f} s")

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), "a code cell did not run"
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before, "executing the notebook wrote into notebooks/"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_does_not_run_the_cli(path):
    """Notebooks run the atlas through `workbench.Atlas` and the library functions, never the `workbench` command."""
    nb = json.loads(path.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "workbench.cli" not in code and "main([" not in code, f"{path.name} calls the CLI from Python"
