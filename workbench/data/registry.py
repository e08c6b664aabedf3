"""Named, typed prompt sets: the project's shipped sets, files, and cached Hugging Face datasets.

A family asks for a *kind* of data ("text", "harmful", "harmless") and gets the registered default
for it, so a real model gets real language with no flags: plain prose for sink and temporal prompts
and needle haystacks, and refusal-eliciting / everyday requests for the safety family (all written
for this project: ``workbench/data/shipped``). Files (JSONL, JSON, CSV, TXT, with a field option) and
datasets in the local Hugging Face cache (``hf:NAME[:SPLIT[:FIELD]]``) load through the same reader.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from workbench.errors import InputDataError

DatasetKind = Literal["text", "harmful", "harmless"]
KINDS: tuple[str, ...] = ("text", "harmful", "harmless")
SHIPPED = Path(__file__).resolve().parent / "shipped"


@dataclass(frozen=True)
class Dataset:
    """A loaded prompt set: for "text", one or more passages; otherwise one request per item."""

    name: str
    kind: str
    items: tuple[str, ...]
    source: str  # where it came from: "shipped:prose", a file path, "hf:..."

    def __post_init__(self) -> None:
        if not self.items:
            raise InputDataError(f"dataset {self.name!r} ({self.source}) is empty", "give a set with at least one item")


_LOADERS: dict[str, tuple[str, Callable[[], Dataset]]] = {}
_DEFAULTS: dict[str, str] = {}


def register_dataset(name: str, kind: str, loader: Callable[[], Dataset], default: bool = False) -> None:
    """Register a named set (organisms and plugins register theirs the same way)."""
    if kind not in KINDS:
        raise InputDataError(f"unknown dataset kind {kind!r}", f"use one of {', '.join(KINDS)}")
    _LOADERS[name] = (kind, loader)
    if default or kind not in _DEFAULTS:
        _DEFAULTS[kind] = name


def dataset_names(kind: str | None = None) -> list[str]:
    return sorted(n for n, (k, _) in _LOADERS.items() if kind is None or k == kind)


def get_dataset(spec: str, kind: str | None = None, field: str | None = None) -> Dataset:
    """A registered name, a file path, or ``hf:NAME[:SPLIT[:FIELD]]``; checked against ``kind``."""
    if spec in _LOADERS:
        registered_kind, loader = _LOADERS[spec]
        data = loader()
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
        raise InputDataError(f"dataset {spec!r} holds {data.kind} items, but {kind} items are needed",
                             f"use one of {', '.join(dataset_names(kind))}")
    return data


def default_dataset(kind: str) -> Dataset:
    if kind not in _DEFAULTS:
        raise InputDataError(f"no dataset of kind {kind!r} is registered", "register one or give a file")
    return get_dataset(_DEFAULTS[kind], kind)


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
        raise InputDataError(f"could not load {name!r} (split {split!r}) from the Hugging Face cache: {exc}",
                             "download it where there is network, or give a local file") from exc
    columns = list(ds.column_names)
    field = field or next((c for c in ("prompt", "text", "instruction", "goal", "question") if c in columns), None)
    if field is None or field not in columns:
        raise InputDataError(f"dataset {name!r} has columns {columns}; none is a prompt field", "name one: hf:NAME:SPLIT:FIELD")
    items = tuple(str(x) for x in ds[field] if str(x).strip())
    return Dataset(name, kind, items, f"hf:{name}:{split}:{field}")


def _shipped(filename: str, name: str, kind: str) -> Callable[[], Dataset]:
    @functools.cache  # the shipped files never change: read once per process, not once per family part
    def load() -> Dataset:
        data = load_file(SHIPPED / filename, kind, "prompt" if filename.endswith(".jsonl") else None)
        return Dataset(name, kind, data.items, f"shipped:{name}")

    return load


register_dataset("prose", "text", _shipped("prose.txt", "prose", "text"), default=True)
register_dataset("harmful-requests", "harmful", _shipped("harmful.jsonl", "harmful-requests", "harmful"), default=True)
register_dataset("harmless-requests", "harmless", _shipped("harmless.jsonl", "harmless-requests", "harmless"), default=True)
