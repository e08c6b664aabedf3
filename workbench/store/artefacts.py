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
JSON has no NaN: NaN and infinities are written as null. A write that fails (a full disk) removes
its temporary and raises `WriteError` naming the folder.

Every reader goes through `read_artefact` / `load_artefacts`: a missing or unreadable file is an
`ArtefactError` naming it, and `load_artefacts` / `DamageTolerantStore` skip such a file and list it
as damaged, so one bad file never hides the rest of a run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from workbench.analysis.scores import HeadScores
from workbench.store.db import StoreError

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


class ArtefactError(StoreError):
    """A file beside a run is missing or cannot be read: names the file and why, so a reader can
    mark that artefact damaged and show the rest (`load_artefacts`), or refuse in one line."""

    def __init__(self, path: str | Path, reason: str, hint: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"damaged: {self.path}: {reason}",
            hint or "restore the file, or run the family again (workbench atlas ... --families FAMILY)",
        )


class WriteError(StoreError):
    """A file could not be written (full disk, read-only folder): names the folder."""


@dataclass(frozen=True)
class Damage:
    """One artefact a reader skipped because its file is missing or unreadable."""

    family: str
    name: str
    path: str
    reason: str

    @property
    def note(self) -> str:
        return f"damaged: {self.path}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return {"family": self.family, "name": self.name, "path": self.path, "reason": self.reason, "note": self.note}


def _reason(exc: BaseException) -> str:
    """Why a file could not be read, in a few words."""
    if isinstance(exc, FileNotFoundError):
        return "missing"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    if isinstance(exc, OSError):
        return f"cannot be read ({exc.strerror or exc})"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if isinstance(exc, SafetensorError):
        return f"not a readable safetensors file ({exc})"
    return f"unreadable ({type(exc).__name__}: {exc})"


#: What reading a file beside a run can raise when the file is damaged (anything else is a bug).
READ_ERRORS = (OSError, ValueError, SafetensorError, KeyError, TypeError)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except READ_ERRORS as exc:
        raise ArtefactError(path, _reason(exc)) from exc


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        return load_file(str(path))
    except READ_ERRORS as exc:
        raise ArtefactError(path, _reason(exc)) from exc


def read_artefact(
    run_dir: Path, kind: str, rel: str, dtype: str | None = None, shape: list[int] | tuple[int, ...] | None = None
) -> Any:
    """One artefact, checked against its kind (and the dtype and shape the index recorded for an
    array); a missing or unreadable file raises `ArtefactError` naming it."""
    path = run_dir / rel
    if kind == "array":
        arrays = _read_arrays(path)
        if ARRAY_KEY not in arrays:
            raise ArtefactError(path, f"has no tensor {ARRAY_KEY!r}")
        value = arrays[ARRAY_KEY]
        if dtype is not None and str(value.dtype) != dtype:
            raise ArtefactError(path, f"holds {value.dtype}, the run recorded {dtype}")
        if shape is not None and list(value.shape) != list(shape):
            raise ArtefactError(path, f"holds shape {list(value.shape)}, the run recorded {list(shape)}")
        return value
    value = _read_json(path)
    if kind == "table" and not (isinstance(value, list) and all(isinstance(r, dict) for r in value)):
        raise ArtefactError(path, "not a table (a JSON list of row objects)")
    if kind == "json" and not isinstance(value, (dict, list)):
        raise ArtefactError(path, "not a JSON object or list")
    return value


class LoadedArtefacts(dict):
    """name -> value of the artefacts that could be read; ``damaged`` lists the others."""

    def __init__(self) -> None:
        super().__init__()
        self.damaged: list[Damage] = []


def load_artefacts(run_dir: Path, index: list[dict[str, Any]]) -> LoadedArtefacts:
    """Every artefact of ``index`` (rows of `Store.artefact_index`) that can be read; a missing or
    unreadable one is skipped and recorded in ``.damaged``, so one bad file never hides the rest."""
    out = LoadedArtefacts()
    for a in index:
        try:
            if a["kind"] == "array":
                out[a["name"]] = read_artefact(run_dir, a["kind"], a["path"], a.get("dtype"), a.get("shape"))
            else:
                out[a["name"]] = read_artefact(run_dir, a["kind"], a["path"])
        except ArtefactError as exc:
            out.damaged.append(Damage(str(a.get("family", "")), str(a["name"]), exc.path, exc.reason))
    return out


