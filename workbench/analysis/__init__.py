"""Per-head analyses. Every family returns a `HeadScores` table plus family artefacts."""

from workbench.analysis.scores import HeadScores

__all__ = ["HeadScores"]
