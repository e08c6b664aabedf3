"""Files beside a run: arrays as safetensors, tables and other JSON as JSON.

Layout of ``<results>/runs/<run_id>/``::

    prompts.txt                      the prompt file's texts, copied at run start (when given)
    parts/<family>/<part>/           one finished part: part.json, scores.safetensors,
                                     arrays.safetensors, <name>.json
    <family>/<name>.safetensors      merged array artefacts (tensor "data")
    <family>/<name>.json             merged tables (a list of row objects) and JSON artefacts
    report.html, report.json         written by `workbench report`

Every file is written to a temporary name and renamed into place, and a part's folder is
renamed into place whole, so a killed writer never leaves a half-written file under a real name.
JSON has no NaN: NaN and infinities are written as null.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from workbench.analysis.scores import HeadScores

ARRAY_KEY = "data"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ArtefactRecord:
    name: str
    kind: str  # "array" | "table" | "json"
    path: str  # relative to the run folder
    dtype: str | None
    shape: tuple[int, ...] | None
    bytes: int


def safe_name(name: str) -> str:
    """A file-name-safe, collision-resistant version of an artefact, family or part name."""
    cleaned = _UNSAFE.sub("_", name.replace("/", "__")).strip("._") or "x"
    if cleaned != name:
        cleaned += "-" + format(abs(hash_text(name)) % 16**6, "06x")
    return cleaned


def hash_text(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays to Python, NaN/inf to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "tolist"):  # torch tensors
        return to_jsonable(obj.tolist())
    return str(obj)


def dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False)


def artefact_kind(value: Any) -> str:
    if isinstance(value, np.ndarray) or (hasattr(value, "detach") and hasattr(value, "numpy")):
        return "array"
    if isinstance(value, list) and all(isinstance(row, dict) for row in value):
        return "table"
    if isinstance(value, (dict, list)):
        return "json"
    raise TypeError(f"artefact of type {type(value).__name__} is not an array, a table or JSON")


def _as_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.ascontiguousarray(value)
    if arr.dtype == object:
        raise TypeError("object arrays cannot be stored; use a table (list of dicts) instead")
    return arr


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _fsync_write(tmp, data)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: _as_array(v) for k, v in arrays.items()}, str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_artefact(run_dir: Path, folder: str, name: str, value: Any) -> ArtefactRecord:
    """Write one artefact under ``run_dir/folder`` and return its index record."""
    kind = artefact_kind(value)
    if kind == "array":
        arr = _as_array(value)
        rel = f"{folder}/{safe_name(name)}.safetensors"
        _write_arrays(run_dir / rel, {ARRAY_KEY: arr})
        return ArtefactRecord(name, kind, rel, str(arr.dtype), tuple(arr.shape), (run_dir / rel).stat().st_size)
    rel = f"{folder}/{safe_name(name)}.json"
    atomic_write_text(run_dir / rel, dumps(value))
    shape = (len(value),) if isinstance(value, list) else None
    return ArtefactRecord(name, kind, rel, None, shape, (run_dir / rel).stat().st_size)


def read_artefact(run_dir: Path, kind: str, rel: str) -> Any:
    path = run_dir / rel
    if kind == "array":
        return load_file(str(path))[ARRAY_KEY]
    return json.loads(path.read_text(encoding="utf-8"))


# -- finished parts ------------------------------------------------------------------------------


def part_folder(family: str, part: str) -> str:
    return f"parts/{safe_name(family)}/{safe_name(part)}"


def write_part(run_dir: Path, family: str, part: str, result: Any) -> list[ArtefactRecord]:
    """Write a `PartResult` as a folder, renamed into place whole. Returns its artefact records."""
    rel = part_folder(family, part)
    final = run_dir / rel
    tmp_rel = f"{rel}.tmp-{os.getpid()}"
    tmp = run_dir / tmp_rel
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    scores: HeadScores = result.scores
    if scores.metrics:
        _write_arrays(tmp / "scores.safetensors", dict(scores.metrics))
    arrays = {k: v for k, v in result.artefacts.items() if artefact_kind(v) == "array"}
    if arrays:
        _write_arrays(tmp / "arrays.safetensors", {k: _as_array(v) for k, v in arrays.items()})
    records = []
    others: dict[str, str] = {}
    for name, value in result.artefacts.items():
        kind = artefact_kind(value)
        if kind == "array":
            arr = _as_array(value)
            records.append(ArtefactRecord(name, kind, f"{rel}/arrays.safetensors", str(arr.dtype), tuple(arr.shape), arr.nbytes))
        else:
            fname = f"{safe_name(name)}.json"
            text = dumps(value)
            _fsync_write(tmp / fname, text.encode("utf-8"))
            others[name] = fname
            records.append(ArtefactRecord(name, kind, f"{rel}/{fname}", None, None, len(text.encode("utf-8"))))
    manifest = {
        "family": family,
        "part": part,
        "score_family": scores.family,
        "n_layers": scores.n_layers,
        "n_heads": scores.n_heads,
        "metrics": list(scores.metrics),
        "descriptions": scores.descriptions,
        "arrays": list(arrays),
        "json": others,
        "kinds": {name: artefact_kind(v) for name, v in result.artefacts.items()},
        "order": list(result.artefacts),
        "summary": result.summary,
    }
    _fsync_write(tmp / "part.json", dumps(manifest, indent=1).encode("utf-8"))
    if final.exists():  # left by a writer killed after the rename but before its commit
        shutil.rmtree(final)
    os.replace(tmp, final)
    return records


def read_part(run_dir: Path, family: str, part: str) -> Any:
    """Read back a finished part as a `PartResult` (exactly the values that were written)."""
    from workbench.families.base import PartResult

    folder = run_dir / part_folder(family, part)
    manifest = json.loads((folder / "part.json").read_text(encoding="utf-8"))
    scores = HeadScores(manifest["score_family"], manifest["n_layers"], manifest["n_heads"])
    if manifest["metrics"]:
        stored = load_file(str(folder / "scores.safetensors"))
        for metric in manifest["metrics"]:
            scores.add(metric, stored[metric], manifest["descriptions"].get(metric, ""))
    arrays = load_file(str(folder / "arrays.safetensors")) if manifest["arrays"] else {}
    artefacts: dict[str, Any] = {}
    for name in manifest["order"]:
        if name in arrays:
            artefacts[name] = arrays[name]
        else:
            artefacts[name] = json.loads((folder / manifest["json"][name]).read_text(encoding="utf-8"))
    return PartResult(scores, artefacts, manifest["summary"])