class DamageTolerantStore:
    """A view of a `Store` whose ``artefacts()`` skips damaged files instead of raising, and keeps
    what it skipped in ``damaged``: the report, export, compare and dashboard read through it so
    that one bad file marks that artefact damaged and everything else is still shown."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.damaged: list[Damage] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def artefacts(self, run_id: str, family: str) -> LoadedArtefacts:
        loaded = load_artefacts(self._store.run_dir(run_id), self._store.artefact_index(run_id, family))
        for d in loaded.damaged:
            if d not in self.damaged:
                self.damaged.append(d)
        return loaded

    def damaged_in(self, family: str) -> list[Damage]:
        return [d for d in self.damaged if d.family == family]


def tolerant(store: Any) -> DamageTolerantStore:
    """``store`` as a `DamageTolerantStore` (itself when it is one already)."""
    return store if isinstance(store, DamageTolerantStore) else DamageTolerantStore(store)


# -- writes ----------------------------------------------------------------------------------------


def write_failure(exc: OSError, folder: Path) -> WriteError:
    """The user-facing error for a failed write into ``folder``: ENOSPC says the disk is full."""
    if exc.errno == errno.ENOSPC:
        why = "the disk is full (no space left on device)"
        hint = f"free space on the disk holding {str(folder)!r}, or write elsewhere (--out / --results)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = f"the folder is not writable ({exc.strerror})"
        hint = "choose a writable folder (--out / --results)"
    else:
        why = exc.strerror or str(exc)
        hint = "check the folder, or write elsewhere (--out / --results)"
    return WriteError(f"cannot write into {str(folder)!r}: {why}; nothing was left half-written there", hint)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class AtomicFiles:
    """Files written under temporary names in their own folders and renamed into place together when
    the block ends: on any failure every temporary is removed and no final file is touched (an old
    file stays whole, a new one never appears truncated), and an OSError becomes `WriteError`.

    ``with AtomicFiles() as out: out.write_text(path, text)``"""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def write_bytes(self, path: str | Path, data: bytes) -> Path:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_failure(exc, path.parent) from exc
        tmp = _temp_name(path)
        self._pending.append((tmp, path))
        try:
            _fsync_write(tmp, data)
        except OSError as exc:
            raise write_failure(exc, path.parent) from exc
        return path

    def write_text(self, path: str | Path, text: str) -> Path:
        return self.write_bytes(path, text.encode("utf-8"))

    def __enter__(self) -> AtomicFiles:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            try:
                for tmp, final in self._pending:
                    os.replace(tmp, final)
            except OSError as err:
                self._discard()
                raise write_failure(err, final.parent) from err
        else:
            self._discard()
            if isinstance(exc, OSError):
                folder = self._pending[-1][1].parent if self._pending else Path.cwd()
                raise write_failure(exc, folder) from exc
        self._pending = []

    def _discard(self) -> None:
        for tmp, _ in self._pending:
            _unlink(tmp)
        self._pending = []


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """One file, written to a temporary name in its folder and renamed into place (`AtomicFiles`)."""
    with AtomicFiles() as out:
        out.write_bytes(path, data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write_bytes(path, save({k: _as_array(v) for k, v in arrays.items()}))


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


# -- finished parts ------------------------------------------------------------------------------


def part_folder(family: str, part: str) -> str:
    return f"parts/{safe_name(family)}/{safe_name(part)}"


def write_part(run_dir: Path, family: str, part: str, result: Any) -> list[ArtefactRecord]:
    """Write a `PartResult` as a folder, renamed into place whole. Returns its artefact records.
    On a failed write the temporary folder is removed and an OSError becomes `WriteError`."""
    rel = part_folder(family, part)
    final = run_dir / rel
    tmp = run_dir / f"{rel}.tmp-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        records = _fill_part(tmp, rel, family, part, result)
        if final.exists():  # left by a writer killed after the rename but before its commit
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_failure(exc, final.parent) from exc
        raise
    return records


def _fill_part(tmp: Path, rel: str, family: str, part: str, result: Any) -> list[ArtefactRecord]:
    scores: HeadScores = result.scores
    if scores.metrics:
        _fsync_write(tmp / "scores.safetensors", save({k: _as_array(v) for k, v in scores.metrics.items()}))
    arrays = {k: v for k, v in result.artefacts.items() if artefact_kind(v) == "array"}
    if arrays:
        _fsync_write(tmp / "arrays.safetensors", save({k: _as_array(v) for k, v in arrays.items()}))
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
    return records


def read_part(run_dir: Path, family: str, part: str) -> Any:
    """Read back a finished part as a `PartResult` (exactly the values that were written); a missing
    or unreadable file raises `ArtefactError` naming it."""
    from workbench.families.base import PartResult

    folder = run_dir / part_folder(family, part)
    manifest = _read_json(folder / "part.json")
    try:
        scores = HeadScores(manifest["score_family"], manifest["n_layers"], manifest["n_heads"])
        stored = _read_arrays(folder / "scores.safetensors") if manifest["metrics"] else {}
        for metric in manifest["metrics"]:
            scores.add(metric, stored[metric], manifest["descriptions"].get(metric, ""))
        arrays = _read_arrays(folder / "arrays.safetensors") if manifest["arrays"] else {}
        artefacts: dict[str, Any] = {}
        for name in manifest["order"]:
            artefacts[name] = arrays[name] if name in arrays else _read_json(folder / manifest["json"][name])
        summary = manifest["summary"]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtefactError(folder / "part.json", f"does not match the part's files ({type(exc).__name__}: {exc})") from exc
    return PartResult(scores, artefacts, summary)
