"""Model organisms: tiny Llama models trained in the project with planted, verified head behaviours.

- `vocab`: the word classes and held-out splits; `tasks`: the task generators;
- `datasets`: held-out probe sets by name (``load_probes("refusal-harmful-test")``);
- `recipes`: one config per organism; `train`: training and export; `evaluate`: held-out accuracy;
- `ground_truth`: the single-head ablation table; `card`: the model card.

Shipped organisms live in ``shipped/<name>/`` and load with ``workbench.models.load_model(name)``.
"""

from workbench.organisms.datasets import load_probes, probe_set_names, probe_texts
from workbench.organisms.recipes import RECIPES, Recipe, get_recipe

__all__ = ["RECIPES", "Recipe", "get_recipe", "load_probes", "probe_set_names", "probe_texts"]
