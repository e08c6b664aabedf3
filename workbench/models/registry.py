"""Models the project ships (the model organisms), found by name.

Each shipped model is a Hugging Face folder under ``workbench/organisms/shipped/<name>/``;
`load_model("<name>")` loads it through exactly the same path as any local folder.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "organisms" / "shipped"

# The model `make demo` and the CLI use when none is named. Until an organism is shipped
# the demo builds a tiny random model instead (see workbench.demo).
DEFAULT_MODEL = "organism-4l"


def shipped_models() -> dict[str, Path]:
    """Name -> folder for every shipped model that has a config."""
    if not SHIPPED_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(SHIPPED_DIR.iterdir()) if (p / "config.json").is_file()}
