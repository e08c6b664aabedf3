"""The score table every analysis family returns.

One value per (metric, layer, head); the store, the report and the dashboard read this
shape and nothing family-specific. Rows are ``(family, metric, layer, head, score)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from workbench.models.heads import Head


@dataclass
class HeadScores:
    family: str
    n_layers: int
    n_heads: int
    metrics: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> float64 [n_layers, n_heads]
    descriptions: dict[str, str] = field(default_factory=dict)

    def add(self, metric: str, values: np.ndarray, description: str = "", replace: bool = False) -> None:
        """Add one metric; a name already in the table is refused (two producers must not share one
        name: the second would silently overwrite the first) unless ``replace`` says it is meant."""
        if metric in self.metrics and not replace:
            raise ValueError(
                f"metric {metric!r} is already in the {self.family} scores ({self.descriptions.get(metric) or 'no description'}); "
                "give the new score its own name"
            )
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != (self.n_layers, self.n_heads):
            raise ValueError(f"metric {metric!r} has shape {arr.shape}, expected {(self.n_layers, self.n_heads)}")
        self.metrics[metric] = arr
        if description:
            self.descriptions[metric] = description

    def __getitem__(self, metric: str) -> np.ndarray:
        if metric not in self.metrics:
            raise KeyError(f"no metric {metric!r} in {self.family} scores; have {sorted(self.metrics)}")
        return self.metrics[metric]

    def score(self, metric: str, head: Head | tuple[int, int]) -> float:
        layer, h = head
        return float(self[metric][layer, h])

    def ranked(self, metric: str, descending: bool = True) -> list[tuple[Head, float]]:
        """All heads ordered by the metric (NaN last), ties broken by (layer, head)."""
        values = self[metric]
        items = [(Head(layer, h), float(values[layer, h])) for layer in range(self.n_layers) for h in range(self.n_heads)]
        sign = -1.0 if descending else 1.0
        return sorted(items, key=lambda it: (np.isnan(it[1]), sign * (0.0 if np.isnan(it[1]) else it[1]), it[0]))

    def top(self, metric: str, k: int, descending: bool = True) -> list[Head]:
        return [head for head, _ in self.ranked(metric, descending)[:k]]

    def rows(self) -> Iterator[tuple[str, str, int, int, float]]:
        for metric, values in self.metrics.items():
            for layer in range(self.n_layers):
                for h in range(self.n_heads):
                    yield (self.family, metric, layer, h, float(values[layer, h]))
