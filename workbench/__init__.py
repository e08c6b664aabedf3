"""Attention Workbench: find out what each attention head of a language model does.

``from workbench import Atlas`` is the Python entry point (see `workbench.atlas`); it is imported on
first use so that ``import workbench`` stays light.
"""

from typing import Any

from workbench.version import __version__

__all__ = ["Atlas", "AtlasResult", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Atlas", "AtlasResult", "AtlasProgress"):
        import workbench.atlas as atlas
        import workbench.report.notebook  # noqa: F401  (installs AtlasResult's findings and report views)

        return getattr(atlas, name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
