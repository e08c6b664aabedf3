"""Interventions on a loaded `Model`: the causal checks behind every analysis.

`ablation`: ablate a list of heads (zero, mean or uniform attention) inside a context manager.
"""

from workbench.interventions.ablation import (
    ABLATION_MODES,
    DEFAULT_EPSILON,
    ablate_heads,
    ablated_logits,
    ablation_hooks,
    head_means,
)

__all__ = ["ABLATION_MODES", "DEFAULT_EPSILON", "ablate_heads", "ablated_logits", "ablation_hooks", "head_means"]
