"""`make demo`: the main job on the shipped default model.

Today it loads the default model and prints its head geometry (and a short attention
summary once the recorder exists); later stages grow this into the full head atlas.
If no organism is shipped yet it builds a tiny random Llama so the path runs end to end.
"""

from __future__ import annotations

import sys
from pathlib import Path

from workbench.cli.main import main as cli_main
from workbench.models.registry import DEFAULT_MODEL, shipped_models


def default_model_spec(results: Path = Path("wb-results")) -> str:
    if DEFAULT_MODEL in shipped_models():
        return DEFAULT_MODEL
    from workbench.models.tiny import build_tiny_model

    folder = results / "tiny-demo-model"
    if not (folder / "config.json").is_file():
        build_tiny_model(folder, "llama", seed=0)
    print(f"(no shipped organism yet: using a tiny random Llama built in {folder})")
    return str(folder)


def run(argv: list[str] | None = None) -> int:
    spec = default_model_spec()
    return cli_main(["info", spec])


if __name__ == "__main__":
    sys.exit(run())
