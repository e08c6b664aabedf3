"""The seam between the batch path (CLI, store, report) and the analyses.

A family is one kind of analysis (sinks, retrieval, safety, temporal). To add one, write a
module with a `Family` subclass and register it with one line in `registry.py`::

    @dataclass(frozen=True)
    class EchoConfig:
        '''Defaults from <paper>.'''
        window: int = 64

    class EchoFamily(Family):
        name = "echo"
        config_class = EchoConfig
        description = "heads that attend to earlier copies of the current token"
        primary_metric = "echo_score"          # ranks the top heads in the report
        evidence_metric = "ablation_delta"     # the causal check shown beside them (or None)

        def run_part(self, model, ctx, part):
            scores = HeadScores(self.name, model.geometry.n_layers, model.geometry.n_heads)
            scores.add("echo_score", ..., "mean attention on earlier copies")
            return PartResult(scores, artefacts={"hits": [{"layer": 0, "head": 1, ...}]}, summary={...})

What the batch path does with it:

* ``parts(model, ctx)`` names the resumable units (default: one part, ``"all"``). Each finished
  part is written to the store in one transaction; a resumed run re-runs only the parts that are
  not done. A part must be deterministic given the model, ``ctx`` and the config (seed from
  ``ctx.rng(self.name, part)``), so that a resumed run equals an uninterrupted one.
* ``run_part(model, ctx, part)`` returns a `PartResult`: a `HeadScores` (heads a part did not
  compute are NaN), artefacts and a JSON-able summary.
* ``merge(parts)`` combines the finished parts (read back from the store, in ``parts`` order) into
  a `FamilyResult`. The default takes, per metric and head, the value of the first part that is
  not NaN, keeps the artefacts (prefixed ``<part>/`` when there are several parts) and nests the
  summaries by part; ``members`` come from ``members(scores)``.

Artefacts are ``np.ndarray`` (stored as safetensors), lists of dicts (tables) or dicts/lists
(JSON). The report draws every metric as a layer x head heatmap, shows the top heads by
``primary_metric`` with ``evidence_metric`` beside them, and prints every table artefact; the
tables ``sink_tokens``, ``retrieval_hits`` and ``temporal_classes`` get their own views
(see `workbench.report.figures`). ``members`` are the heads the family claims (the report's
cross-family view lists heads claimed by more than one family).
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from workbench.analysis.scores import HeadScores
from workbench.errors import InputDataError
from workbench.families.context import RunContext

if TYPE_CHECKING:
    from workbench.models.model import Model

Artefact = np.ndarray | list | dict


@dataclass
class PartResult:
    """What one part of a family computed."""

    scores: HeadScores
    artefacts: dict[str, Artefact] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class FamilyResult:
    """A family's merged result: what the store keeps and the report shows."""

    scores: HeadScores
    artefacts: dict[str, Artefact] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    members: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class InputProblem:
    """A problem with a family's inputs found before any work starts (`Family.check_inputs`).

    ``fatal``: the run cannot give a meaningful number (refused with this message); otherwise a
    warning recorded with the run and shown in its report (e.g. a fallback to random tokens)."""

    family: str
    message: str
    fix: str = ""
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.family}: {self.message}" + (f" (fix: {self.fix})" if self.fix else "")


@dataclass(frozen=True)
class NoConfig:
    """A family without options."""


class Family(ABC):
    """Base class of an analysis family; see the module docstring for the contract."""

    name: ClassVar[str]
    config_class: ClassVar[type] = NoConfig
    description: ClassVar[str] = ""
    primary_metric: ClassVar[str | None] = None
    evidence_metric: ClassVar[str | None] = None

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.config_class()

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> Family:
        return cls(make_config(cls.config_class, options or {}, cls.name))

    def parts(self, model: Model, ctx: RunContext) -> list[str]:
        return ["all"]

    def check_inputs(self, model: Model, ctx: RunContext) -> list[InputProblem]:
        """Resolve and check this family's inputs (sets, files, lengths) without running anything, so
        an atlas reports every problem of every family before its first part (default: none)."""
        return []

    @abstractmethod
    def run_part(self, model: Model, ctx: RunContext, part: str) -> PartResult: ...

    def members(self, scores: HeadScores) -> list[tuple[int, int]]:
        """Heads the family claims; default: none (override with the family's own criterion)."""
        return []

    def merge(self, parts: dict[str, PartResult]) -> FamilyResult:
        if not parts:
            raise ValueError(f"family {self.name}: nothing to merge")
        names = list(parts)
        first = parts[names[0]].scores
        scores = HeadScores(self.name, first.n_layers, first.n_heads)
        metrics: list[str] = []
        for res in parts.values():
            metrics += [m for m in res.scores.metrics if m not in metrics]
        for metric in metrics:
            merged = np.full((first.n_layers, first.n_heads), np.nan)
            description = ""
            for res in parts.values():
                if metric in res.scores.metrics:
                    values = res.scores.metrics[metric]
                    merged = np.where(np.isnan(merged), values, merged)
                    description = description or res.scores.descriptions.get(metric, "")
            scores.add(metric, merged, description)
        if len(parts) == 1:
            only = parts[names[0]]
            artefacts, summary = dict(only.artefacts), dict(only.summary)
        else:
            artefacts = {f"{p}/{k}": v for p, res in parts.items() for k, v in res.artefacts.items()}
            summary = {"parts": {p: res.summary for p, res in parts.items()}}
        return FamilyResult(scores, artefacts, summary, self.members(scores))

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls.config_class)]


def _coerce(value: Any, default: Any, key: str, annotation: Any = None) -> Any:
    """Bring a config-file or command-line value to the type of the field's default (for a ``None``
    default, to the type its annotation names: ``int | None`` takes an int or "none")."""
    if value is None:
        return value
    if default is None:
        if isinstance(value, str) and value.strip().lower() in ("none", "null", ""):
            return None
        hint = str(annotation or "")
        for kind in (int, float):
            if kind.__name__ in hint.replace(" ", "").split("|"):
                return _coerce(value, kind(0), key)
        return value
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "yes", "on", "1", "false", "no", "off", "0"}:
            return value.lower() in {"true", "yes", "on", "1"}
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                out = float(value)
                if math.isfinite(out):
                    return out
            except ValueError:
                pass
    elif kind is str:
        return str(value)
    elif kind is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    else:
        return value
    raise InputDataError(f"option {key!r} must be {kind.__name__}, got {value!r}", f"give a {kind.__name__} value")


def make_config(config_class: type, options: dict[str, Any], family: str) -> Any:
    """Build a family config from overrides; an unknown key is an error that lists the valid ones."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    values = {}
    for key, value in options.items():
        if key not in fields:
            valid = ", ".join(sorted(fields)) or "(this family has no options)"
            raise InputDataError(f"unknown option {key!r} for family {family!r}", f"valid {family} options: {valid}")
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else None
        values[key] = _coerce(value, default, f"{family}.{key}", f.type)
    return config_class(**values)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) and not isinstance(config, type) else {}
