"""Named, typed prompt sets: the project's shipped sets, files, cached Hugging Face datasets, and sets
that plugins (the model organisms) register for their own models.

A family asks for a *kind* of data and gets the set registered for the model in hand, or the
default for that kind, so a real model gets real language with no flags and the batch path never
asks "is this a shipped organism":

========== ===================================================================================
kind       items
========== ===================================================================================
text       plain prose: sink and temporal prompts, needle haystacks (default: shipped prose)
needles    needle-in-a-haystack trials (default: a text needle in a haystack generated from the text set
           to the needle context, `workbench.data.haystack`; ``retrieval.haystack`` names another)
harmful    refusal-eliciting requests (default: the shipped harmful requests)
harmless   everyday requests for the over-refusal check (default: the shipped harmless requests)
periodic   text with a known period (no default; the organisms register theirs)
========== ===================================================================================

Files (JSONL, JSON, CSV, TXT, with a field option) and datasets in the local Hugging Face cache
(``hf:NAME[:SPLIT[:FIELD]]``) load through the same reader (`workbench.data.prompts.load_prompts`).
A set is either items (`Dataset`: texts, or token ids for a model's own vocabulary) or a generator
(`GeneratedSet`: builds token-id prompts or needle trials from a seeded generator).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import InputDataError

if TYPE_CHECKING:
    from workbench.models.model import Model

KINDS: tuple[str, ...] = ("text", "needles", "harmful", "harmless", "periodic")
SHIPPED = Path(__file__).resolve().parent / "shipped"


@dataclass(frozen=True)
class Dataset:
    """A loaded set: for "text", one or more passages; otherwise one request per item. Items are texts,
    or token-id tuples when ``tokenized`` (a set written in one model's own vocabulary)."""

    name: str
    kind: str
    items: tuple[Any, ...]
    source: str  # where it came from: "shipped:prose", a file path, "hf:..."
    #: how the set expects to be used, e.g. {"max_new_tokens": 8} for requests answered in a few words
    hints: Mapping[str, Any] = field(default_factory=dict)
    tokenized: bool = False

    def __post_init__(self) -> None:
        if not self.items:
            raise InputDataError(f"dataset {self.name!r} ({self.source}) is empty", "give a set with at least one item")


#: ``make(model, rng, n, length)``: n token-id prompts [1, length] (text kinds) or n needle trials of
#: about ``length`` tokens ("needles")
MakeFn = Callable[["Model", np.random.Generator, int, int], list[Any]]


@dataclass(frozen=True)
class GeneratedSet:
    """A set built on demand from the run's seeded generator (e.g. an organism's grammar)."""

    name: str
    kind: str
    source: str
    make: MakeFn
    hints: Mapping[str, Any] = field(default_factory=dict)


PromptSet = Dataset | GeneratedSet
AppliesTo = Callable[["Model"], bool]


@dataclass(frozen=True)
class _Entry:
    kind: str
    loader: Callable[[], PromptSet]
    applies_to: AppliesTo | None


_ENTRIES: dict[str, _Entry] = {}
_DEFAULTS: dict[str, str] = {}


def register_dataset(
    name: str, kind: str, loader: Callable[[], PromptSet], default: bool = False, applies_to: AppliesTo | None = None
) -> None:
    """Register a named set. ``applies_to(model)``: the set is the one used for that model's ``kind``
    (the organisms register their sets this way); otherwise ``default`` makes it the kind's default."""
    if kind not in KINDS:
        raise InputDataError(f"unknown dataset kind {kind!r}", f"use one of {', '.join(KINDS)}")
    _ENTRIES[name] = _Entry(kind, loader, applies_to)
    if applies_to is None and (default or kind not in _DEFAULTS):
        _DEFAULTS[kind] = name


def dataset_names(kind: str | None = None) -> list[str]:
    _load_plugins()
    return sorted(n for n, e in _ENTRIES.items() if kind is None or e.kind == kind)


def get_dataset(spec: str, kind: str | None = None, field: str | None = None) -> PromptSet:
    """A registered name, a file path, or ``hf:NAME[:SPLIT[:FIELD]]``; checked against ``kind``."""
    _load_plugins()
    data: PromptSet
    if spec in _ENTRIES:
        data = _ENTRIES[spec].loader()
    elif spec.startswith("hf:"):
        data = _hf_dataset(spec, kind or "text", field)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise InputDataError(
                f"dataset {spec!r} is neither a registered set nor an existing file",
                f"use one of {', '.join(dataset_names()) or 'none'}, a .jsonl/.json/.csv/.txt file, or hf:NAME",
            )
        data = load_file(path, kind or "text", field)
    if kind is not None and data.kind != kind:
        raise InputDataError(
            f"dataset {spec!r} holds {data.kind} items, but {kind} items are needed",
            f"use one of {', '.join(dataset_names(kind))}",
        )
    return data


def default_dataset(kind: str) -> Dataset:
    """The kind's general default (the shipped sets); `dataset_for` prefers a model's own set."""
    _load_plugins()
    if kind not in _DEFAULTS:
        raise InputDataError(f"no dataset of kind {kind!r} is registered", "register one or give a file")
    data = get_dataset(_DEFAULTS[kind], kind)
    if not isinstance(data, Dataset):
        raise InputDataError(f"the default {kind} set {data.name!r} is generated, not items")
    return data


def model_dataset(kind: str, model: Model) -> PromptSet | None:
    """The set registered for this model's ``kind`` (the most recent registration wins), or None."""
    _load_plugins()
    for entry in reversed(list(_ENTRIES.values())):
        if entry.kind == kind and entry.applies_to is not None and entry.applies_to(model):
            return entry.loader()
    return None


def dataset_for(kind: str, model: Model) -> PromptSet | None:
    """The model's own set of this kind, else the default, else None (a kind with no default)."""
    own = model_dataset(kind, model)
    if own is not None:
        return own
    return default_dataset(kind) if kind in _DEFAULTS else None


def load_file(path: str | Path, kind: str, field: str | None = None) -> Dataset:
    """One reader for every file: a .txt "text" set is one passage; other kinds read one item per
    line / record (`workbench.data.prompts.load_prompts`, with its field option)."""
    from workbench.data.prompts import load_prompts

    p = Path(path).expanduser()
    if kind == "text" and p.suffix.lower() in (".txt", ".md", ""):
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputDataError(f"cannot read text file {str(p)!r}: {exc}", "give a UTF-8 text file") from exc
        items = tuple(x for x in (text.strip(),) if x)
    else:
        items = tuple(load_prompts(p, field))
    return Dataset(p.name, kind, items, str(p))


def _hf_dataset(spec: str, kind: str, field: str | None) -> Dataset:
    """``hf:NAME[:SPLIT[:FIELD]]`` from the local Hugging Face datasets cache (nothing is downloaded
    when HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set)."""
    parts = spec[3:].split(":")
    name, split = parts[0], (parts[1] if len(parts) > 1 and parts[1] else "train")
    field = parts[2] if len(parts) > 2 and parts[2] else field
    try:
        import datasets
    except ImportError as exc:
        raise InputDataError("hf: datasets need the `datasets` package", "pip install datasets") from exc
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise InputDataError(
            f"could not load {name!r} (split {split!r}) from the Hugging Face cache: {exc}",
            "download it where there is network, or give a local file",
        ) from exc
    columns = list(ds.column_names)
    field = field or next((c for c in ("prompt", "text", "instruction", "goal", "question") if c in columns), None)
    if field is None or field not in columns:
        raise InputDataError(f"dataset {name!r} has columns {columns}; none is a prompt field", "name one: hf:NAME:SPLIT:FIELD")
    items = tuple(str(x) for x in ds[field] if str(x).strip())
    return Dataset(name, kind, items, f"hf:{name}:{split}:{field}")


def _load_plugins() -> None:
    from workbench.plugins import load_plugins

    load_plugins()


def _shipped(filename: str, name: str, kind: str) -> Callable[[], Dataset]:
    @functools.cache  # the shipped files never change: read once per process, not once per family part
    def load() -> Dataset:
        data = load_file(SHIPPED / filename, kind, "prompt" if filename.endswith(".jsonl") else None)
        return Dataset(name, kind, data.items, f"shipped:{name}")

    return load


register_dataset("prose", "text", _shipped("prose.txt", "prose", "text"), default=True)
register_dataset("harmful-requests", "harmful", _shipped("harmful.jsonl", "harmful-requests", "harmful"), default=True)
register_dataset("harmless-requests", "harmless", _shipped("harmless.jsonl", "harmless-requests", "harmless"), default=True)
