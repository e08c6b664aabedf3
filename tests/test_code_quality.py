"""Code quality gates of `make test`: ruff (lint and format), mypy, and the import-layer contract.

Each runs the real tool on the real tree, so a change that breaks a rule fails the suite; the
planted-violation test shows the layer check can fail at all.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["workbench", "kernels", "app", "tests", "benchmarks", "tools", "kvpress_bench", "notebooks/build_notebooks.py"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_ruff_lint_passes():
    proc = _run("ruff", "check", *PATHS)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_format_is_applied():
    proc = _run("ruff", "format", "--check", *PATHS)
    assert proc.returncode == 0, "run `ruff format` on:\n" + proc.stdout[-4000:]


def test_mypy_passes():
    proc = _run("mypy")  # files and settings: [tool.mypy] in pyproject.toml
    assert proc.returncode == 0, proc.stdout[-6000:]


def _check_layers_module():
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "tools" / "check_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_import_layer_contract_is_kept():
    proc = subprocess.run([sys.executable, "tools/check_layers.py"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "3 kept, 0 broken" in proc.stdout


def test_the_layer_check_catches_an_upward_import_and_a_cycle(tmp_path, monkeypatch, capsys):
    """A kernels module importing the store (kernels sit below it) breaks the layers; two modules
    importing each other break the acyclic contract."""
    fake = tmp_path / "kernels"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "planted.py").write_text("from workbench.store import Store\n")
    (fake / "ping.py").write_text("def f():\n    from workbench.kernels import pong\n")  # a cycle, function-level
    (fake / "pong.py").write_text("from workbench.kernels import ping\n")
    check = _check_layers_module()
    monkeypatch.setattr(check, "MAPPED", {"workbench.kernels": fake, "workbench.app": ROOT / "app"})
    assert check.main() == 1
    out = capsys.readouterr().out
    assert "workbench.kernels.planted -> workbench.store" in out
    assert "no import cycles between sibling modules or packages, at any depth BROKEN" in " ".join(out.split())
