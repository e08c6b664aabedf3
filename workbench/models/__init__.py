"""Loading models and describing their heads."""

from workbench.models.geometry import BosHandling, HeadGeometry, PositionalScheme
from workbench.models.heads import Head, parse_head, parse_heads
from workbench.models.model import Model, load_model
from workbench.models.registry import DEFAULT_MODEL, shipped_models

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
