"""Check the import-layer contract in pyproject.toml ([tool.importlinter]) with import-linter.

Plain ``lint-imports`` builds its graph by walking the ``workbench`` folder, so it would not see
``workbench.kernels`` and ``workbench.app``, which are installed from the top-level ``kernels/`` and
``app/`` folders (the package-dir mapping in pyproject.toml). This script gives import-linter a
graph builder that adds those two packages, with their imports read the way grimp reads them
(module-level and function-level, TYPE_CHECKING blocks skipped), then runs the contracts.

    python tools/check_layers.py        # exit 0 when every contract is kept
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"workbench.kernels": ROOT / "kernels", "workbench.app": ROOT / "app"}


def _modules(package: str, folder: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out[".".join([package, *parts])] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, is_package: bool) -> list[tuple[str, int, str]]:
    """(imported name, line, line text) for every workbench import of one file."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found: list[tuple[str, int, str]] = []
    base = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.orelse:
                    visit(stmt)
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, lines[child.lineno - 1].strip()) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    anchor = base
                    for _ in range(child.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    target = f"{anchor}.{child.module}" if child.module else anchor
                else:
                    target = child.module or ""
                for alias in child.names:
                    found.append((f"{target}.{alias.name}", child.lineno, lines[child.lineno - 1].strip()))
            visit(child)

    visit(ast.parse(source))
    return [f for f in found if f[0].startswith("workbench")]


class MappedGraphBuilder:
    """import-linter's graph builder plus the packages installed from mapped folders."""

    def build(self, root_package_names, cache_dir=None, include_external_packages=False, exclude_type_checking_imports=False):
        import grimp

        graph = grimp.build_graph(
            *root_package_names,
            include_external_packages=include_external_packages,
            exclude_type_checking_imports=exclude_type_checking_imports,
            cache_dir=None,
        )
        mapped = {name: path for package, folder in MAPPED.items() for name, path in _modules(package, folder).items()}
        for name in mapped:
            graph.add_module(name)
        known = set(graph.modules)
        for name, path in mapped.items():
            for target, line, text in _imports(name, path, path.name == "__init__.py"):
                # `from pkg import name`: the submodule when it is one, else the package
                resolved = target if target in known else target.rpartition(".")[0]
                while resolved and resolved not in known:
                    resolved = resolved.rpartition(".")[0]
                if resolved and resolved != name:
                    graph.add_import(importer=name, imported=resolved, line_number=line, line_contents=text)
        return graph


def main() -> int:
    from importlinter import configuration
    from importlinter.application import use_cases
    from importlinter.application.app_config import settings

    configuration.configure()
    settings.configure(GRAPH_BUILDER=MappedGraphBuilder())
    ok = use_cases.lint_imports(config_filename=str(ROOT / "pyproject.toml"), cache_dir=None, no_logo=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
