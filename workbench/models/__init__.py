"""Loading models and describing their heads.

`Model` and `load_model` (torch, TransformerLens) are imported on first use, so that code which
only needs head addresses or geometry (the store, `workbench runs`, `workbench export`) starts
without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.models.geometry import BosHandling, HeadGeometry, PositionalScheme
from workbench.models.heads import Head, parse_head, parse_heads
from workbench.models.registry import DEFAULT_MODEL, shipped_models

if TYPE_CHECKING:
    from workbench.models.model import Model, load_model

__all__ = [
    "BosHandling",
    "DEFAULT_MODEL",
    "Head",
    "HeadGeometry",
    "Model",
    "PositionalScheme",
    "load_model",
    "parse_head",
    "parse_heads",
    "shipped_models",
]


def __getattr__(name: str) -> Any:
    if name in ("Model", "load_model"):
        from workbench.models import model

        return getattr(model, name)
    raise AttributeError(f"module 'workbench.models' has no attribute {name!r}")
