"""Interventions on a loaded `Model`: the causal checks behind every analysis.

`ablation`: ablate a list of heads (zero, mean or uniform attention) inside a context manager, on a
workbench `Model` (``ablate_heads``) or on a plain Hugging Face model (``ablate_heads_hf``, whose uniform mode
needs modules that call Hugging Face's attention interface).
"""

from workbench.interventions.ablation import (
    ABLATION_MODES,
    DEFAULT_EPSILON,
    ablate_heads,
    ablate_heads_hf,
    ablated_logits,
    ablation_hooks,
    head_means,
    head_means_hf,
)

__all__ = [
    "ABLATION_MODES",
    "DEFAULT_EPSILON",
    "ablate_heads",
    "ablate_heads_hf",
    "ablated_logits",
    "ablation_hooks",
    "head_means",
    "head_means_hf",
]
