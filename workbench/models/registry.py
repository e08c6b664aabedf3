"""Models registered by name (the project's model organisms, or any plugin's), found by `load_model`.

A registered model is a Hugging Face folder; `load_model("<name>")` loads it through exactly the
same path as any local folder. The organisms register theirs from ``workbench/organisms/shipped``
through the plugin entry point (`workbench.plugins`), so this module never imports them.
"""

from __future__ import annotations

from pathlib import Path

# The model `make demo` and the CLI use when none is named. When it is not registered (no organism
# shipped) the demo builds a tiny random model instead (see workbench.demo).
DEFAULT_MODEL = "organism-4l"

_MODELS: dict[str, Path] = {}


def register_model(name: str, folder: str | Path) -> None:
    """Make ``name`` load the Hugging Face folder ``folder`` (it must hold a config.json)."""
    _MODELS[name] = Path(folder)


def shipped_models() -> dict[str, Path]:
    """Name -> folder for every registered model whose folder has a config."""
    from workbench.plugins import load_plugins

    load_plugins()
    return {name: p for name, p in sorted(_MODELS.items()) if (p / "config.json").is_file()}
