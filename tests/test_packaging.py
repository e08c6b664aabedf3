"""The explicit package list in pyproject.toml must cover every package folder."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _declared():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(cfg["packages"]), cfg["package-dir"]


def test_every_package_folder_is_declared():
    declared, mapping = _declared()
    found = set()
    for top, folder in [("workbench", "workbench"), ("workbench.kernels", "kernels"), ("workbench.app", "app")]:
        assert mapping[top] == folder
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "shipped" in rel.parts:
                continue
            found.add(".".join([top, *rel.parts]) if rel.parts else top)
    assert found <= declared, f"add to pyproject packages: {sorted(found - declared)}"


def test_install_names_do_not_shadow_other_distributions():
    import workbench.app
    import workbench.kernels

    assert workbench.kernels.__name__ == "workbench.kernels"
    assert workbench.app.__name__ == "workbench.app"
